"""EtcdServer: raft, storage and the state machine joined into one member.

A write: the api hands an InternalRaftRequest to ``raft_request``; it gets a
unique id, is proposed to raft, and the caller waits on the id until the
applier has applied the committed entry (after the WAL fsync). A
linearizable read: ``linearizable_read`` joins the next ReadIndex round, then
waits until the applied index reaches the round's index.

Everything runs on one asyncio loop; fsyncs and big copies go to threads:
the WAL's fsync (the node loop), a raft snapshot's file, WAL marker and
segment release (``_snapshot``), a defrag's copy (``defragment``), a backend
snapshot for a follower. Long scans go in steps: compactions, re-attaching
keys to leases after installing a leader's backend. The backend's batch
commit (with its fsync) stays on the loop (see petcd.storage.backend).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import time
from collections.abc import Callable
from typing import Any

from google.protobuf.message import DecodeError

from petcd import stats
from petcd.auth.front import AuthFront
from petcd.auth.store import AuthStore
from petcd.auth.tokens import AuthInfo
from petcd.lease.lessor import ErrLeaseNotFound, Lessor
from petcd.mvcc.history import StoreHistory
from petcd.mvcc.kvstore import Compaction, KVStore
from petcd.mvcc.watchable_store import WatchableStore
from petcd.proto import kv_pb2, raft_internal_pb2, rpc_pb2
from petcd.raft import (
    ConfChange,
    ConfChangeType,
    ConfState,
    Entry,
    EntryType,
    Message,
    MessageType,
    ProposalDropped,
    ReadState,
    Snapshot,
    SnapshotMetadata,
)
from petcd.server import ids, txn, txn_ops
from petcd.server.alarms import AlarmStore
from petcd.server.apply import (
    LOCAL_FAILURES,
    Applier,
    ErrUnappliable,
    conf_change_problem,
    decode_request,
    request_id,
)
from petcd.server.bootstrap import Bootstrapped, bootstrap
from petcd.server.cluster import ClusterManager, load_membership, members_doc
from petcd.server.compactor import AutoCompactor
from petcd.server.config import ServerConfig
from petcd.server.errors import (
    ErrNoLeader,
    ErrNoSpace,
    ErrNotSupportedForLearner,
    ErrRequestTooLarge,
    ErrStopped,
    ErrTimeout,
    ErrTimeoutDueToLeaderFail,
    ServerError,
)
from petcd.server.leader_client import LeaderClient
from petcd.server.membership import (
    Membership,
    apply_change,
)
from petcd.server.raft_node import NodeHooks, RaftNode
from petcd.server.raft_storage import WalIdentity
from petcd.server.read_index import ReadIndex
from petcd.server.state import (
    MemberState,
    install_backend,
    open_backend,
    read_backend_snapshot,
    snapshot_problem,
)
from petcd.server.tasks import TaskGroup
from petcd.server.transport import DEFAULT_MAX_MESSAGE_BYTES, PeerTransport
from petcd.server.transport.tls import peer_tls_from_config
from petcd.server.wait import AppliedWait, Wait
from petcd.storage.backend import Backend, DefragCopy
from petcd.storage.errors import StorageError
from petcd.storage.fsutil import fsync_dir
from petcd.version import ETCD_VERSION

__all__ = ["ETCD_VERSION", "EtcdServer"]

log = logging.getLogger("petcd.server")

# Keys of a compaction step: small enough that a step never holds the loop long.
COMPACTION_STEP_KEYS = 1000
# Keys per step of re-attaching keys to leases after installing a leader's backend.
LEASE_REBUILD_STEP_KEYS = 1000


class EtcdServer:
    """One member: raft, storage and the state machine joined, built whole
    from what bootstrap opened (``await EtcdServer.create(cfg)``), then
    ``start`` and ``stop``. ``done`` resolves when the member stops serving:
    with None after ``stop`` or its removal from the cluster, with the
    failure when it failed (a failed fsync, say); the embedding program
    awaits it."""

    @classmethod
    async def create(cls, cfg: ServerConfig) -> EtcdServer:
        """Bootstrap the member's data directory and build the server on it
        (closing what bootstrap opened if building fails)."""
        boot = await bootstrap(cfg)
        try:
            return cls(cfg, boot)
        except BaseException:
            boot.close()
            raise

    def __init__(self, cfg: ServerConfig, boot: Bootstrapped) -> None:
        """Build the member on boot; call from the event loop's thread."""
        self.cfg = cfg
        self.raft_storage = boot.raft_storage
        self.state = boot.state
        self.member_id = boot.member_id
        self.cluster_id = boot.cluster_id
        self.snapshot_index = boot.snapshot_index
        self.conf_state = boot.conf_state
        self.applied_index = max(boot.snapshot_index, self.state.consistent_index)
        self.request_timeout = cfg.request_timeout()
        self.done: asyncio.Future[BaseException | None] = asyncio.get_running_loop().create_future()
        self.removed = False  # this member was removed from the cluster
        self._stopped = False
        self._has_leader = asyncio.Event()
        self.ids = ids.RequestIds(self.member_id)
        self.wait = Wait()
        self.applied_wait = AppliedWait()
        self.applied_wait.applied = self.applied_index
        self.auth_front = AuthFront(lambda: self.state.auth, lambda: self.applied_index, self.applied_wait.wait)
        # compaction jobs apart from everything else, so that waiting for
        # compactions waits for nothing else
        self.compactions = TaskGroup("compaction", log)
        self.background = TaskGroup("background", log)
        self.leader_client = LeaderClient(cfg.trusted_ca_file, cfg.cert_file, cfg.key_file)
        self.watchable = WatchableStore(StoreHistory(self.state.kv))
        self.state.kv.on_events = self._on_events
        self.state.kv.needs_prev = self._needs_prev
        hooks = NodeHooks(
            apply_entries=self._apply_entries,
            apply_snapshot=self._apply_snapshot,
            read_states=self._on_read_states,
            leader_changed=self._on_leader_changed,
            send=self._send,
            failed=self._node_failed,
        )
        self.node = RaftNode(
            cfg.raft_config(self.member_id, self.raft_storage.log, peers=boot.peers, applied=boot.snapshot_index),
            self.raft_storage,
            hooks,
            cfg.tick_seconds(),
        )
        self.transport = PeerTransport(
            self.member_id,
            self.cluster_id,
            list(cfg.listen_peer_urls),
            on_message=self._on_peer_message,
            on_unreachable=self.node.report_unreachable,
            on_snapshot_status=self.node.report_snapshot,
            members_info=lambda: members_doc(self.membership),
            # a MsgApp holds up to 1 MiB of entries plus one, which may be a whole request
            max_message_bytes=max(DEFAULT_MAX_MESSAGE_BYTES, 2 * cfg.max_request_bytes + (2 << 20)),
            tls=peer_tls_from_config(cfg),
        )
        self.cluster = ClusterManager(
            cfg,
            membership=lambda: self.membership,
            check_running=self._check_running,
            propose_conf_change=self._propose_conf_change,
            raft_status=self.node.status,
            transfer_leader=self.node.transfer_leader,
            active_since=self.transport.active_since,
            leader_urls=self._leader_urls,
            leader_client=self.leader_client,
        )
        self.reads = ReadIndex(self.member_id, self.node, self.applied_wait, self._has_leader)
        # the worker thread writing a raft snapshot's files, while it runs
        self._snapshot_saving: asyncio.Future[None] | None = None
        self._defrag_lock = asyncio.Lock()  # one defrag at a time; held while one runs

    # ---- life cycle -------------------------------------------------------

    async def start(self) -> None:
        """Listen for peers and start the node loop and the background work.
        If the peer listener cannot start, everything bootstrap opened is
        closed and the error raised."""
        cfg = self.cfg
        try:
            await self.transport.start()
        except BaseException:
            self._stopped = True
            self.state.close()
            self.raft_storage.close()
            raise
        for mid, urls in self.membership.peers().items():
            self.transport.add_peer(mid, urls)
        if len(self.membership.voter_ids()) == 1:
            self.node.campaign()  # a cluster of one need not wait out an election timeout
        self.node.start()
        self.node.notify()
        self.watchable.start()
        self.background.spawn(self._backend_committer(), "backend-commit")
        self.background.spawn(self._lease_expirer(), "lease-expiry")
        self.background.spawn(self._publish(), "publish")
        compactor = AutoCompactor(
            cfg.auto_compaction_mode,
            cfg.compaction_retention(),
            revision=lambda: self.kv.rev,
            compacted=lambda: self.kv.compact_rev,
            is_leader=self.node.is_leader,
            compact=lambda rev: self.compact(rpc_pb2.CompactionRequest(revision=rev)),
        )
        self.background.spawn(compactor.run(), "auto-compaction")

    def _node_failed(self, exc: BaseException) -> None:
        self._set_done(exc)

    def _set_done(self, failure: BaseException | None) -> None:
        if not self.done.done():
            self.done.set_result(failure)

    # ---- the state machine (one MemberState, swapped whole) ---------------------

    @property
    def backend(self) -> Backend:
        return self.state.backend

    @property
    def kv(self) -> KVStore:
        return self.state.kv

    @property
    def lessor(self) -> Lessor:
        return self.state.lessor

    @property
    def alarms(self) -> AlarmStore:
        return self.state.alarms

    @property
    def membership(self) -> Membership:
        return self.state.membership

    @property
    def applier(self) -> Applier:
        return self.state.applier

    @property
    def auth(self) -> AuthStore:
        return self.state.auth

    @property
    def consistent_index(self) -> int:
        """The index of the last raft entry the state machine holds."""
        return self.state.consistent_index

    @consistent_index.setter
    def consistent_index(self, index: int) -> None:
        self.state.consistent_index = index

    def _install_state(self, state: MemberState) -> None:
        """Make state the member's state machine: the one place where the
        watchable store, the peers and the compactions learn of it."""
        self.compactions.cancel_all()  # each holds the old store, whose backend is closed
        state.kv.on_events = self._on_events
        state.kv.needs_prev = self._needs_prev
        self.state = state
        self.watchable.history = StoreHistory(state.kv)
        for mid, urls in state.membership.peers().items():
            self.transport.update_peer(mid, urls)
        self.watchable.resync_all()

    async def stop(self) -> None:
        """Finish the WAL write and apply in progress, commit the backend, close."""
        if self._stopped:
            return
        self._stopped = True
        self._set_done(None)
        await self.background.close()
        await self.compactions.close()
        if self._snapshot_saving is not None:  # its thread writes to the WAL: let it finish
            await asyncio.wait([self._snapshot_saving])
            if not self._snapshot_saving.cancelled() and self._snapshot_saving.exception() is not None:
                log.error("saving the raft snapshot failed: %s", self._snapshot_saving.exception())
        await self.node.stop()
        await self.transport.stop()
        await self.leader_client.close()
        await self.watchable.stop()
        self.wait.fail_all(ErrStopped())
        self.applied_wait.fail_all(ErrStopped())
        # After a failed commit the backend refuses to commit again (the
        # failure was logged when it happened); the WAL replays what it lost.
        if self.backend.failed is None:
            try:
                self.backend.commit()
            except StorageError as exc:
                log.critical("%s; the WAL replays the lost batch on the next start", exc,
                             extra={"fields": {"path": self.backend.path}})
        self.backend.close()
        self.raft_storage.close()

    async def _backend_committer(self) -> None:
        """Commit the backend's batch when it is due (checked every 100 ms).

        A failed commit (disk full, I/O error, read-only file system, a
        truncated db file) is fatal, as in etcd: it is logged at fatal level
        naming the db file and the OS error, and the member fails at once:
        the node loop is marked failed, so no request is taken and the
        embedding program stops the member (``petcd`` exits with status 1),
        and the backend refuses every later write, so the applier applies
        and acknowledges nothing after the failed commit. Nothing
        acknowledged is lost: the WAL holds every acknowledged write and the
        next start replays it above the backend's consistent index.
        """
        interval = 0.1
        while not self._stopped:
            await asyncio.sleep(interval)
            try:
                self.backend.commit_if_due()
            except StorageError as exc:
                log.critical("%s; stopping the member (fail-stop: no write is acknowledged after a failed commit)",
                             exc, extra={"fields": {"path": self.backend.path}})
                if self.node.failed is None:
                    self.node.failed = exc
                return

    # ---- raft hooks -------------------------------------------------------

    def _apply_entries(self, entries: list[Entry]) -> None:
        backend = self.backend
        for e in entries:
            if e.type != EntryType.EntryNormal:
                # membership lives in raft's memory too, so it is rebuilt on
                # every restart, even from entries the backend already has
                cc_id, problem = conf_change_problem(e.data)
                if problem is None:
                    try:
                        self._apply_conf_change(e)
                    except LOCAL_FAILURES:
                        raise
                    except Exception as exc:  # a defect, not the entry's: still never fatal
                        problem = repr(exc)
                if problem is not None:  # the same on every member, and on every replay
                    log.error("raft entry %d (term %d) is a configuration change petcd cannot apply, "
                              "applied as a no-op: %s", e.index, e.term, problem)
                    if cc_id:
                        self.wait.fail(cc_id, ErrUnappliable())
            if e.index <= self.consistent_index:
                continue  # already in the backend before a restart
            if e.type == EntryType.EntryNormal and e.data:
                self._apply_request(e)
            backend.set_consistent_index(e.index, e.term)
            self.consistent_index = e.index
        if entries:
            self.applied_index = max(self.applied_index, entries[-1].index)
            self.applied_wait.advance(self.applied_index)
            if self.applied_index - self.snapshot_index > self.cfg.snapshot_count:
                self._maybe_snapshot()

    def _on_events(self, events: list[kv_pb2.Event], rev: int) -> None:
        self.lessor.on_events(events)
        self.watchable.notify(events, rev)

    def _needs_prev(self, key: bytes) -> bool:
        """Whether a put's event must carry the key's previous value: the
        lessor learns from it which lease held the key, and watchers that
        asked for prev_kv get it; otherwise the put skips reading it."""
        return bool(self.lessor.leases) or self.watchable.wants_prev_kv(key)

    def _apply_request(self, e: Entry) -> None:
        """Apply one committed request and answer its waiter. An entry that
        does not decode is applied as an error result (nothing changes, the
        same on every member and on every WAL replay): the member never
        stops for what an entry holds."""
        try:
            req = decode_request(e.data)
        except DecodeError as exc:
            log.error("raft entry %d (term %d, %d bytes) is not a request petcd can decode, "
                      "applied as an error (nothing changed): %s", e.index, e.term, len(e.data), exc)
            req_id = request_id(e.data)
            if req_id:
                self.wait.fail(req_id, ErrUnappliable())
            return
        if not self.state.lease_keys.done and (
            req.HasField("lease_revoke")  # a revocation deletes every key of the lease
            or (req.HasField("put") and req.put.lease and self.state.auth.enabled)  # auth checks its keys
        ):
            self.state.lease_keys.finish()
        started = time.perf_counter()
        applied = self.applier.apply(req, e.index)
        if time.perf_counter() - started > stats.SLOW_APPLY_SECONDS:
            stats.SERVER.slow_applies += 1  # etcd_server_slow_apply_total
        if applied.compaction is not None:
            self._run_compaction(applied.compaction)
        if applied.error is not None:
            self.wait.fail(req.header.ID, applied.error)
        else:
            self.wait.trigger(req.header.ID, applied.response)

    def _apply_conf_change(self, e: Entry) -> None:
        cc = ConfChange.from_bytes(e.data)
        self.conf_state = self.node.apply_conf_change(cc)
        if e.index > self.consistent_index:
            changed = apply_change(self.membership, cc, self.backend)
            if changed is not None and changed.id != self.member_id:
                if cc.type == ConfChangeType.ConfChangeRemoveNode:
                    self.transport.remove_peer(changed.id)
                else:
                    self.transport.update_peer(changed.id, list(changed.peer_urls))
            if cc.type == ConfChangeType.ConfChangeRemoveNode and cc.node_id == self.member_id:
                log.warning("this member was removed from the cluster")
                self.removed = True
                self._set_done(None)  # the embedding program stops the server
        self.wait.trigger(cc.id, self.membership.to_pb_list())
        if self.conf_state.voters == [self.member_id] and self.node.lead == 0:
            # a cluster of one need not wait out an election timeout, on
            # restart either; campaign once this Ready is done
            asyncio.get_running_loop().call_soon(self._campaign_alone)

    def _campaign_alone(self) -> None:
        if self.node.lead == 0 and not self._stopped:
            self.node.campaign()

    def _apply_snapshot(self, snap: Snapshot) -> None:
        """A snapshot from the leader: its backend replaces ours, and a
        fresh state machine is built on it."""
        self.snapshot_index = snap.metadata.index
        self.conf_state = snap.metadata.conf_state
        if not snap.data:
            return
        self.state.close()
        install_backend(self.cfg, snap.data)
        backend = open_backend(self.cfg)
        try:
            membership = load_membership(backend, WalIdentity(self.member_id, self.cluster_id), self.cfg)
            # the lease keys are re-attached a chunk at a time, off this call
            state = MemberState.open(self.cfg, backend, membership, self.state.auth.tokens, lease_keys_now=False)
        except BaseException:
            backend.close()
            raise
        self._install_state(state)
        self.background.spawn(self._rebuild_lease_keys(state), "lease-keys")
        self.applied_index = max(self.applied_index, self.consistent_index, snap.metadata.index)
        self.applied_wait.advance(self.applied_index)
        log.info("installed the leader's backend at index %d", self.consistent_index)

    async def _rebuild_lease_keys(self, state: MemberState) -> None:
        """Step a fresh state's lease-key rebuild between other work."""
        while state is self.state and not state.lease_keys.step(LEASE_REBUILD_STEP_KEYS):
            await asyncio.sleep(0)

    def _maybe_snapshot(self) -> None:
        """Take a raft snapshot unless one is being saved, or a defrag is in
        flight: a defrag swaps in a file whose durable state is older than
        the last commit until its replay is committed and the rename made
        durable, and a snapshot would release the WAL entries that cover
        the gap."""
        if self._snapshot_saving is not None or self._defrag_lock.locked():
            return
        self._snapshot()

    def _snapshot(self) -> None:
        """Save a raft snapshot at the applied index: the backend is committed
        here (the snapshot must not be ahead of the durable backend), the
        snapshot file, the WAL marker and the release of WAL segments run in
        a worker thread, then the in-memory log is compacted."""
        self.backend.commit()
        snap = self.raft_storage.create_snapshot(self.applied_index, self.conf_state, b"")
        self.snapshot_index = self.applied_index
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

    async def defragment(self) -> None:
        """Defragment the backend without holding the loop: the compacting
        copy and its fsync run in a worker thread while writes, reads and
        commits go on; the swap on the loop replays the writes the copy
        missed. One defrag at a time; raft snapshots wait for it."""
        self._check_running()
        async with self._defrag_lock:
            backend = self.backend
            copy = backend.start_defrag()
            running = asyncio.ensure_future(asyncio.to_thread(copy.run))
            try:
                await asyncio.shield(running)
                while not backend.finish_defrag(copy):  # a snapshot copy holds the environment
                    await asyncio.to_thread(backend.wait_env_free)
            except BaseException:
                # the copy may still be running in its thread: clean up once it is done
                running.add_done_callback(functools.partial(_abort_defrag, backend, copy))
                raise
            await asyncio.to_thread(_settle_defrag, copy, os.path.dirname(backend.path))
            log.info("defragmented %s: %d bytes", backend.path, backend.size())

    def _run_compaction(self, job: Compaction) -> None:
        async def run() -> None:
            while not job.step(COMPACTION_STEP_KEYS):
                await asyncio.sleep(0)
        self.compactions.spawn(run(), f"compaction-{job.rev}")

    def _on_read_states(self, states: list[ReadState]) -> None:
        self.reads.on_read_states(states)

    def _on_leader_changed(self, old: int, new: int) -> None:
        log.info("raft leader changed from %x to %x", old, new)
        if new != 0:
            stats.SERVER.leader_changes += 1  # etcd_server_leader_changes_seen_total
        stats.HEARTBEATS.reset(2 * self.cfg.heartbeat_interval_ms / 1000)  # etcd_server_heartbeat_send_failures_total
        if new == self.member_id:
            # a new leader gives every lease a whole TTL, so none expires
            # merely because leadership moved
            self.lessor.promote(self.cfg.election_timeout_ms / 1000.0)
        else:
            self.lessor.demote()
        if new == 0:
            self._has_leader.clear()
        else:
            self._has_leader.set()
        self.reads.leader_changed()

    def _send(self, msgs: list[Message]) -> None:
        plain = [m for m in msgs if m.type != MessageType.MsgSnap]
        if plain:
            self.transport.send(plain)
        for m in msgs:
            if m.type == MessageType.MsgSnap:
                self.background.spawn(self._send_snapshot(m), f"send-snapshot-{m.to:x}")
            elif m.type == MessageType.MsgHeartbeat:
                stats.HEARTBEATS.sent(m.from_, m.to)  # etcd_server_heartbeat_send_failures_total

    async def _send_snapshot(self, m: Message) -> None:
        """A follower needs a snapshot: send our whole backend, described as
        of the index it was committed at (newer than the raft snapshot raft
        picked, so it also carries every membership change up to there, the
        receiver's own addition included)."""
        assert m.snapshot is not None
        self.backend.commit()
        index = self.consistent_index
        term = self.raft_storage.log.term(index)
        cs = ConfState(list(self.conf_state.voters), list(self.conf_state.learners))
        data = await asyncio.to_thread(read_backend_snapshot, self.backend)
        m.snapshot = Snapshot(data, SnapshotMetadata(cs, index, term))
        self.transport.send([m])

    def _snapshot_news(self, m: Message) -> bool:
        """Whether raft could take this MsgSnap (not stale, past our commit): only then is its data checked."""
        assert m.snapshot is not None
        st = self.node.status()
        return m.term >= st.term and m.snapshot.metadata.index > st.commit

    def _on_peer_message(self, m: Message) -> None:
        if m.type == MessageType.MsgSnap and m.snapshot is not None and self._snapshot_news(m):
            why = snapshot_problem(m.snapshot, self.cfg.backend_path())
            if why is not None:
                log.warning("ignored a snapshot [index %d] from %x: %s", m.snapshot.metadata.index, m.from_, why)
                return
        self.node.step(m)

    async def _publish(self) -> None:
        """Record this member's name and client URLs in the cluster, through
        raft, as etcd does on every start."""
        attrs = raft_internal_pb2.ClusterMemberAttrSetRequest(
            member_ID=self.member_id,
            member_attributes=raft_internal_pb2.MemberAttributes(
                name=self.cfg.name, client_urls=list(self.cfg.advertise_client_urls)
            ),
        )
        while not self._stopped:
            try:
                await self.raft_request(raft_internal_pb2.InternalRaftRequest(cluster_member_attr_set=attrs))
                return
            except (TimeoutError, ServerError) as exc:
                log.info("publishing member attributes failed, retrying: %s", exc)
                await asyncio.sleep(0.5)

    async def _lease_expirer(self) -> None:
        """The leader revokes expired leases through raft, so every member
        deletes their keys at the same revision."""
        revoking: set[int] = set()  # revocations in flight (held by self.background)
        while not self._stopped:
            await asyncio.sleep(0.5)
            if not self.node.is_leader():
                continue
            for lease_id in self.lessor.expired():
                if lease_id in revoking:
                    continue
                revoking.add(lease_id)
                task = self.background.spawn(self._revoke_expired(lease_id), f"revoke-lease-{lease_id:x}")
                task.add_done_callback(functools.partial(_forget, revoking, lease_id))

    async def _revoke_expired(self, lease_id: int) -> None:
        try:
            await self.lease_revoke(rpc_pb2.LeaseRevokeRequest(ID=lease_id))
        except Exception as exc:  # tried again on the next pass while it is still expired
            log.warning("revoking expired lease %x failed: %s", lease_id, exc)

    # ---- client entry points ----------------------------------------------

    @property
    def leader(self) -> int:
        return self.node.lead

    @property
    def term(self) -> int:
        return self.node.term

    def header(self, revision: int | None = None) -> rpc_pb2.ResponseHeader:
        return rpc_pb2.ResponseHeader(
            cluster_id=self.cluster_id,
            member_id=self.member_id,
            revision=self.kv.rev if revision is None else revision,
            raft_term=self.node.term,
        )

    def _check_running(self) -> None:
        if self._stopped:
            raise ErrStopped()
        if self.node.failed is not None:
            raise ErrStopped()

    async def raft_request(self, req: raft_internal_pb2.InternalRaftRequest, auth: AuthInfo | None = None) -> Any:
        self._check_running()
        if auth is not None:  # who the request runs as, checked where it is applied
            req.header.username = auth.username
            req.header.auth_revision = auth.revision
        if self.membership.is_learner() and not req.HasField("cluster_member_attr_set"):
            raise ErrNotSupportedForLearner()
        req_id = self.ids.next()
        req.header.ID = req_id
        data = req.SerializeToString()
        if len(data) > self.cfg.max_request_bytes:
            raise ErrRequestTooLarge()
        self._check_quota(req, len(data))
        return await self._propose_and_wait(req_id, lambda: self.node.propose(data))

    async def _propose_conf_change(self, cc: ConfChange) -> None:
        """Propose a membership change and wait until it is applied."""
        self._check_running()
        cc.id = self.ids.next()
        await self._propose_and_wait(cc.id, lambda: self.node.propose_conf_change(cc))

    async def _propose_and_wait(self, req_id: int, feed: Callable[[], None]) -> Any:
        """The one way in for writes and membership changes: register the
        waiter, feed the proposal to raft (waiting for a leader if need be),
        and wait for the applier's result under the request timeout."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.request_timeout
        fut = self.wait.register(req_id)
        try:
            await self._until_taken(feed, deadline)
        except BaseException:
            self.wait.cancel(req_id)
            stats.SERVER.proposals_failed += 1  # etcd_server_proposals_failed_total
            raise
        self.node.notify()
        # a timer on the future itself, not asyncio.wait_for: that wraps it
        # in a second future and costs an extra loop iteration per request
        timer = loop.call_at(deadline, _expire, fut)
        try:
            return await fut
        except asyncio.CancelledError:  # the client went away (etcd counts it failed too)
            stats.SERVER.proposals_failed += 1  # etcd_server_proposals_failed_total
            raise
        except TimeoutError:
            self.wait.cancel(req_id)
            stats.SERVER.proposals_failed += 1  # etcd_server_proposals_failed_total
            raise (ErrTimeoutDueToLeaderFail() if self.node.lead == 0 else ErrTimeout()) from None
        finally:
            timer.cancel()

    def _check_quota(self, req: raft_internal_pb2.InternalRaftRequest, size: int) -> None:
        """etcd's backend quota: a request that may grow the database past
        --quota-backend-bytes is refused, and the NOSPACE alarm raised (only
        deletes and compactions get through until it is disarmed)."""
        grows = req.HasField("put") or req.HasField("lease_grant") or (
            req.HasField("txn") and txn_ops.has_puts(req.txn))
        quota = self.cfg.quota_bytes()
        if not grows or not quota or self.backend.size() + size <= quota:
            return
        if not self.alarms.is_active(rpc_pb2.NOSPACE):
            alarm = rpc_pb2.AlarmRequest(action=rpc_pb2.AlarmRequest.ACTIVATE, memberID=self.member_id,
                                         alarm=rpc_pb2.NOSPACE)
            self.background.spawn(self.raft_request(raft_internal_pb2.InternalRaftRequest(alarm=alarm)),
                                  "raise-nospace")
            log.warning("database space exceeded (%d bytes, quota %d): raising the NOSPACE alarm",
                        self.backend.size(), quota)
        raise ErrNoSpace()

    async def _until_taken(self, feed: Callable[[], None], deadline: float) -> None:
        """Feed a proposal or read request to raft; while raft cannot take it
        (no leader yet, a leadership transfer) wait and retry, as etcd's
        proposals wait for a leader, until the deadline."""
        loop = asyncio.get_running_loop()
        while True:
            try:
                feed()
                return
            except ProposalDropped:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    raise ErrTimeoutDueToLeaderFail() from None
                if self.node.lead == 0:
                    try:
                        await asyncio.wait_for(self._has_leader.wait(), remaining)
                    except TimeoutError:
                        raise ErrTimeoutDueToLeaderFail() from None
                else:
                    await asyncio.sleep(min(remaining, self.cfg.tick_seconds()))

    async def linearizable_read(self) -> None:
        """Returns once a read of the local store is linearizable (see
        petcd.server.read_index)."""
        self._check_running()
        if self.membership.is_learner():
            raise ErrNotSupportedForLearner()
        await self.reads.wait(self.request_timeout)

    # ---- KV ---------------------------------------------------------------

    async def range(self, req: rpc_pb2.RangeRequest) -> rpc_pb2.RangeResponse:
        if not req.serializable:
            await self.linearizable_read()
        return txn.range_(self.kv, req)

    async def put(self, req: rpc_pb2.PutRequest, auth: AuthInfo | None = None) -> rpc_pb2.PutResponse:
        resp: rpc_pb2.PutResponse = await self.raft_request(raft_internal_pb2.InternalRaftRequest(put=req), auth)
        return resp

    async def delete_range(self, req: rpc_pb2.DeleteRangeRequest,
                           auth: AuthInfo | None = None) -> rpc_pb2.DeleteRangeResponse:
        resp: rpc_pb2.DeleteRangeResponse = await self.raft_request(
            raft_internal_pb2.InternalRaftRequest(delete_range=req), auth
        )
        return resp

    async def txn(self, req: rpc_pb2.TxnRequest, auth: AuthInfo | None = None) -> rpc_pb2.TxnResponse:
        if txn_ops.is_read_only(req):
            if not txn_ops.is_serializable(req):
                await self.linearizable_read()
            return txn.txn(self.kv, req, self.lessor.exists)
        wrapped = raft_internal_pb2.InternalRaftRequest()
        wrapped.txn.CopyFrom(req)  # not txn=req: that copies by re-parsing, which stops ~50 txns deep
        resp: rpc_pb2.TxnResponse = await self.raft_request(wrapped, auth)
        return resp

    async def compact(self, req: rpc_pb2.CompactionRequest) -> rpc_pb2.CompactionResponse:
        resp: rpc_pb2.CompactionResponse = await self.raft_request(
            raft_internal_pb2.InternalRaftRequest(compaction=req)
        )
        if req.physical:
            await self.wait_compactions()
        return resp

    async def wait_compactions(self) -> None:
        """Wait for the compaction jobs running now (and nothing else)."""
        await self.compactions.wait()

    async def alarm(self, req: rpc_pb2.AlarmRequest) -> rpc_pb2.AlarmResponse:
        resp: rpc_pb2.AlarmResponse = await self.raft_request(raft_internal_pb2.InternalRaftRequest(alarm=req))
        return resp

    # ---- Lease ------------------------------------------------------------

    async def lease_grant(self, req: rpc_pb2.LeaseGrantRequest) -> rpc_pb2.LeaseGrantResponse:
        if req.ID == 0:  # the id is chosen here, once, so every member applies the same
            req = rpc_pb2.LeaseGrantRequest(TTL=req.TTL, ID=self.ids.next() & ((1 << 63) - 1))
        resp: rpc_pb2.LeaseGrantResponse = await self.raft_request(
            raft_internal_pb2.InternalRaftRequest(lease_grant=req)
        )
        return resp

    async def lease_revoke(self, req: rpc_pb2.LeaseRevokeRequest,
                           auth: AuthInfo | None = None) -> rpc_pb2.LeaseRevokeResponse:
        """Revoke as ``auth``'s user; None is the server itself (expiry),
        which revokes as root, as etcd does (the keys may be anyone's)."""
        if auth is None:
            auth = AuthInfo("root", self.auth.revision)
        resp: rpc_pb2.LeaseRevokeResponse = await self.raft_request(
            raft_internal_pb2.InternalRaftRequest(lease_revoke=req), auth
        )
        return resp

    async def lease_renew(self, lease_id: int) -> int:
        self._check_running()
        if self.node.is_leader():
            return self.lessor.renew(lease_id)
        return await self.leader_client.renew(self._leader_urls(), lease_id, self.request_timeout)

    async def lease_time_to_live(self, req: rpc_pb2.LeaseTimeToLiveRequest) -> rpc_pb2.LeaseTimeToLiveResponse:
        await self.linearizable_read()
        if not self.node.is_leader():
            # the remaining TTL lives in the leader's lessor
            return await self.leader_client.time_to_live(self._leader_urls(), req, self.request_timeout)
        if req.keys:
            self.state.lease_keys.finish()
        lease = self.lessor.lookup(req.ID)
        if lease is None:
            raise ErrLeaseNotFound()
        resp = rpc_pb2.LeaseTimeToLiveResponse(ID=lease.id, TTL=self.lessor.remaining(lease.id), grantedTTL=lease.ttl)
        if req.keys:
            resp.keys.extend(sorted(lease.keys))
        return resp

    def _leader_urls(self) -> list[str]:
        lead = self.membership.members.get(self.node.lead)
        if lead is None:
            raise ErrNoLeader()
        return lead.client_urls

    # ---- Auth -------------------------------------------------------------

    async def auth_request(self, field: str, req: Any, auth: AuthInfo | None) -> Any:
        """Propose one auth request (``field`` is its InternalRaftRequest
        field); the auth store applies it and checks the caller's rights."""
        wrapped = raft_internal_pb2.InternalRaftRequest()
        getattr(wrapped, field).CopyFrom(req)
        return await self.raft_request(wrapped, auth)

    # ---- Cluster ----------------------------------------------------------

    async def lease_leases(self) -> rpc_pb2.LeaseLeasesResponse:
        await self.linearizable_read()
        return rpc_pb2.LeaseLeasesResponse(leases=[rpc_pb2.LeaseStatus(ID=i) for i in sorted(self.lessor.leases)])


def _settle_defrag(copy: DefragCopy, dirname: str) -> None:
    """After the swap (in a worker thread): free the old file, make the rename durable."""
    copy.release_old()
    fsync_dir(dirname)


def _abort_defrag(backend: Backend, copy: DefragCopy, running: asyncio.Future[None]) -> None:
    if not running.cancelled():
        running.exception()  # retrieved: the caller got the failure already
    backend.abort_defrag(copy)


def _forget(ids: set[int], lease_id: int, _done: asyncio.Task[None]) -> None:
    ids.discard(lease_id)


def _expire(fut: asyncio.Future[Any]) -> None:
    """The request timeout passed before the applier answered."""
    if not fut.done():
        fut.set_exception(TimeoutError())
