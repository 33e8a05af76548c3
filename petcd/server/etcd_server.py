"""EtcdServer: raft, storage and the state machine joined into one member.

EtcdServer keeps the member's life cycle, the raft node's hooks (apply the
committed entries, install a leader's snapshot, read states, leader
changes, send) and the entry points the api calls; its parts, built whole
in ``__init__``, hold the rest: ``proposer`` (the proposal path: request
ids, quota, waiting for the applier), ``snapshots`` (raft snapshots taken,
sent, checked and installed), ``lease_front`` (lease calls and the leader's
expiry), ``backend_upkeep`` (batch commits, defragmentation), ``cluster``
(membership changes), ``reads`` (ReadIndex) and ``auth_front``.

A write: an entry point hands an InternalRaftRequest to
``proposer.raft_request``; it gets a unique id, is proposed to raft, and
the caller waits on the id until the applier has applied the committed
entry (after the WAL fsync). A linearizable read: ``linearizable_read``
joins the next ReadIndex round, then waits until the applied index reaches
the round's index.

Everything runs on one asyncio loop; fsyncs and big copies go to threads:
the WAL's fsync (the node loop), a raft snapshot's file, WAL marker and
segment release, a defrag's copy, a backend snapshot for a follower. Long
scans go in steps: compactions, re-attaching keys to leases after
installing a leader's backend. The backend's batch commit (with its fsync)
stays on the loop (see petcd.storage.backend).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from google.protobuf.message import DecodeError

from petcd import stats
from petcd.auth.front import AuthFront
from petcd.auth.store import AuthStore
from petcd.auth.tokens import AuthInfo
from petcd.lease.lessor import Lessor
from petcd.mvcc.history import StoreHistory
from petcd.mvcc.kvstore import Compaction, KVStore
from petcd.mvcc.watchable_store import WatchableStore
from petcd.proto import kv_pb2, raft_internal_pb2, rpc_pb2
from petcd.raft import (
    ConfChange,
    ConfChangeType,
    Entry,
    EntryType,
    Message,
    MessageType,
    ProposalDropped,
    ReadState,
    Snapshot,
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
from petcd.server.backend_upkeep import BackendUpkeep
from petcd.server.bootstrap import Bootstrapped, bootstrap
from petcd.server.cluster import ClusterManager, members_doc
from petcd.server.compactor import AutoCompactor
from petcd.server.config import ServerConfig
from petcd.server.errors import ErrNotSupportedForLearner, ErrStopped, ErrTimeout, ServerError
from petcd.server.leader_client import LeaderClient, LeaderService
from petcd.server.lease_front import LeaseFront
from petcd.server.membership import Membership, apply_change
from petcd.server.proposer import Proposer
from petcd.server.raft_node import NodeHooks, RaftNode
from petcd.server.raft_storage import WalIdentity
from petcd.server.read_index import ReadIndex
from petcd.server.snapshots import RaftSnapshots
from petcd.server.state import MemberState
from petcd.server.tasks import TaskGroup
from petcd.server.transport import DEFAULT_MAX_MESSAGE_BYTES, PeerTransport
from petcd.server.transport.tls import peer_tls_from_config
from petcd.server.wait import AppliedWait, Wait
from petcd.storage.backend import Backend
from petcd.storage.errors import StorageError
from petcd.version import CLUSTER_VERSION, ETCD_VERSION

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
            on_message=self.node.step,
            on_snapshot=lambda m: self.snapshots.receive(m),
            on_unreachable=self.node.report_unreachable,
            on_snapshot_status=self.node.report_snapshot,
            members_info=lambda: members_doc(self.membership),
            on_call=LeaderService(self.node.is_leader, lambda lease_id: self.lease_front.renew(lease_id),
                                  lambda req: self.lease_front.time_to_live(req),
                                  self._promote_for_follower),
            # a MsgApp holds up to 1 MiB of entries plus one, which may be a whole request
            max_message_bytes=max(DEFAULT_MAX_MESSAGE_BYTES, 2 * cfg.max_request_bytes + (2 << 20)),
            tls=peer_tls_from_config(cfg),
        )
        self.leader_client = LeaderClient(self.transport)
        self.proposer = Proposer(
            cfg,
            member_id=self.member_id,
            node=self.node,
            state=lambda: self.state,
            check_running=self._check_running,
            has_leader=self._has_leader,
            background=self.background,
            ids=self.ids,
            wait=self.wait,
        )
        self.backend_upkeep = BackendUpkeep(
            node=self.node, state=lambda: self.state, check_running=self._check_running, stopped=lambda: self._stopped
        )
        self.snapshots = RaftSnapshots(
            cfg,
            index=boot.snapshot_index,
            identity=WalIdentity(self.member_id, self.cluster_id),
            raft_storage=self.raft_storage,
            node=self.node,
            transport=self.transport,
            state=lambda: self.state,
            applied_index=lambda: self.applied_index,
            conf_state=lambda: self.conf_state,
            defragmenting=self.backend_upkeep.defragmenting,
            stopped=lambda: self._stopped,
            background=self.background,
        )
        self.lease_front = LeaseFront(
            node=self.node,
            state=lambda: self.state,
            ids=self.ids,
            raft_request=self.proposer.raft_request,
            linearizable_read=self.linearizable_read,
            check_running=self._check_running,
            stopped=lambda: self._stopped,
            leader_client=self.leader_client,
            request_timeout=self.request_timeout,
            background=self.background,
        )
        self.cluster = ClusterManager(
            cfg,
            membership=lambda: self.membership,
            check_running=self._check_running,
            propose_conf_change=self.proposer.propose_conf_change,
            raft_status=self.node.status,
            transfer_leader=self.node.transfer_leader,
            active_since=self.transport.active_since,
            leader_id=self.lease_front.leader_id,
            leader_client=self.leader_client,
        )
        self.reads = ReadIndex(self.member_id, self.node, self.applied_wait, self._has_leader)

    # ---- life cycle -------------------------------------------------------

    async def start(self) -> None:
        """Listen for peers and start the node loop and the background work.
        If the peer listener cannot start, everything bootstrap opened is
        closed and the error raised."""
        cfg = self.cfg
        self.snapshots.discard_staged()
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
        self.background.spawn(self.backend_upkeep.committer(), "backend-commit")
        self.background.spawn(self.lease_front.expirer(), "lease-expiry")
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
        await self.snapshots.wait_saved()  # its thread writes to the WAL: let it finish
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
            if self.applied_index - self.snapshots.index > self.cfg.snapshot_count:
                self.snapshots.maybe_snapshot()

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
        self.snapshots.index = snap.metadata.index
        self.conf_state = snap.metadata.conf_state
        if not snap.data:
            return
        stats.SERVER.snapshot_applying += 1  # etcd_server_snapshot_apply_in_progress_total
        try:
            state = self.snapshots.open_state(snap, self.state)
        finally:
            stats.SERVER.snapshot_applying -= 1
        self._install_state(state)
        self.background.spawn(self._rebuild_lease_keys(state), "lease-keys")
        self.applied_index = max(self.applied_index, self.consistent_index, snap.metadata.index)
        self.applied_wait.advance(self.applied_index)
        log.info("installed the leader's backend at index %d", self.consistent_index)

    async def _rebuild_lease_keys(self, state: MemberState) -> None:
        """Step a fresh state's lease-key rebuild between other work."""
        while state is self.state and not state.lease_keys.step(LEASE_REBUILD_STEP_KEYS):
            await asyncio.sleep(0)

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
            self._set_cluster_version()
        else:
            self.lessor.demote()
        if new == 0:
            self._has_leader.clear()
        else:
            self._has_leader.set()
        self.reads.leader_changed()

    def _set_cluster_version(self) -> None:
        """A new cluster's first leader sets the cluster version through
        raft, as etcd's does (every petcd member runs one version, so there
        is nothing to decide between them). Proposed as it takes office,
        right behind its empty entry, so that on a cluster of one the version
        is set before any client's request is applied. No caller waits: if
        the entry is lost with this leadership, the next leader proposes it."""
        if self.membership.cluster_version is not None:
            return
        req = raft_internal_pb2.InternalRaftRequest(
            cluster_version_set=raft_internal_pb2.ClusterVersionSetRequest(ver=CLUSTER_VERSION))
        req.header.ID = self.ids.next()
        try:
            self.node.propose(req.SerializeToString())
        except ProposalDropped:  # a transfer under way: the next leader sets it
            pass

    def _send(self, msgs: list[Message]) -> None:
        plain = [m for m in msgs if m.type != MessageType.MsgSnap]
        if plain:
            self.transport.send(plain)
        for m in msgs:
            if m.type == MessageType.MsgSnap:
                self.background.spawn(self.snapshots.send_snapshot(m), f"send-snapshot-{m.to:x}")
            elif m.type == MessageType.MsgHeartbeat:
                stats.HEARTBEATS.sent(m.from_, m.to)  # etcd_server_heartbeat_send_failures_total

    async def _promote_for_follower(self, member_id: int) -> None:
        """A promotion a follower forwarded: the follower waits the request
        timeout for the answer, so the leader waits no longer (a membership
        change has no timeout of its own)."""
        try:
            await asyncio.wait_for(self.cluster.member_promote(member_id), self.request_timeout)
        except TimeoutError:
            raise ErrTimeout() from None

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
                await self.proposer.raft_request(raft_internal_pb2.InternalRaftRequest(cluster_member_attr_set=attrs))
                return
            except (TimeoutError, ServerError) as exc:
                log.info("publishing member attributes failed, retrying: %s", exc)
                await asyncio.sleep(0.5)

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
        resp: rpc_pb2.PutResponse = await self.proposer.raft_request(raft_internal_pb2.InternalRaftRequest(put=req), auth)
        return resp

    async def delete_range(self, req: rpc_pb2.DeleteRangeRequest,
                           auth: AuthInfo | None = None) -> rpc_pb2.DeleteRangeResponse:
        resp: rpc_pb2.DeleteRangeResponse = await self.proposer.raft_request(
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
        resp: rpc_pb2.TxnResponse = await self.proposer.raft_request(wrapped, auth)
        return resp

    async def compact(self, req: rpc_pb2.CompactionRequest) -> rpc_pb2.CompactionResponse:
        resp: rpc_pb2.CompactionResponse = await self.proposer.raft_request(
            raft_internal_pb2.InternalRaftRequest(compaction=req)
        )
        if req.physical:
            await self.wait_compactions()
        return resp

    async def wait_compactions(self) -> None:
        """Wait for the compaction jobs running now (and nothing else)."""
        await self.compactions.wait()

    async def alarm(self, req: rpc_pb2.AlarmRequest) -> rpc_pb2.AlarmResponse:
        resp: rpc_pb2.AlarmResponse = await self.proposer.raft_request(raft_internal_pb2.InternalRaftRequest(alarm=req))
        return resp

    # ---- Auth -------------------------------------------------------------

    async def auth_request(self, field: str, req: Any, auth: AuthInfo | None) -> Any:
        """Propose one auth request (``field`` is its InternalRaftRequest
        field); the auth store applies it and checks the caller's rights."""
        wrapped = raft_internal_pb2.InternalRaftRequest()
        getattr(wrapped, field).CopyFrom(req)
        return await self.proposer.raft_request(wrapped, auth)
