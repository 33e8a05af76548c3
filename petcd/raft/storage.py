"""MemoryStorage: the raft log as the core reads it, held in memory.

The application writes to it what it has made durable (entries, hard state,
snapshots) and the core reads from it; petcd's server rebuilds it from the
WAL and the snapshot files on restart. ``ents[0]`` is always a dummy entry
carrying the index and term of the latest snapshot (or 0/0), so the term of
the entry just before the first one is always known.
"""

from __future__ import annotations

from petcd.raft.types import ENTRY_OVERHEAD, ConfState, Entry, HardState, Snapshot, SnapshotMetadata


class StorageError(Exception):
    """Base of the errors storage reports to the core."""


class ErrCompacted(StorageError):
    """The requested index is older than the latest snapshot."""

    def __init__(self) -> None:
        super().__init__("requested index is unavailable due to compaction")


class ErrUnavailable(StorageError):
    """The requested index is beyond the last entry."""

    def __init__(self) -> None:
        super().__init__("requested entry at index is unavailable")


class ErrSnapOutOfDate(StorageError):
    """The snapshot given is older than the one already held."""

    def __init__(self) -> None:
        super().__init__("requested index is older than the existing snapshot")


def limit_size(entries: list[Entry], max_size: int) -> list[Entry]:
    """The longest prefix of entries within max_size bytes, never empty when
    entries is not (one oversized entry still has to travel)."""
    if not entries or max_size <= 0:
        return entries
    # the common case, everything fits, in one pass without method calls
    if sum(len(e.data) for e in entries) + ENTRY_OVERHEAD * len(entries) <= max_size:
        return entries
    size = entries[0].size()
    n = 1
    while n < len(entries):
        size += entries[n].size()
        if size > max_size:
            break
        n += 1
    return entries[:n]


class MemoryStorage:
    def __init__(self) -> None:
        self.hard_state = HardState()
        self.snap = Snapshot()
        self.ents: list[Entry] = [Entry()]

    # ---- what the core reads ---------------------------------------------

    def initial_state(self) -> tuple[HardState, ConfState]:
        hs = self.hard_state
        return HardState(hs.term, hs.vote, hs.commit), self.snap.metadata.conf_state

    def first_index(self) -> int:
        return self.ents[0].index + 1

    def last_index(self) -> int:
        return self.ents[0].index + len(self.ents) - 1

    def term(self, i: int) -> int:
        offset = self.ents[0].index
        if i < offset:
            raise ErrCompacted()
        if i - offset >= len(self.ents):
            raise ErrUnavailable()
        return self.ents[i - offset].term

    def entries(self, lo: int, hi: int, max_size: int = 0) -> list[Entry]:
        """Entries [lo, hi), at most max_size bytes (0: no limit)."""
        offset = self.ents[0].index
        if lo <= offset:
            raise ErrCompacted()
        if hi > self.last_index() + 1:
            raise ErrUnavailable()
        return limit_size(self.ents[lo - offset : hi - offset], max_size)

    def snapshot(self) -> Snapshot:
        return self.snap

    # ---- what the application writes -------------------------------------

    def set_hard_state(self, hs: HardState) -> None:
        self.hard_state = HardState(hs.term, hs.vote, hs.commit)

    def apply_snapshot(self, snap: Snapshot) -> None:
        """Replace the whole log with a snapshot received from the leader."""
        if snap.metadata.index <= self.snap.metadata.index:
            raise ErrSnapOutOfDate()
        self.snap = snap
        self.ents = [Entry(term=snap.metadata.term, index=snap.metadata.index)]

    def create_snapshot(self, index: int, conf_state: ConfState | None, data: bytes) -> Snapshot:
        """Record a snapshot of the application's state as of ``index``."""
        if index <= self.snap.metadata.index:
            raise ErrSnapOutOfDate()
        if index > self.last_index():
            raise ErrUnavailable()
        offset = self.ents[0].index
        cs = conf_state if conf_state is not None else self.snap.metadata.conf_state
        self.snap = Snapshot(data, SnapshotMetadata(cs, index, self.ents[index - offset].term))
        return self.snap

    def compact(self, index: int) -> None:
        """Drop the entries before ``index``; it becomes the new dummy entry."""
        offset = self.ents[0].index
        if index <= offset:
            raise ErrCompacted()
        if index > self.last_index():
            raise ErrUnavailable()
        kept = self.ents[index - offset]
        self.ents = [Entry(term=kept.term, index=kept.index), *self.ents[index - offset + 1 :]]

    def append(self, entries: list[Entry]) -> None:
        """Append entries, replacing any conflicting suffix; entries already
        compacted away are skipped."""
        if not entries:
            return
        first = self.first_index()
        last = entries[-1].index
        if last < first:
            return
        if first > entries[0].index:
            entries = entries[first - entries[0].index :]
        offset = entries[0].index - self.ents[0].index
        if offset > len(self.ents):
            raise ErrUnavailable()
        del self.ents[offset:]
        self.ents.extend(entries)
