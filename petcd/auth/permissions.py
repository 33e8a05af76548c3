"""Per-user merged permission intervals, and etcd's checks against them.

What it is for: every request under auth asks "may this user read (write)
this key / this range?". A user's permissions are the union of its roles'
key permissions; this module turns them into interval sets (one for read,
one for write) once per user, and answers the checks from those, as etcd's
``range_perm_cache.go`` does with its interval trees.

Semantics (etcd 3.4, byte for byte):

- A permission with an empty ``range_end`` is the single key ``key``, that
  is the interval [key, key + b"\\x00"); ``range_end == b"\\x00"`` means every
  key from ``key`` on ("from-key"); any other ``range_end`` is [key, range_end).
- etcd compares interval ends as "affine" byte strings: an empty string
  is greater than every other string (it stands for +infinity). So a
  permission on the empty key, or a range ending at b"", follows that rule
  here too.
- A key check (``range_end`` empty) passes when some interval holds the
  key; a range check [key, range_end) passes when the intervals that
  overlap it (etcd's overlap test) are contiguous and span it. For the
  usual, well-formed intervals that is: one merged interval holds
  [key, range_end). Ranges whose end is not after their start (etcd lets
  a client send them) pass when the start key is held, as in etcd.

Guarantees: :class:`IntervalSet` is immutable once built; checks on it are
O(log n) when every interval is well-formed (begin < end), and fall back
to etcd's literal walk (O(n)) when a role holds a reversed range.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from dataclasses import dataclass

from petcd.proto import auth_pb2

READ = auth_pb2.Permission.READ
WRITE = auth_pb2.Permission.WRITE
READWRITE = auth_pb2.Permission.READWRITE

# An interval end of None is +infinity (etcd's empty affine byte string).
End = bytes | None


def _affine(b: bytes) -> End:
    """etcd's affine bytes: empty means +infinity."""
    return b if b else None


def _lt(a: End, b: End) -> bool:
    """a < b with None as +infinity."""
    if a is None:
        return False
    if b is None:
        return True
    return a < b


def _le(a: End, b: End) -> bool:
    return not _lt(b, a)


@dataclass(frozen=True, slots=True)
class Interval:
    """[begin, end) in affine order (None is +infinity)."""

    begin: End
    end: End


def permission_interval(key: bytes, range_end: bytes) -> Interval:
    """The interval a stored permission (or a request) covers, as etcd builds it."""
    if not range_end:
        return Interval(_affine(key), key + b"\x00")
    if range_end == b"\x00":
        return Interval(_affine(key), None)
    return Interval(_affine(key), range_end)


class IntervalSet:
    """A union of intervals, with etcd's point and range checks."""

    __slots__ = ("_raw", "_begins", "_ends", "_proper")

    def __init__(self, intervals: Iterable[Interval] = ()) -> None:
        # etcd's tree visits overlapping intervals in begin order, equal
        # begins in insertion order: a stable sort keeps that.
        raw = sorted(intervals, key=lambda iv: (iv.begin is None, iv.begin or b""))
        self._raw: tuple[Interval, ...] = tuple(raw)
        self._proper = all(_lt(iv.begin, iv.end) for iv in raw)
        begins: list[bytes] = []
        ends: list[End] = []
        if self._proper:
            # Merge overlapping and touching intervals ([a,b) and [b,c) leave
            # no gap). A begin of +infinity can only belong to an improper
            # interval, so every begin here is bytes.
            for iv in raw:
                assert iv.begin is not None
                if ends and not _lt(ends[-1], iv.begin):
                    if _lt(ends[-1], iv.end):
                        ends[-1] = iv.end
                    continue
                begins.append(iv.begin)
                ends.append(iv.end)
        self._begins = begins
        self._ends = ends

    def __len__(self) -> int:
        return len(self._raw)

    def __repr__(self) -> str:
        return f"IntervalSet({list(self._raw)!r})"

    def _holding(self, key: bytes) -> int:
        """Index of the merged interval holding key, or -1."""
        i = bisect.bisect_right(self._begins, key) - 1
        if i >= 0 and _lt(key, self._ends[i]):
            return i
        return -1

    def contains_key(self, key: bytes) -> bool:
        """etcd's ``Intersects`` with the point [key, key+\\x00)."""
        if self._proper:
            if not key:
                return False  # key +infinity: never below an end
            return self._holding(key) >= 0
        return self._literal(permission_interval(key, b""))

    def contains_range(self, key: bytes, range_end: bytes) -> bool:
        """etcd's ``Contains`` for a request's [key, range_end) (range_end
        non-empty; b"\\x00" is from-key)."""
        q = permission_interval(key, range_end)
        if not self._proper or q.begin is None:
            return self._literal(q)
        i = self._holding(q.begin)
        if i < 0:
            return False
        if not _lt(q.begin, q.end):
            return True
        return _le(q.end, self._ends[i])

    def _literal(self, q: Interval) -> bool:
        """etcd 3.4's interval-tree walk, literally: the intervals that
        overlap q (etcd's test), in begin order, must leave no gap, start at
        or before q and end at or after it."""
        min_begin: End = b""
        max_end: End = b""
        seen = False
        for p in self._raw:
            left = _lt(q.begin, p.begin) and _le(q.end, p.begin)
            right = _le(p.end, q.begin)
            if left or right:
                continue
            if not seen:
                seen, min_begin, max_end = True, p.begin, p.end
                continue
            if _lt(max_end, p.begin):
                return False
            if _lt(max_end, p.end):
                max_end = p.end
        return seen and _le(q.end, max_end) and _le(min_begin, q.begin)


@dataclass(frozen=True, slots=True)
class UserPermissions:
    """One user's merged read and write permissions."""

    read: IntervalSet
    write: IntervalSet


def merge_permissions(roles: Iterable[auth_pb2.Role]) -> UserPermissions:
    """The union of the roles' key permissions, split into read and write
    (READWRITE goes to both)."""
    read: list[Interval] = []
    write: list[Interval] = []
    for role in roles:
        for perm in role.keyPermission:
            iv = permission_interval(perm.key, perm.range_end)
            if perm.permType in (READ, READWRITE):
                read.append(iv)
            if perm.permType in (WRITE, READWRITE):
                write.append(iv)
    return UserPermissions(IntervalSet(read), IntervalSet(write))


def permitted(perms: UserPermissions, key: bytes, range_end: bytes, write: bool) -> bool:
    """etcd's ``isRangeOpPermitted``: a key check when range_end is empty,
    else a range check."""
    ivs = perms.write if write else perms.read
    if not range_end:
        return ivs.contains_key(key)
    return ivs.contains_range(key, range_end)
