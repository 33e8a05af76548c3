"""The in-memory key index: for every key, the revisions that wrote it.

What it is for: answering "which revision holds key K as of revision R"
(and "which keys exist in [A, B) as of R") without touching the backend, so
that a read costs one backend lookup per key it returns; and deciding what
a compaction keeps.

A key's history is a list of *generations*: a generation starts with the put
that creates the key and ends with the tombstone that deletes it; the last
generation is the open one (empty while the key is deleted). Each
generation remembers its creation revision and its version count (puts so
far, including ones compaction has since removed), so ``version`` and
``create_revision`` survive compaction, as in etcd.

Memory: a key's whole history is ONE flat Python list (:class:`KeyIndex`)
of small ints: per generation ``[ver, created, n, rev_1 .. rev_n]`` with
revisions in the one-int form of :mod:`petcd.mvcc.revision`. A key written
once costs one 4-slot list whose ``created`` and ``rev_1`` are the same int
object. A deleted key's list ends with the empty generation ``[0, 0, 0]``;
a live key's list ends with a revision (never 0), which makes "is it live"
a single comparison.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from itertools import islice

from sortedcontainers import SortedList

from petcd.mvcc.errors import MvccError
from petcd.mvcc.revision import SUB_BITS


class ErrRevisionNotFound(MvccError):
    """An index operation met a key state it cannot apply to (a bug above)."""

    message = "mvcc: revision not found"


# (revision, created revision, version) of a key as of some revision; the
# revisions in the one-int form.
Found = tuple[int, int, int]


class KeyIndex(list[int]):
    """One key's generations, flat (see the module docstring)."""

    __slots__ = ()

    # ---- shape -----------------------------------------------------------

    def alive(self) -> bool:
        """True when the key exists at the latest revision."""
        return bool(self) and self[-1] != 0

    def is_empty(self) -> bool:
        """True when nothing is left (a fully compacted, deleted key)."""
        return not self or (len(self) == 3 and self[2] == 0)

    def _offsets(self) -> list[int]:
        """Where each generation starts."""
        offs = []
        i, n = 0, len(self)
        while i < n:
            offs.append(i)
            i += 3 + self[i + 2]
        return offs

    def _last_offset(self) -> int:
        i, n = 0, len(self)
        while True:
            j = i + 3 + self[i + 2]
            if j >= n:
                return i
            i = j

    def modified(self) -> int:
        """The latest revision of the key (its tombstone if deleted)."""
        return self[-1] if self[-1] != 0 else self[-4]

    def generations(self) -> list[tuple[int, int, list[int]]]:
        """(ver, created, revs) of each generation, oldest first (for tests and tools)."""
        return [(self[o], self[o + 1], list(self[o + 3 : o + 3 + self[o + 2]])) for o in self._offsets()]

    # ---- writes ----------------------------------------------------------

    def put(self, rev: int) -> None:
        """Record a put at rev (which must be newer than every recorded one)."""
        if not self:
            self.extend((1, rev, 1, rev))
            return
        if rev <= self.modified():
            raise ErrRevisionNotFound(
                f"mvcc: put at revision {rev >> SUB_BITS} not after the key's last revision"
            )
        g = self._last_offset()
        if self[g + 2] == 0:
            self[g + 1] = rev
        self[g] += 1
        self[g + 2] += 1
        self.append(rev)

    def tombstone(self, rev: int) -> None:
        """Record a delete at rev: it ends the open generation."""
        if not self.alive():
            raise ErrRevisionNotFound("mvcc: tombstone on a key that does not exist")
        self.put(rev)
        self.extend((0, 0, 0))

    def restore(self, created: int, rev: int, ver: int) -> None:
        """Start the history of a key found in the backend at rev, whose
        generation was created at `created` and is at version `ver` there
        (its older revisions may have been compacted away)."""
        self.extend((ver, created, 1, rev))

    # ---- reads -----------------------------------------------------------

    def get(self, at_main: int) -> Found | None:
        """(revision, created, version) of the key as of main revision
        at_main, or None when it did not exist then."""
        if not self:
            return None
        last = self[-1]
        if last != 0 and last >> SUB_BITS <= at_main:
            g = self._last_offset()  # fast path: the latest revision
            return last, self[g + 1], self[g]
        offs = self._offsets()
        lastg = len(offs) - 1
        for cg in range(lastg, -1, -1):
            o = offs[cg]
            n = self[o + 2]
            if n == 0:
                continue
            if cg != lastg and self[o + 2 + n] >> SUB_BITS <= at_main:
                return None  # deleted at or before at_main
            if self[o + 3] >> SUB_BITS <= at_main:
                for k in range(n - 1, -1, -1):
                    r = self[o + 3 + k]
                    if r >> SUB_BITS <= at_main:
                        return r, self[o + 1], self[o] - (n - k - 1)
        return None

    def _choose(self, at_main: int) -> tuple[list[int], int, int]:
        """etcd's compaction choice at at_main: the offsets, the index of the
        first generation that is still needed (one whose tombstone is newer
        than at_main, or the open one), and the position in it of the
        latest revision <= at_main (-1 when none)."""
        offs = self._offsets()
        gi = 0
        while gi < len(offs) - 1:
            o = offs[gi]
            if self[o + 2 + self[o + 2]] >> SUB_BITS > at_main:
                break
            gi += 1
        o = offs[gi]
        pos = -1
        for k in range(self[o + 2] - 1, -1, -1):
            if self[o + 3 + k] >> SUB_BITS <= at_main:
                pos = k
                break
        return offs, gi, pos

    def keep(self, at_main: int) -> int | None:
        """The revision <= at_main that a compaction at at_main would keep
        (None when it keeps none)."""
        if self.is_empty():
            return None
        offs, gi, pos = self._choose(at_main)
        return self[offs[gi] + 3 + pos] if pos >= 0 else None

    # ---- compaction ------------------------------------------------------

    def compact(self, at_main: int) -> list[tuple[int, bool]]:
        """Forget every revision <= at_main except the one a read at at_main
        needs; a generation deleted at or before at_main goes entirely.
        Returns the dropped revisions, each with whether it is a tombstone
        (the last revision of a closed generation)."""
        if self.is_empty():
            return []
        offs, gi, pos = self._choose(at_main)
        dropped: list[tuple[int, bool]] = []
        for o in offs[:gi]:  # whole generations, each closed by its tombstone
            n = self[o + 2]
            dropped.extend((self[o + 3 + k], k == n - 1) for k in range(n))
        o = offs[gi]
        n = self[o + 2]
        # The chosen generation is the open one or one deleted after at_main:
        # its revisions before the kept one go; the kept one and newer stay.
        keep_from = max(pos, 0)
        dropped.extend((self[o + 3 + k], False) for k in range(keep_from))
        new = [self[o], self[o + 1], n - keep_from, *self[o + 3 + keep_from :]]
        if dropped:
            self[:] = new
        return dropped


