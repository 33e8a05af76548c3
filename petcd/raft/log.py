"""RaftLog: the log as one node's core sees it.

It joins what is durable (``MemoryStorage``) and what is not yet
(the *unstable* part: entries and possibly a snapshot handed out in a Ready
but not yet acknowledged by ``advance``), and tracks the commit and applied
indexes. Entries at ``offset`` and beyond are the unstable ones.
"""

from __future__ import annotations

import logging

from petcd.raft.storage import MemoryStorage, StorageError, limit_size
from petcd.raft.types import Entry, Snapshot

log = logging.getLogger("petcd.raft")


class RaftLog:
    def __init__(self, storage: MemoryStorage, max_committed_size: int = 0) -> None:
        self.storage = storage
        self.max_committed_size = max_committed_size
        last = storage.last_index()
        self.offset = last + 1
        self.unstable: list[Entry] = []
        self.unstable_snapshot: Snapshot | None = None
        first = storage.first_index()
        self.committed = first - 1
        self.applied = first - 1

    # ---- indexes and terms ------------------------------------------------

    def first_index(self) -> int:
        if self.unstable_snapshot is not None:
            return self.unstable_snapshot.metadata.index + 1
        return self.storage.first_index()

    def last_index(self) -> int:
        if self.unstable:
            return self.offset + len(self.unstable) - 1
        if self.unstable_snapshot is not None:
            return self.unstable_snapshot.metadata.index
        return self.storage.last_index()

    def term(self, i: int) -> int | None:
        """The term of entry i, or None when it is compacted or not there."""
        if i >= self.offset and self.unstable:
            k = i - self.offset
            return self.unstable[k].term if k < len(self.unstable) else None
        snap = self.unstable_snapshot
        if snap is not None:
            if i == snap.metadata.index:
                return snap.metadata.term
            if i < snap.metadata.index:
                return None
            if i >= self.offset:
                return None
        storage = self.storage
        if i > storage.last_index():
            # past the log (a follower checking the new entries it was sent):
            # answered without the storage's exception, which cost more
            return None
        try:
            return storage.term(i)
        except StorageError:
            return None

    def last_term(self) -> int:
        t = self.term(self.last_index())
        return t if t is not None else 0

    def match_term(self, i: int, term: int) -> bool:
        return self.term(i) == term

    def is_up_to_date(self, last_index: int, term: int) -> bool:
        """Whether a candidate's log (last_index, term) is at least as
        up to date as ours (Raft §5.4.1)."""
        lt = self.last_term()
        return term > lt or (term == lt and last_index >= self.last_index())

    def last_stable_index(self) -> int:
        if self.unstable:
            return self.offset - 1
        if self.unstable_snapshot is not None:
            return self.unstable_snapshot.metadata.index - 1
        return self.storage.last_index()

    # ---- appending ----------------------------------------------------------

    def append(self, entries: list[Entry]) -> int:
        if not entries:
            return self.last_index()
        after = entries[0].index
        if after - 1 < self.committed:
            log.error("refusing to overwrite committed entry %d (commit %d)", after, self.committed)
            return self.last_index()
        if after == self.offset + len(self.unstable):
            self.unstable.extend(entries)
        elif after <= self.offset:
            # the new entries replace part of the stable log too; storage
            # truncates when they are persisted
            self.offset = after
            self.unstable = list(entries)
        else:
            del self.unstable[after - self.offset :]
            self.unstable.extend(entries)
        return self.last_index()

    def maybe_append(self, index: int, log_term: int, committed: int, entries: list[Entry]) -> int | None:
        """Append what a leader sent after (index, log_term) if our log has
        that entry; the last new index on success, None on mismatch."""
        if not self.match_term(index, log_term):
            return None
        last_new = index + len(entries)
        ci = self.find_conflict(entries)
        if ci:
            if ci <= self.committed:
                log.error("entry %d conflicts with a committed entry (commit %d)", ci, self.committed)
                return None
            self.append(entries[ci - (index + 1) :])
        self.commit_to(min(committed, last_new))
        return last_new

    def find_conflict(self, entries: list[Entry]) -> int:
        """The index of the first entry that is new or differs from ours, 0 if none."""
        for e in entries:
            if self.term(e.index) != e.term:
                return e.index
        return 0

    def find_conflict_by_term(self, index: int, term: int, floor: int = 0) -> tuple[int, int]:
        """The largest index <= index whose term is <= term, with that term:
        where a leader should probe next after a rejection (fast backtracking).

        The walk stops at floor, an index known to match on both sides (the
        follower's commit, the leader's match for it): without it a message
        with a tiny term would walk the whole log."""
        while index > floor:
            t = self.term(index)
            if t is None:
                return index, 0
            if t <= term:
                return index, t
            index -= 1
        if floor <= 0:
            return 0, 0
        t = self.term(floor)
        return floor, t if t is not None else 0

    # ---- commit, apply, stable ----------------------------------------------

    def commit_to(self, index: int) -> None:
        if index > self.committed:
            if index > self.last_index():
                log.error("commit %d is out of range [last index %d]", index, self.last_index())
                return
            self.committed = index

    def maybe_commit(self, index: int, term: int) -> bool:
        if index > self.committed and self.term(index) == term:
            self.committed = index
            return True
        return False

    def applied_to(self, index: int) -> None:
        if index > self.applied:
            self.applied = min(index, self.committed)

    def stable_to(self, index: int, term: int) -> None:
        if not self.unstable or index < self.offset:
            return
        k = index - self.offset
        if k < len(self.unstable) and self.unstable[k].term == term:
            del self.unstable[: k + 1]
            self.offset = index + 1

    def stable_snap_to(self, index: int) -> None:
        if self.unstable_snapshot is not None and self.unstable_snapshot.metadata.index == index:
            self.unstable_snapshot = None

    def restore(self, snap: Snapshot) -> None:
        self.committed = snap.metadata.index
        self.offset = snap.metadata.index + 1
        self.unstable = []
        self.unstable_snapshot = snap

    # ---- reading entries ----------------------------------------------------

    def unstable_entries(self) -> list[Entry]:
        return list(self.unstable)

    def has_next_committed(self) -> bool:
        return self.committed > max(self.applied, self.first_index() - 1)

    def next_committed(self) -> list[Entry]:
        lo = max(self.applied + 1, self.first_index())
        if self.committed + 1 <= lo:
            return []
        return self.slice(lo, self.committed + 1, self.max_committed_size) or []

    def entries_from(self, lo: int, max_size: int) -> list[Entry] | None:
        """Entries from lo to the end, at most max_size bytes; None when lo
        is compacted away (the follower needs a snapshot)."""
        if lo > self.last_index():
            return []
        return self.slice(lo, self.last_index() + 1, max_size)

    def slice(self, lo: int, hi: int, max_size: int) -> list[Entry] | None:
        if lo < self.first_index():
            return None
        out: list[Entry] = []
        if lo < self.offset:
            try:
                out = self.storage.entries(lo, min(hi, self.offset), max_size)
            except StorageError:
                return None
            if len(out) < min(hi, self.offset) - lo:
                return out  # the size limit stopped us inside storage
        if hi > self.offset:
            start = max(lo, self.offset) - self.offset
            tail = self.unstable[start : hi - self.offset]
            out = out + tail if out else list(tail)
        return limit_size(out, max_size)

    def snapshot(self) -> Snapshot:
        if self.unstable_snapshot is not None:
            return self.unstable_snapshot
        return self.storage.snapshot()
