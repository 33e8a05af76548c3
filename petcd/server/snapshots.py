"""Raft snapshots on the server side: taking them, sending a follower the
whole backend, checking the backend a leader sends before raft sees it, and
installing it.

Every --snapshot-count applied entries the server takes a raft snapshot at
the applied index: the backend is committed on the loop (the snapshot must
not be ahead of the durable backend), then the snapshot file, the WAL
marker and the release of WAL segments are written in a worker thread, and
the in-memory raft log is compacted once they are durable. One snapshot is
saved at a time, and none while a defrag is in flight. A follower that
needs a snapshot gets the backend as of its consistent index; a MsgSnap raft
could take is first written beside our backend and checked, in a worker thread (one
whose backend cannot be opened here, or is behind the snapshot, is refused);
raft then takes it, the staged file replaces our backend file (a rename), and
a fresh state machine is built on it (the server swaps it in).
Runs on the event loop only.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from petcd import stats
from petcd.raft import ConfState, Message, Snapshot, SnapshotMetadata
from petcd.server.cluster import load_membership
from petcd.server.config import ServerConfig
from petcd.server.raft_node import RaftNode
from petcd.server.raft_storage import RaftStorage, WalIdentity
from petcd.server.state import (
    MemberState,
    discard_staged,
    install_backend,
    open_backend,
    read_backend_snapshot,
    stage_backend,
)
from petcd.server.tasks import TaskGroup
from petcd.server.transport import PeerTransport
from petcd.storage.errors import StorageError

log = logging.getLogger("petcd.server")


class RaftSnapshots:
    """The member's raft snapshots. ``index`` is the index of the last one,
    taken here or installed from the leader (the server sets it then).

    It reads the state, the applied index and raft's configuration through
    the callables it is given, and whether a defrag is in flight through
    ``defragmenting``; a failure to save a snapshot marks the node failed
    (fail-stop), as a failed backend commit does. ``discard_staged`` at
    start removes leaders' backends a crash left staged."""

    def __init__(
        self,
        cfg: ServerConfig,
        *,
        index: int,
        identity: WalIdentity,
        raft_storage: RaftStorage,
        node: RaftNode,
        transport: PeerTransport,
        state: Callable[[], MemberState],
        applied_index: Callable[[], int],
        conf_state: Callable[[], ConfState],
        defragmenting: Callable[[], bool],
        stopped: Callable[[], bool],
        background: TaskGroup,
    ) -> None:
        self.cfg = cfg
        self.index = index
        self._identity = identity
        self.raft_storage = raft_storage
        self.node = node
        self.transport = transport
        self._state = state
        self._applied_index = applied_index
        self._conf_state = conf_state
        self._defragmenting = defragmenting
        self._stopped = stopped
        self.background = background
        # one leader's backend staged at a time (each is as big as the database)
        self._staging = asyncio.Lock()
        # the worker thread writing a raft snapshot's files, while it runs
        self._snapshot_saving: asyncio.Future[None] | None = None

    def maybe_snapshot(self) -> None:
        """Take a raft snapshot unless one is being saved, or a defrag is in
        flight: a defrag swaps in a file whose durable state is older than
        the last commit until its replay is committed and the rename made
        durable, and a snapshot would release the WAL entries that cover
        the gap."""
        if self._snapshot_saving is not None or self._defragmenting():
            return
        self._snapshot()

    def _snapshot(self) -> None:
        """Save a raft snapshot at the applied index: the backend is committed
        here (the snapshot must not be ahead of the durable backend), the
        snapshot file, the WAL marker and the release of WAL segments run in
        a worker thread, then the in-memory log is compacted."""
        self._state().backend.commit()
        applied_index = self._applied_index()
        snap = self.raft_storage.create_snapshot(applied_index, self._conf_state(), b"")
        self.index = applied_index
        saving = asyncio.ensure_future(asyncio.to_thread(self.raft_storage.save_snapshot_files, snap))
        self._snapshot_saving = saving
        self.background.spawn(self._save_snapshot(snap, saving), f"raft-snapshot-{snap.metadata.index}")

    async def _save_snapshot(self, snap: Snapshot, saving: asyncio.Future[None]) -> None:
        try:
            # shielded: stop() waits for the thread rather than closing the WAL under it
            await asyncio.shield(saving)
        except StorageError as exc:
            log.critical("%s; stopping the member (fail-stop)", exc)
            if self.node.failed is None:
                self.node.failed = exc
            return
        finally:
            if saving.done():
                self._snapshot_saving = None
        self.raft_storage.compact_log(snap.metadata.index)
        log.info("saved raft snapshot at index %d", snap.metadata.index)

    async def wait_saved(self) -> None:
        """Wait for the thread saving a snapshot's files, if one runs (it
        writes to the WAL: the server lets it finish before closing)."""
        if self._snapshot_saving is not None:
            await asyncio.wait([self._snapshot_saving])
            if not self._snapshot_saving.cancelled() and self._snapshot_saving.exception() is not None:
                log.error("saving the raft snapshot failed: %s", self._snapshot_saving.exception())

    def open_state(self, snap: Snapshot, old: MemberState) -> MemberState:
        """Install the backend a leader's snapshot carries in place of ours
        (old, the state on it, is closed first) and build a fresh state
        machine on it, its lease keys still to re-attach."""
        old.close()
        install_backend(self.cfg, snap)
        backend = open_backend(self.cfg)
        try:
            membership = load_membership(backend, self._identity, self.cfg)
            # the lease keys are re-attached a chunk at a time, off this call
            state = MemberState.open(self.cfg, backend, membership, old.auth.tokens, lease_keys_now=False)
        except BaseException:
            backend.close()
            raise
        return state

    async def send_snapshot(self, m: Message) -> None:
        """A follower needs a snapshot: send our whole backend, described as
        of the index it was committed at (newer than the raft snapshot raft
        picked, so it also carries every membership change up to there, the
        receiver's own addition included)."""
        assert m.snapshot is not None
        state = self._state()
        state.backend.commit()
        index = state.consistent_index
        term = self.raft_storage.log.term(index)
        conf_state = self._conf_state()
        cs = ConfState(list(conf_state.voters), list(conf_state.learners))
        data = await asyncio.to_thread(read_backend_snapshot, state.backend)
        m.snapshot = Snapshot(data, SnapshotMetadata(cs, index, term))
        self.transport.send([m])

    def discard_staged(self) -> None:
        discard_staged(self.cfg.backend_path())

    async def receive(self, m: Message) -> bool:
        """Hand a MsgSnap from a peer to raft, unless raft could take it and
        the backend it carries could not be installed here (logged; False).
        One raft could take is first staged beside our backend and checked,
        in a worker thread (one at a time), so that neither the copy nor the
        install that follows (a rename) holds the loop."""
        async with self._staging:
            if m.snapshot is not None and self._snapshot_news(m):
                # etcd_server_snapshot_apply_in_progress_total: staging is
                # most of the install's work (the rename that follows is quick)
                stats.SERVER.snapshot_applying += 1
                try:
                    why = await asyncio.to_thread(stage_backend, m.snapshot, self.cfg.backend_path())
                finally:
                    stats.SERVER.snapshot_applying -= 1
                if why is not None:
                    log.warning("ignored a snapshot [index %d] from %x: %s", m.snapshot.metadata.index, m.from_, why)
                    return False
            if self._stopped():
                return False
            self.node.step(m)
            return True

    def _snapshot_news(self, m: Message) -> bool:
        """Whether raft could take this MsgSnap (not stale, past our commit): only then is its data checked."""
        assert m.snapshot is not None
        st = self.node.status()
        return m.term >= st.term and m.snapshot.metadata.index > st.commit
