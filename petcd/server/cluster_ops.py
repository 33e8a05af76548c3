"""The cluster's membership as the server manages it: building it at start
(a new cluster, a restart, or joining a running one) and changing it at run
time through raft conf changes, with etcd's safety checks and errors.

A mixin of EtcdServer: it uses the server's raft node, transport, backend,
waits and configuration.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable

from petcd.raft import ConfChange, ConfChangeType
from petcd.server import ids
from petcd.server.config import ConfigError, ServerConfig
from petcd.server.errors import ErrBadLeaderTransferee, ErrNotLeader, ErrTimeout, ErrTimeoutLeaderTransfer
from petcd.server.join import fetch_members
from petcd.server.leader_client import LeaderClient
from petcd.server.membership import (
    MAX_LEARNERS,
    MEMBERS_BUCKET,
    MEMBERS_REMOVED_BUCKET,
    ErrBadURLs,
    ErrLearnerNotReady,
    ErrMemberNotFound,
    ErrMemberNotLearner,
    ErrNotEnoughStartedMembers,
    ErrPeerURLExists,
    ErrTooManyLearners,
    Member,
    Membership,
)
from petcd.server.raft_node import RaftNode
from petcd.server.raft_storage import WalIdentity
from petcd.server.transport import PeerTransport
from petcd.server.transport.tls import peer_tls_from_config
from petcd.server.urls import URLError, parse_url
from petcd.server.wait import Wait
from petcd.storage.backend import Backend


class ClusterOps:
    # what the mixin uses of EtcdServer
    cfg: ServerConfig
    membership: Membership
    member_id: int
    cluster_id: int
    backend: Backend
    transport: PeerTransport
    node: RaftNode
    wait: Wait
    ids: ids.RequestIds
    request_timeout: float
    leader_client: LeaderClient

    def _check_running(self) -> None: ...
    def _leader_urls(self) -> list[str]: ...
    async def _until_taken(self, feed: Callable[[], None], deadline: float) -> None: ...
    def _new_membership(self) -> Membership:
        cfg = self.cfg
        cluster = cfg.initial_cluster_map()
        token = cfg.initial_cluster_token
        members = {}
        for name, urls in cluster.items():
            mid = ids.member_id(urls, token)
            members[mid] = Member(mid, name, urls)
        local_id = ids.member_id(cluster[cfg.name], token)
        members[local_id].client_urls = list(cfg.advertise_client_urls)
        return Membership(ids.cluster_id(list(members)), local_id, members)

    async def _joined_membership(self) -> Membership:
        """A member started with --initial-cluster-state=existing after a
        MemberAdd: it learns the members (and so its own id) from a peer."""
        cfg = self.cfg
        others = [u for name, urls in cfg.initial_cluster_map().items() if name != cfg.name for u in urls]
        doc = json.loads(await fetch_members(others, tls=peer_tls_from_config(cfg)))
        members = {m.id: m for m in (Member.from_json(json.dumps(d).encode()) for d in doc["members"])}
        mine = set(cfg.initial_advertise_peer_urls)
        local = next((m for m in members.values() if set(m.peer_urls) == mine), None)
        if local is None:
            raise ConfigError(
                f"member with peer URLs {','.join(sorted(mine))} has not been added to the cluster "
                "(use etcdctl member add first)"
            )
        return Membership(int(doc["cluster_id"]), local.id, members)

    def _members_doc(self) -> bytes:
        """What this member tells one that joins: the cluster id and members."""
        members = [json.loads(m.to_json()) for m in self.membership.members.values()]
        return json.dumps({"cluster_id": self.cluster_id, "members": members}).encode()

    def _load_membership(self, identity: WalIdentity) -> Membership:
        members = {}
        for _, raw in self.backend.items(MEMBERS_BUCKET):
            m = Member.from_json(raw)
            members[m.id] = m
        if not members:  # a data dir from before members were stored
            return self._new_membership()
        removed = {int(k, 16) for k, _ in self.backend.items(MEMBERS_REMOVED_BUCKET)}
        return Membership(identity.cluster_id, identity.member_id, members, removed)

    async def member_add(self, peer_urls: list[str], is_learner: bool) -> Member:
        self._check_running()
        _check_urls(peer_urls)
        if self.membership.with_peer_url(peer_urls) is not None:
            raise ErrPeerURLExists()
        if is_learner:
            if sum(1 for m in self.membership.members.values() if m.is_learner) >= MAX_LEARNERS:
                raise ErrTooManyLearners()
        elif self._active_voters() < (len(self.membership.voter_ids()) + 1) // 2 + 1:
            raise ErrNotEnoughStartedMembers()  # the new member would make quorum unreachable
        mid = ids.member_id(peer_urls, self.cfg.initial_cluster_token, int(time.time()))
        member = Member(mid, "", list(peer_urls), is_learner=is_learner)
        kind = ConfChangeType.ConfChangeAddLearnerNode if is_learner else ConfChangeType.ConfChangeAddNode
        await self._conf_change(ConfChange(kind, mid, member.to_json()))
        return member

    async def member_remove(self, member_id: int) -> None:
        self._check_running()
        m = self.membership.members.get(member_id)
        if m is None:
            raise ErrMemberNotFound()
        if not m.is_learner:
            voters = len(self.membership.voter_ids())
            active = self._active_voters() - (1 if self._is_active(member_id) else 0)
            if active < (voters - 1) // 2 + 1:
                raise ErrNotEnoughStartedMembers()
        await self._conf_change(ConfChange(ConfChangeType.ConfChangeRemoveNode, member_id))

    async def member_update(self, member_id: int, peer_urls: list[str]) -> None:
        self._check_running()
        _check_urls(peer_urls)
        if member_id not in self.membership.members:
            raise ErrMemberNotFound()
        other = self.membership.with_peer_url(peer_urls)
        if other is not None and other.id != member_id:
            raise ErrPeerURLExists()
        m = self.membership.members[member_id]
        updated = Member(member_id, m.name, list(peer_urls), list(m.client_urls), m.is_learner)
        await self._conf_change(ConfChange(ConfChangeType.ConfChangeUpdateNode, member_id, updated.to_json()))

    async def member_promote(self, member_id: int) -> None:
        self._check_running()
        m = self.membership.members.get(member_id)
        if m is None:
            raise ErrMemberNotFound()
        if not m.is_learner:
            raise ErrMemberNotLearner()
        if not self.node.is_leader():
            await self.leader_client.promote(self._leader_urls(), member_id, self.request_timeout)
            return
        progress = self.node.raw.status().progress
        mine, theirs = progress.get(self.member_id), progress.get(member_id)
        # etcd's rule: a learner within 90% of the leader's log may vote
        if mine is None or theirs is None or theirs.match < mine.match * 0.9:
            raise ErrLearnerNotReady()
        await self._conf_change(ConfChange(ConfChangeType.ConfChangeAddNode, member_id))

    async def _conf_change(self, cc: ConfChange) -> None:
        cc.id = self.ids.next()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.request_timeout
        fut = self.wait.register(cc.id)
        try:
            await self._until_taken(lambda: self.node.raw.propose_conf_change(cc), deadline)
        except BaseException:
            self.wait.cancel(cc.id)
            raise
        self.node.notify()
        try:
            await asyncio.wait_for(fut, max(0.0, deadline - loop.time()))
        except TimeoutError:
            self.wait.cancel(cc.id)
            raise ErrTimeout() from None

    def _is_active(self, member_id: int) -> bool:
        return member_id == self.member_id or self.transport.active_since(member_id) is not None

    def _active_voters(self) -> int:
        return sum(1 for v in self.membership.voter_ids() if self._is_active(v))

    async def move_leader(self, target: int) -> None:
        self._check_running()
        if not self.node.is_leader():
            raise ErrNotLeader()
        m = self.membership.members.get(target)
        if m is None or m.is_learner:
            raise ErrBadLeaderTransferee()
        if target == self.member_id:
            return
        self.node.raw.transfer_leader(target)
        self.node.notify()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.request_timeout
        while self.node.lead != target:
            if loop.time() > deadline:
                raise ErrTimeoutLeaderTransfer()
            await asyncio.sleep(self.cfg.heartbeat_interval_ms / 1000.0)


def _check_urls(urls: list[str]) -> None:
    for u in urls:
        try:
            parse_url(u, ("http", "https"))
        except URLError:
            raise ErrBadURLs() from None
