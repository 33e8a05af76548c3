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
  overlap it are contiguous and span it. For well-formed intervals
  (begin < end) that is: one merged interval holds [key, range_end), found
  by bisection.
- A range that ends before it starts (etcd lets a client send one), or a
  role's permission that does, bends etcd's overlap test, and etcd's answer
  then depends on the shape of its red-black interval tree (its walk
  prunes subtrees by a test such intervals break). Those checks are
  answered by a node-for-node rebuild of that tree (:class:`_EtcdTree`),
  from the same insertions in the same order; recorded against etcd 3.4.

Guarantees: an :class:`IntervalSet` does not change once built; checks
are O(log n) for well-formed requests and permissions.
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

    __slots__ = ("_inserted", "_raw", "_begins", "_ends", "_proper", "_tree")

    def __init__(self, intervals: Iterable[Interval] = ()) -> None:
        # Insertion order (role by role, permission by permission) shapes
        # etcd's tree; the merged form only needs begin order.
        self._inserted: tuple[Interval, ...] = tuple(intervals)
        raw = sorted(self._inserted, key=lambda iv: (iv.begin is None, iv.begin or b""))
        self._raw: tuple[Interval, ...] = tuple(raw)
        self._tree: _EtcdTree | None = None
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
        return self._literal(permission_interval(key, b""), point=True)

    def contains_range(self, key: bytes, range_end: bytes) -> bool:
        """etcd's ``Contains`` for a request's [key, range_end) (range_end
        non-empty; b"\\x00" is from-key)."""
        q = permission_interval(key, range_end)
        if not self._proper or q.begin is None or not _lt(q.begin, q.end):
            return self._literal(q)
        i = self._holding(q.begin)
        return i >= 0 and _le(q.end, self._ends[i])

    def _literal(self, q: Interval, point: bool = False) -> bool:
        """etcd 3.4's answer, from its own interval tree: the key check is
        ``Intersects``, the range check ``Contains``."""
        if self._tree is None:
            self._tree = _EtcdTree(self._inserted)
        return self._tree.intersects(q) if point else self._tree.contains(q)


def _cmp(a: End, b: End) -> int:
    """etcd's BytesAffineComparable.Compare (None: +infinity)."""
    if a is None:
        return 0 if b is None else 1
    if b is None:
        return -1
    return (a > b) - (a < b)


def _ivl_cmp(a: Interval, b: Interval) -> int:
    """etcd's Interval.Compare: -1 when a is left of b, 1 when right, 0 when
    they overlap (by its definition, which reversed intervals bend)."""
    if _cmp(a.begin, b.begin) < 0 and _cmp(a.end, b.begin) <= 0:
        return -1
    if _cmp(a.begin, b.end) >= 0:
        return 1
    return 0


class _Node:
    __slots__ = ("iv", "max", "left", "right", "parent", "red")

    def __init__(self, iv: Interval, parent: _Node | None) -> None:
        self.iv = iv
        self.max: End = iv.end
        self.left: _Node | None = None
        self.right: _Node | None = None
        self.parent = parent
        self.red = True


def _max_of(n: _Node) -> End:
    m = n.iv.end
    for c in (n.left, n.right):
        if c is not None and _cmp(c.max, m) > 0:
            m = c.max
    return m


class _EtcdTree:
    """etcd 3.4's red-black interval tree (pkg/adt), rebuilt node for node
    from the same insertions in the same order: for ranges that end before
    they start, or permissions that do, its pruned walk decides, and its
    shape is part of the answer."""

    def __init__(self, intervals: Iterable[Interval]) -> None:
        self.root: _Node | None = None
        for iv in intervals:
            self._insert(iv)

    def _insert(self, iv: Interval) -> None:
        y: _Node | None = None
        x = self.root
        while x is not None:
            y = x
            x = x.left if _cmp(iv.begin, x.iv.begin) < 0 else x.right
        z = _Node(iv, y)
        if y is None:
            self.root = z
        else:
            if _cmp(iv.begin, y.iv.begin) < 0:
                y.left = z
            else:
                y.right = z
            self._update_up(y)
        self._fixup(z)

    def _update_up(self, x: _Node | None) -> None:
        while x is not None:
            x.max = _max_of(x)
            x = x.parent

    def _replace_parent(self, x: _Node, y: _Node) -> None:
        y.parent = x.parent
        if x.parent is None:
            self.root = y
        elif x is x.parent.left:
            x.parent.left = y
        else:
            x.parent.right = y
        x.parent = y

    def _rotate_left(self, x: _Node) -> None:
        y = x.right
        assert y is not None
        x.right = y.left
        if y.left is not None:
            y.left.parent = x
        self._replace_parent(x, y)
        y.left = x
        x.max = _max_of(x)
        self._update_up(y)

    def _rotate_right(self, x: _Node) -> None:
        y = x.left
        assert y is not None
        x.left = y.right
        if y.right is not None:
            y.right.parent = x
        self._replace_parent(x, y)
        y.right = x
        x.max = _max_of(x)
        self._update_up(y)

    def _fixup(self, z: _Node) -> None:
        while z.parent is not None and z.parent.red:
            p: _Node = z.parent
            g = p.parent
            assert g is not None  # a red node is never the root
            if p is g.left:
                u = g.right
                if u is not None and u.red:
                    p.red, u.red, g.red = False, False, True
                    z = g
                    continue
                if z is p.right:
                    z = p
                    self._rotate_left(z)
                    zp = z.parent
                    assert zp is not None
                    p = zp
                g = p.parent
                assert g is not None
                p.red, g.red = False, True
                self._rotate_right(g)
            else:
                u = g.left
                if u is not None and u.red:
                    p.red, u.red, g.red = False, False, True
                    z = g
                    continue
                if z is p.left:
                    z = p
                    self._rotate_right(z)
                    zp = z.parent
                    assert zp is not None
                    p = zp
                g = p.parent
                assert g is not None
                p.red, g.red = False, True
                self._rotate_left(g)
        assert self.root is not None
        self.root.red = False

    def intersects(self, q: Interval) -> bool:
        x = self.root
        while x is not None and _ivl_cmp(q, x.iv) != 0:
            if x.left is not None and _cmp(x.left.max, q.begin) > 0:
                x = x.left
            else:
                x = x.right
        return x is not None

    def _visit(self, x: _Node | None, q: Interval, out: list[Interval]) -> None:
        if x is None:
            return
        v = _ivl_cmp(q, x.iv)
        if v < 0:
            self._visit(x.left, q, out)
        elif v > 0:
            if _ivl_cmp(Interval(x.iv.begin, x.max), q) == 0:
                self._visit(x.left, q, out)
                self._visit(x.right, q, out)
        else:
            self._visit(x.left, q, out)
            out.append(x.iv)
            self._visit(x.right, q, out)

    def contains(self, q: Interval) -> bool:
        seen: list[Interval] = []
        self._visit(self.root, q, seen)
        if not seen:
            return False
        min_begin, max_end = seen[0].begin, seen[0].end
        for p in seen[1:]:
            if _cmp(max_end, p.begin) < 0:
                return False
            if _cmp(p.end, max_end) > 0:
                max_end = p.end
        return _cmp(max_end, q.end) >= 0 and _cmp(min_begin, q.begin) <= 0


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
