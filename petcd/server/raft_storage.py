"""Raft's durable state on disk: the WAL and the raft snapshot files, and the
in-memory raft log (MemoryStorage) rebuilt from them.

``persist`` is the durability point of every write: it runs in a worker
thread and returns once the batch is fsync'd. Everything else runs on the
server's loop.
"""

from __future__ import annotations

import logging
import struct
from dataclasses import dataclass

from petcd.raft import ConfState, Entry, HardState, MemoryStorage, Snapshot, SnapshotMetadata
from petcd.storage.fsutil import make_private_dirs
from petcd.storage.snap import Snapshotter
from petcd.storage.wal import WAL, WalSnapshot

log = logging.getLogger("petcd.server.storage")

# Entries kept in the raft log behind a snapshot, so a slow follower can catch
# up from the log instead of a whole snapshot (etcd's snapshotCatchUpEntries).
CATCH_UP_ENTRIES = 5000


@dataclass(slots=True)
class WalIdentity:
    """What the WAL's metadata record holds: who wrote it, for which cluster."""

    member_id: int
    cluster_id: int

    def to_bytes(self) -> bytes:
        return struct.pack(">QQ", self.member_id, self.cluster_id)

    @classmethod
    def from_bytes(cls, raw: bytes) -> WalIdentity:
        member_id, cluster_id = struct.unpack(">QQ", raw[:16])
        return cls(member_id, cluster_id)


@dataclass(slots=True)
class Recovered:
    """What a restart finds on disk."""

    identity: WalIdentity
    hard_state: HardState
    snapshot: Snapshot | None


class RaftStorage:
    def __init__(self, wal: WAL, snapshotter: Snapshotter, log_store: MemoryStorage) -> None:
        self.wal = wal
        self.snapshotter = snapshotter
        self.log = log_store

    @staticmethod
    def exists(wal_dir: str) -> bool:
        return WAL.exists(wal_dir)

    @classmethod
    def create(cls, wal_dir: str, snap_dir: str, identity: WalIdentity, *, unsafe_no_fsync: bool = False) -> RaftStorage:
        make_private_dirs(snap_dir)
        wal = WAL.create(wal_dir, identity.to_bytes(), unsafe_no_fsync=unsafe_no_fsync)
        return cls(wal, Snapshotter(snap_dir), MemoryStorage())

    @classmethod
    def open(cls, wal_dir: str, snap_dir: str, *, unsafe_no_fsync: bool = False) -> tuple[RaftStorage, Recovered]:
        make_private_dirs(snap_dir)
        snapshotter = Snapshotter(snap_dir)
        snap = snapshotter.load()
        walsnap = None
        if snap is not None:
            md = snap.metadata
            walsnap = WalSnapshot(index=md.index, term=md.term, conf_state=md.conf_state)
        wal = WAL.open(wal_dir, walsnap, unsafe_no_fsync=unsafe_no_fsync)
        contents = wal.read_all()
        mem = MemoryStorage()
        if snap is not None:
            mem.apply_snapshot(snap)
        mem.set_hard_state(contents.hard_state)
        mem.append(contents.entries)
        recovered = Recovered(WalIdentity.from_bytes(contents.metadata), contents.hard_state, snap)
        return cls(wal, snapshotter, mem), recovered

    def persist(
        self, hard_state: HardState | None, entries: list[Entry], snapshot: Snapshot | None, sync: bool = True
    ) -> None:
        """Make a Ready durable (in a worker thread when it fsyncs): the
        snapshot file first, so a WAL marker never points at a snapshot that
        is not on disk."""
        if snapshot is not None:
            self.snapshotter.save_snap(snapshot)
            md = snapshot.metadata
            self.wal.save_snapshot(WalSnapshot(index=md.index, term=md.term, conf_state=md.conf_state))
        self.wal.save(hard_state, entries, sync=sync)

    def append_to_log(self, hard_state: HardState | None, entries: list[Entry], snapshot: Snapshot | None) -> None:
        if snapshot is not None:
            self.log.apply_snapshot(snapshot)
        if hard_state is not None:
            self.log.set_hard_state(hard_state)
        if entries:
            self.log.append(entries)

    def catch_up_to_backend(self, index: int, term: int, conf_state: ConfState) -> Snapshot:
        """Start raft from a snapshot at (index, term), the backend's applied
        entry, when the WAL ends before it (its tail was lost under a file
        system that failed: an aborted journal, a repair by fsck).

        Without this, raft would hand out indexes the backend already holds,
        and the applier, which skips what the backend holds, would drop
        every new write unanswered. The backend is the state as of index, so
        a raft snapshot there (the same empty-data kind a member takes every
        snapshot-count entries) is true: made durable (snap file, WAL
        marker, hard state: one fsync) before raft starts."""
        snap = Snapshot(b"", SnapshotMetadata(conf_state, index, term))
        hs = self.log.hard_state
        hs = HardState(max(hs.term, term), hs.vote if hs.term >= term else 0, max(hs.commit, index))
        self.persist(hs, [], snap)
        self.append_to_log(hs, [], snap)
        return snap

    def snapshot_at(self, index: int, conf_state: ConfState, data: bytes) -> Snapshot:
        """Record a raft snapshot of the applied state at index, then compact
        the raft log and release WAL segments behind it (all in the caller's
        thread; the server splits this into the three steps below so the
        file work runs in a worker thread)."""
        snap = self.create_snapshot(index, conf_state, data)
        self.save_snapshot_files(snap)
        self.compact_log(index)
        return snap

    def create_snapshot(self, index: int, conf_state: ConfState, data: bytes) -> Snapshot:
        """The in-memory raft log's snapshot at index (on the loop; no I/O)."""
        return self.log.create_snapshot(index, conf_state, data)

    def save_snapshot_files(self, snap: Snapshot) -> None:
        """Make snap durable and release what it covers: the snapshot file
        (fsync'd), the WAL's marker (fsync'd), then the WAL segments behind
        it and old snapshot files. Blocking file work, for a worker thread:
        the WAL and the snapshotter lock their own state, so this may run
        while the node loop persists a Ready. The backend must hold (durably)
        everything up to the snapshot's index before this is called: the
        released segments are gone."""
        self.snapshotter.save_snap(snap)
        md = snap.metadata
        self.wal.save_snapshot(WalSnapshot(index=md.index, term=md.term, conf_state=md.conf_state))
        self.wal.release_lock_to(md.index)
        self.snapshotter.purge()

    def compact_log(self, index: int) -> None:
        """Drop in-memory entries behind index, keeping CATCH_UP_ENTRIES for slow followers."""
        compact_to = index - CATCH_UP_ENTRIES
        if compact_to > self.log.first_index():
            self.log.compact(compact_to)

    def close(self) -> None:
        self.wal.close()