class Index:
    """Every key's :class:`KeyIndex`, plus the keys in order.

    ``_keys`` holds every key with any history (a deleted key stays until
    compaction drops its last generation); ``_live`` only the keys that
    exist at the latest revision, so that reads at the latest revision walk
    and count live keys without looking at deleted ones.
    """

    def __init__(self) -> None:
        self._kis: dict[bytes, KeyIndex] = {}
        self._keys = SortedList()
        self._live = SortedList()

    def __len__(self) -> int:
        return len(self._kis)

    def live_count(self) -> int:
        return len(self._live)

    def key_index(self, key: bytes) -> KeyIndex | None:
        return self._kis.get(key)

    # ---- writes ----------------------------------------------------------

    def put(self, key: bytes, rev: int) -> None:
        ki = self._kis.get(key)
        if ki is None:
            ki = self._kis[key] = KeyIndex()
            self._keys.add(key)
            self._live.add(key)
        elif ki[-1] == 0:
            self._live.add(key)
        ki.put(rev)

    def tombstone(self, key: bytes, rev: int) -> None:
        ki = self._kis.get(key)
        if ki is None:
            raise ErrRevisionNotFound("mvcc: tombstone on a key that does not exist")
        ki.tombstone(rev)
        self._live.remove(key)

    def load(self, kis: dict[bytes, KeyIndex]) -> None:
        """Replace the whole index by kis (a restore from the backend)."""
        self._kis = kis
        self._keys = SortedList(kis)
        self._live = SortedList(k for k, ki in kis.items() if ki.alive())

    # ---- reads -----------------------------------------------------------

    def get(self, key: bytes, at_main: int) -> Found | None:
        ki = self._kis.get(key)
        return ki.get(at_main) if ki is not None else None

    def latest(self, key: bytes) -> Found | None:
        """(revision, created, version) of a live key, None if it does not exist now."""
        ki = self._kis.get(key)
        if ki is None or ki[-1] == 0:
            return None
        g = ki._last_offset()
        return ki[-1], ki[g + 1], ki[g]

    def _irange(self, keys: SortedList, start: bytes, end: bytes | None) -> Iterator[bytes]:
        """Keys in [start, end) (end None: every key from start on)."""
        if end is not None and end <= start:
            return iter(())
        it: Iterator[bytes] = keys.irange(start, end, inclusive=(True, False))
        return it

    def range_latest(
        self, start: bytes, end: bytes | None, limit: int = 0
    ) -> tuple[list[tuple[bytes, Found]], int]:
        """Live keys in [start, end) with their state, at most limit of them
        (0: all), and how many there are in all."""
        keys = self._live
        if end is not None and end <= start:
            return [], 0
        lo = keys.bisect_left(start)
        count = (keys.bisect_left(end) if end is not None else len(keys)) - lo
        n = count if limit <= 0 else min(limit, count)
        out: list[tuple[bytes, Found]] = []
        kis = self._kis
        for key in keys.islice(lo, lo + n):
            ki = kis[key]
            g = ki._last_offset()
            out.append((key, (ki[-1], ki[g + 1], ki[g])))
        return out, count

    def range_at(
        self, start: bytes, end: bytes | None, at_main: int, limit: int = 0
    ) -> tuple[list[tuple[bytes, Found]], int]:
        """Keys in [start, end) that existed as of at_main with their state
        then, at most limit of them (0: all), and how many there are in all."""
        out: list[tuple[bytes, Found]] = []
        count = 0
        kis = self._kis
        for key in self._irange(self._keys, start, end):
            found = kis[key].get(at_main)
            if found is None:
                continue
            count += 1
            if limit <= 0 or len(out) < limit:
                out.append((key, found))
        return out, count

    def keep(self, at_main: int) -> set[int]:
        """The revisions <= at_main a compaction at at_main would keep."""
        out: set[int] = set()
        for ki in self._kis.values():
            r = ki.keep(at_main)
            if r is not None:
                out.add(r)
        return out

    # ---- compaction ------------------------------------------------------

    def compact_keys(
        self, at_main: int, after: bytes | None, n: int
    ) -> tuple[list[tuple[int, bool]], bytes | None, bool]:
        """Compact up to n keys following `after` (None: from the first key).

        Returns the dropped revisions (with their tombstone flag), the last
        key visited (the next call's `after`), and whether every key has
        been visited. Keys written while a compaction goes on step by step
        only hold revisions newer than at_main, so visiting keys in order
        with a cursor misses nothing that needs compacting.
        """
        if after is None:
            batch = list(islice(self._keys, n))
        else:
            batch = list(islice(self._keys.irange(after, None, inclusive=(False, False)), n))
        dropped: list[tuple[int, bool]] = []
        kis = self._kis
        for key in batch:
            ki = kis[key]
            dropped.extend(ki.compact(at_main))
            if ki.is_empty():
                del kis[key]
                self._keys.remove(key)
        last = batch[-1] if batch else after
        return dropped, last, len(batch) < n

    def keys(self) -> Iterable[bytes]:
        return iter(self._keys)
