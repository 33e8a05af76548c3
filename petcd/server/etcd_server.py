"""EtcdServer: raft, storage and the state machine joined into one member.

A write: the api hands an InternalRaftRequest to ``raft_request``; it gets a
unique id, is proposed to raft, and the caller waits on the id until the
applier has applied the committed entry (after the WAL fsync). A
linearizable read: ``linearizable_read`` joins the next ReadIndex round, then
waits until the applied index reaches the round's index.

Everything runs on one asyncio loop; only fsyncs and big copies go to threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import random
import tempfile
from collections.abc import Callable
from typing import Any

from google.protobuf.message import DecodeError

from petcd import stats
from petcd.lease.lessor import ErrLeaseNotFound, Lessor
from petcd.mvcc.history import StoreHistory
from petcd.mvcc.kvstore import Compaction, KVStore
from petcd.mvcc.watchable_store import WatchableStore
from petcd.proto import kv_pb2, raft_internal_pb2, rpc_pb2
from petcd.raft import (
    ConfChange,
    ConfChangeType,
    Config,
    ConfState,
    Entry,
    EntryType,
    Message,
    MessageType,
    ProposalDropped,
    RawNode,
    ReadState,
    Snapshot,
    SnapshotMetadata,
)
from petcd.server import ids, txn_ops
from petcd.server.alarms import ALARM_BUCKET, AlarmStore
from petcd.server.apply import (
    LOCAL_FAILURES,
    Applier,
    CompactResult,
    ErrUnappliable,
    conf_change_problem,
    decode_request,
    request_id,
)
from petcd.server.cluster_ops import ClusterOps
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
    MEMBERS_BUCKET,
    apply_change,
    member_key,
)
from petcd.server.raft_node import NodeHooks, RaftNode
from petcd.server.raft_storage import RaftStorage, WalIdentity
from petcd.server.transport import DEFAULT_MAX_MESSAGE_BYTES, PeerTransport
from petcd.server.wait import AppliedWait, Wait
from petcd.storage.backend import Backend
from petcd.storage.errors import StorageError
from petcd.storage.fsutil import replace_file

log = logging.getLogger("petcd.server")

# The etcd release whose API and behaviour petcd reproduces; clients read it
# from Status and decide what they may use.
ETCD_VERSION = "3.4.23"

# Keys of a compaction step: small enough that a step never holds the loop long.
COMPACTION_STEP_KEYS = 1000


class EtcdServer(ClusterOps):
    def __init__(self, cfg: ServerConfig) -> None:
        self.cfg = cfg
        self.wait = Wait()
        self.applied_wait = AppliedWait()
        self.alarms = AlarmStore()
        self._read_next: asyncio.Future[None] | None = None
        self._read_rounds: dict[bytes, asyncio.Future[None]] = {}
        self._read_seq = 0
        self._has_leader = asyncio.Event()
        self._compactions: list[asyncio.Task[None]] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._stopped = False
        self._state_opened = False
        self.removed = False  # this member was removed from the cluster
        self.leader_client = LeaderClient()
        self.request_timeout = 5.0 + 2 * cfg.election_timeout_ms / 1000.0
        self.snapshot_index = 0
        self.conf_state = ConfState()

    # ---- life cycle -------------------------------------------------------

    async def start(self) -> None:
        cfg = self.cfg
        os.makedirs(cfg.member_dir(), exist_ok=True)
        peers: list[int] = []
        applied = 0
        if RaftStorage.exists(cfg.wal_dir()):
            self.raft_storage, rec = RaftStorage.open(cfg.wal_dir(), cfg.snap_dir())
            if rec.snapshot is not None:
                applied = rec.snapshot.metadata.index
                self.snapshot_index = applied
                self.conf_state = rec.snapshot.metadata.conf_state
            self._open_state(rec.snapshot)
            self.membership = self._load_membership(rec.identity)
            log.info("restarting member %x in cluster %x at commit %d", rec.identity.member_id,
                     rec.identity.cluster_id, rec.hard_state.commit)
        elif cfg.initial_cluster_state == "existing":
            self._open_state(None)
            self.membership = await self._joined_membership()
            identity = WalIdentity(self.membership.local_id, self.membership.cluster_id)
            self.raft_storage = RaftStorage.create(cfg.wal_dir(), cfg.snap_dir(), identity)
            for m in self.membership.members.values():
                self.backend.put(MEMBERS_BUCKET, member_key(m.id), m.to_json())
            self.backend.commit()
            log.info("joining cluster %x as member %x", self.membership.cluster_id, self.membership.local_id)
        else:
            self._open_state(None)
            self.membership = self._new_membership()
            identity = WalIdentity(self.membership.local_id, self.membership.cluster_id)
            self.raft_storage = RaftStorage.create(cfg.wal_dir(), cfg.snap_dir(), identity)
            for m in self.membership.members.values():
                self.backend.put(MEMBERS_BUCKET, member_key(m.id), m.to_json())
            self.backend.commit()
            peers = self.membership.voter_ids()
            log.info("starting new member %x in cluster %x", self.membership.local_id, self.membership.cluster_id)
        self.member_id = self.membership.local_id
        self.cluster_id = self.membership.cluster_id
        self.ids = ids.RequestIds(self.member_id)
        self.applied_index = max(applied, self.consistent_index)
        self.applied_wait.applied = self.applied_index
        self.applier = Applier(self.kv, self.backend, self.alarms, self.lessor, self.membership)
        election_tick = max(1, cfg.election_timeout_ms // cfg.heartbeat_interval_ms)
        raw = RawNode(
            Config(
                id=self.member_id,
                peers=peers,
                election_tick=election_tick,
                heartbeat_tick=1,
                storage=self.raft_storage.log,
                applied=applied,
                rng=random.Random(),
                pre_vote=True,
                check_quorum=True,
                max_inflight_msgs=512,
                max_size_per_msg=1 << 20,
            )
        )
        hooks = NodeHooks(
            apply_entries=self._apply_entries,
            apply_snapshot=self._apply_snapshot,
            read_states=self._on_read_states,
            leader_changed=self._on_leader_changed,
            send=self._send,
        )
        self.node = RaftNode(raw, self.raft_storage, hooks, cfg.heartbeat_interval_ms / 1000.0)
        self.transport = PeerTransport(
            self.member_id,
            self.cluster_id,
            list(cfg.listen_peer_urls),
            on_message=self._on_peer_message,
            on_unreachable=raw.report_unreachable,
            on_snapshot_status=raw.report_snapshot,
            members_info=self._members_doc,
            # a MsgApp holds up to 1 MiB of entries plus one, which may be a whole request
            max_message_bytes=max(DEFAULT_MAX_MESSAGE_BYTES, 2 * cfg.max_request_bytes + (2 << 20)),
        )
        await self.transport.start()
        for mid, urls in self.membership.peers().items():
            self.transport.add_peer(mid, urls)
        if len(self.membership.voter_ids()) == 1:
            raw.campaign()  # a cluster of one need not wait out an election timeout
        self.node.start()
        self.node.notify()
        self.watchable.start()
        self._tasks.append(asyncio.create_task(self._backend_committer(), name="backend-commit"))
        self._tasks.append(asyncio.create_task(self._lease_expirer(), name="lease-expiry"))
        self._tasks.append(asyncio.create_task(self._publish(), name="publish"))
        compactor = AutoCompactor(
            cfg.auto_compaction_mode,
            cfg.compaction_retention(),
            revision=lambda: self.kv.rev,
            compacted=lambda: self.kv.compact_rev,
            is_leader=self.node.is_leader,
            compact=lambda rev: self.compact(rpc_pb2.CompactionRequest(revision=rev)),
        )
        self._tasks.append(asyncio.create_task(compactor.run(), name="auto-compaction"))

    def _open_state(self, snap: Snapshot | None) -> None:
        """Open the backend and everything built on it. A raft snapshot that
        carries a backend (sent by a leader) and is newer than the backend on
        disk replaces it: the crash came between the two."""
        cfg = self.cfg
        self.backend = Backend(cfg.backend_path())
        if snap is not None and snap.data and self.backend.consistent_index()[0] < snap.metadata.index:
            self.backend.close()
            _install_backend(cfg.backend_path(), snap.data)
            self.backend = Backend(cfg.backend_path())
        self.kv = KVStore(self.backend)
        self.alarms.load(self.backend.items(ALARM_BUCKET))
        self.lessor = Lessor(self.backend, min_lease_ttl(cfg))
        self.kv.lease_exists = self.lessor.exists
        self._restore_lease_keys()
        self.kv.on_events = self._on_events
        if self._state_opened:
            self.watchable.history = StoreHistory(self.kv)
        else:
            self.watchable = WatchableStore(StoreHistory(self.kv))
            self._state_opened = True
        self.consistent_index = self.backend.consistent_index()[0]

    async def stop(self) -> None:
        """Finish the WAL write and apply in progress, commit the backend, close."""
        if self._stopped:
            return
        self._stopped = True
        for t in self._tasks + self._compactions:
            t.cancel()
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
                self._snapshot()

    def _on_events(self, events: list[kv_pb2.Event], rev: int) -> None:
        self.lessor.on_events(events)
        self.watchable.notify(events, rev)

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
        result = self.applier.apply(req, e.index)
        if isinstance(result, CompactResult):
            if result.job is not None:
                self._run_compaction(result.job)
            result = result.response
        req_id = req.header.ID
        if isinstance(result, BaseException):
            self.wait.fail(req_id, result)
        else:
            self.wait.trigger(req_id, result)

    def _apply_conf_change(self, e: Entry) -> None:
        cc = ConfChange.from_bytes(e.data)
        self.conf_state = self.node.raw.apply_conf_change(cc)
        if e.index > self.consistent_index:
            changed = apply_change(self.membership, cc, self.backend)
            if changed is not None and changed.id != self.member_id:
                if cc.type == ConfChangeType.ConfChangeRemoveNode:
                    self.transport.remove_peer(changed.id)
                else:
                    self.transport.update_peer(changed.id, list(changed.peer_urls))
            if cc.type == ConfChangeType.ConfChangeRemoveNode and cc.node_id == self.member_id:
                log.warning("this member was removed from the cluster")
                self.removed = True  # the embedding program stops the server
        self.wait.trigger(cc.id, self.membership.to_pb_list())
        if self.conf_state.voters == [self.member_id] and self.node.lead == 0:
            # a cluster of one need not wait out an election timeout, on
            # restart either; campaign once this Ready is done
            asyncio.get_running_loop().call_soon(self._campaign_alone)

    def _campaign_alone(self) -> None:
        if self.node.lead == 0 and not self._stopped:
            self.node.raw.campaign()
            self.node.notify()

    def _apply_snapshot(self, snap: Snapshot) -> None:
        """A snapshot from the leader: its backend replaces ours."""
        self.snapshot_index = snap.metadata.index
        self.conf_state = snap.metadata.conf_state
        if not snap.data:
            return
        self.backend.close()
        _install_backend(self.cfg.backend_path(), snap.data)
        self._open_state(None)
        self.membership = self._load_membership(WalIdentity(self.member_id, self.cluster_id))
        self.applier = Applier(self.kv, self.backend, self.alarms, self.lessor, self.membership)
        for mid, urls in self.membership.peers().items():
            self.transport.update_peer(mid, urls)
        self.applied_index = max(self.applied_index, self.consistent_index, snap.metadata.index)
        self.applied_wait.advance(self.applied_index)
        self.watchable.resync_all()
        log.info("installed the leader's backend at index %d", self.consistent_index)

    def _snapshot(self) -> None:
        self.backend.commit()  # the snapshot must not be ahead of the backend
        self.raft_storage.snapshot_at(self.applied_index, self.conf_state, b"")
        self.snapshot_index = self.applied_index
        log.info("saved raft snapshot at index %d", self.applied_index)

    def _run_compaction(self, job: Compaction) -> None:
        async def run() -> None:
            while not job.step(COMPACTION_STEP_KEYS):
                await asyncio.sleep(0)
        task = asyncio.create_task(run(), name="compaction")
        self._compactions = [t for t in self._compactions if not t.done()] + [task]

    def _on_read_states(self, states: list[ReadState]) -> None:
        for rs in states:
            fut = self._read_rounds.pop(rs.request_ctx, None)
            if fut is None:
                continue
            waiter = self.applied_wait.wait(rs.index)
            waiter.add_done_callback(lambda w, f=fut: _chain(w, f))
        self._start_read_round()

    def _on_leader_changed(self, old: int, new: int) -> None:
        log.info("raft leader changed from %x to %x", old, new)
        if new != 0:
            stats.SERVER.leader_changes += 1  # etcd_server_leader_changes_seen_total
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
        if self._read_rounds:  # rounds sent to the old leader may never be answered
            rounds, self._read_rounds = self._read_rounds, {}
            for fut in rounds.values():
                if not fut.done():
                    fut.set_exception(_RoundLost())

    def _send(self, msgs: list[Message]) -> None:
        plain = [m for m in msgs if m.type != MessageType.MsgSnap]
        if plain:
            self.transport.send(plain)
        for m in msgs:
            if m.type == MessageType.MsgSnap:
                task = asyncio.create_task(self._send_snapshot(m), name="send-snapshot")
                self._compactions.append(task)

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
        data = await asyncio.to_thread(_read_backend_snapshot, self.backend)
        m.snapshot = Snapshot(data, SnapshotMetadata(cs, index, term))
        self.transport.send([m])

    def _snapshot_news(self, m: Message) -> bool:
        """Whether raft could take this MsgSnap (not stale, past our commit): only then is its data checked."""
        assert m.snapshot is not None
        st = self.node.raw.status()
        return m.term >= st.term and m.snapshot.metadata.index > st.commit

    def _on_peer_message(self, m: Message) -> None:
        if m.type == MessageType.MsgSnap and m.snapshot is not None and self._snapshot_news(m):
            why = _snapshot_problem(m.snapshot, self.cfg.backend_path())
            if why is not None:
                log.warning("ignored a snapshot [index %d] from %x: %s", m.snapshot.metadata.index, m.from_, why)
                return
        self.node.raw.step(m)
        self.node.notify()

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

    def _restore_lease_keys(self) -> None:
        """Re-attach every live key to its lease (attachments are not stored)."""
        resp = self.kv.range(rpc_pb2.RangeRequest(key=b"\0", range_end=b"\0"))
        for kv in resp.kvs:
            if kv.lease:
                self.lessor.attach(kv.lease, kv.key)

    async def _lease_expirer(self) -> None:
        """The leader revokes expired leases through raft, so every member
        deletes their keys at the same revision."""
        revoking: set[int] = set()
        while not self._stopped:
            await asyncio.sleep(0.5)
            if not self.node.is_leader():
                continue
            for lease_id in self.lessor.expired():
                if lease_id in revoking:
                    continue
                revoking.add(lease_id)
                task = asyncio.create_task(self._revoke_expired(lease_id))
                task.add_done_callback(lambda _t, i=lease_id: revoking.discard(i))

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

    async def raft_request(self, req: raft_internal_pb2.InternalRaftRequest) -> Any:
        self._check_running()
        if self.membership.is_learner() and not req.HasField("cluster_member_attr_set"):
            raise ErrNotSupportedForLearner()
        req_id = self.ids.next()
        req.header.ID = req_id
        data = req.SerializeToString()
        if len(data) > self.cfg.max_request_bytes:
            raise ErrRequestTooLarge()
        self._check_quota(req, len(data))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.request_timeout
        fut = self.wait.register(req_id)
        try:
            await self._until_taken(lambda: self.node.raw.propose(data), deadline)
        except BaseException:
            self.wait.cancel(req_id)
            raise
        self.node.notify()
        try:
            return await asyncio.wait_for(fut, max(0.0, deadline - loop.time()))
        except TimeoutError:
            self.wait.cancel(req_id)
            raise (ErrTimeoutDueToLeaderFail() if self.node.lead == 0 else ErrTimeout()) from None

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
            task = asyncio.create_task(self.raft_request(raft_internal_pb2.InternalRaftRequest(alarm=alarm)))
            self._compactions.append(task)
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
                    await asyncio.sleep(min(remaining, self.cfg.heartbeat_interval_ms / 1000.0))

    async def linearizable_read(self) -> None:
        """Returns once a read of the local store is linearizable: a ReadIndex
        round that started after this call has been confirmed by a quorum and
        applied. Reads arriving together share one round; a round lost to a
        leader change is retried."""
        self._check_running()
        if self.membership.is_learner():
            raise ErrNotSupportedForLearner()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.request_timeout
        while True:
            if self._read_next is None:
                self._read_next = loop.create_future()
            fut = self._read_next
            if not self._read_rounds:
                self._start_read_round()
            try:
                await asyncio.wait_for(asyncio.shield(fut), max(0.0, deadline - loop.time()))
                return
            except _RoundLost:
                if self.node.lead == 0:
                    try:
                        await asyncio.wait_for(self._has_leader.wait(), max(0.0, deadline - loop.time()))
                    except TimeoutError:
                        raise ErrTimeoutDueToLeaderFail() from None
            except TimeoutError:
                self._forget_round(fut)
                raise (ErrTimeoutDueToLeaderFail() if self.node.lead == 0 else ErrTimeout()) from None

    def _forget_round(self, fut: asyncio.Future[None]) -> None:
        """A read round that timed out may have been lost on the way (a dropped
        message): forget it, so the next read starts a new round instead of
        waiting behind this one for good. Reads still sharing it retry."""
        for ctx, f in list(self._read_rounds.items()):
            if f is fut:
                del self._read_rounds[ctx]
                if not fut.done():
                    fut.set_exception(_RoundLost())
                    fut.exception()  # retrieved: no "never retrieved" warning if nobody else waits on it
        if not self._read_rounds:
            self._start_read_round()  # the reads that queued behind the lost round

    def _start_read_round(self) -> None:
        fut, self._read_next = self._read_next, None
        if fut is None:
            return
        self._read_seq += 1
        # unique across members: the leader keeps every member's rounds apart by it
        ctx = self.member_id.to_bytes(8, "big") + self._read_seq.to_bytes(8, "big")
        try:
            self.node.raw.read_index(ctx)
        except ProposalDropped:
            fut.set_exception(_RoundLost())
            return
        self._read_rounds[ctx] = fut
        self.node.notify()

    # ---- KV ---------------------------------------------------------------

    async def range(self, req: rpc_pb2.RangeRequest) -> rpc_pb2.RangeResponse:
        if not req.serializable:
            await self.linearizable_read()
        resp: rpc_pb2.RangeResponse = self.kv.range(req)
        return resp

    async def put(self, req: rpc_pb2.PutRequest) -> rpc_pb2.PutResponse:
        resp: rpc_pb2.PutResponse = await self.raft_request(raft_internal_pb2.InternalRaftRequest(put=req))
        return resp

    async def delete_range(self, req: rpc_pb2.DeleteRangeRequest) -> rpc_pb2.DeleteRangeResponse:
        resp: rpc_pb2.DeleteRangeResponse = await self.raft_request(
            raft_internal_pb2.InternalRaftRequest(delete_range=req)
        )
        return resp

    async def txn(self, req: rpc_pb2.TxnRequest) -> rpc_pb2.TxnResponse:
        if txn_ops.is_read_only(req):
            if not txn_ops.is_serializable(req):
                await self.linearizable_read()
            ro: rpc_pb2.TxnResponse = self.kv.txn(req)
            return ro
        wrapped = raft_internal_pb2.InternalRaftRequest()
        wrapped.txn.CopyFrom(req)  # not txn=req: that copies by re-parsing, which stops ~50 txns deep
        resp: rpc_pb2.TxnResponse = await self.raft_request(wrapped)
        return resp

    async def compact(self, req: rpc_pb2.CompactionRequest) -> rpc_pb2.CompactionResponse:
        resp: rpc_pb2.CompactionResponse = await self.raft_request(
            raft_internal_pb2.InternalRaftRequest(compaction=req)
        )
        if req.physical:
            await self.wait_compactions()
        return resp

    async def wait_compactions(self) -> None:
        pending = [t for t in self._compactions if not t.done()]
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)

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

    async def lease_revoke(self, req: rpc_pb2.LeaseRevokeRequest) -> rpc_pb2.LeaseRevokeResponse:
        resp: rpc_pb2.LeaseRevokeResponse = await self.raft_request(
            raft_internal_pb2.InternalRaftRequest(lease_revoke=req)
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

    # ---- Cluster ----------------------------------------------------------

    async def lease_leases(self) -> rpc_pb2.LeaseLeasesResponse:
        await self.linearizable_read()
        return rpc_pb2.LeaseLeasesResponse(leases=[rpc_pb2.LeaseStatus(ID=i) for i in sorted(self.lessor.leases)])


def _snapshot_problem(snap: Snapshot, backend_path: str) -> str | None:
    """Why the backend a MsgSnap carries could not be installed here, or None.

    Checked before raft sees the message: once raft takes a snapshot it is in
    the WAL, and a backend that cannot be opened would stop the member on
    every start. A leader always sends its whole backend, committed at or past
    the snapshot's index."""
    if not snap.data:
        return "it carries no backend"
    fd, tmp = tempfile.mkstemp(prefix=os.path.basename(backend_path) + ".check-", dir=os.path.dirname(backend_path))
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(snap.data)
        backend = Backend(tmp)
        try:
            index, _ = backend.consistent_index()
        finally:
            backend.close()
    except Exception as exc:  # anything the bytes make the backend raise
        return f"its backend cannot be opened: {exc}"
    finally:
        for path in (tmp, tmp + "-lock"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
    if index < snap.metadata.index:
        return f"its backend is at index {index}, behind the snapshot's {snap.metadata.index}"
    return None


def _install_backend(path: str, data: bytes) -> None:
    """Replace the backend file at path with data, durably."""
    replace_file(path, data)


def _read_backend_snapshot(backend: Backend) -> bytes:
    """The whole committed backend as bytes (in a worker thread)."""
    snap = backend.snapshot()
    try:
        chunks = []
        while chunk := snap.read(1 << 20):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        snap.close()


class _RoundLost(Exception):
    """A read index round that will never be answered (no leader, or the
    leader changed); the reads in it start a new one."""


def min_lease_ttl(cfg: ServerConfig) -> int:
    """etcd's minimum lease TTL: 1.5 election timeouts, in whole seconds,
    rounded up, so a lease outlives a leader election."""
    election_ticks = max(1, cfg.election_timeout_ms // cfg.heartbeat_interval_ms)
    return math.ceil((3 * election_ticks // 2) * cfg.heartbeat_interval_ms / 1000.0)


def _chain(src: asyncio.Future[None], dst: asyncio.Future[None]) -> None:
    if dst.done():
        return
    exc = src.exception()
    if exc is not None:
        dst.set_exception(exc)
    else:
        dst.set_result(None)
