"""The cluster's membership as the server manages it: building it when a
member starts (a new cluster, a restart, or joining a running one) and
changing it at run time through raft conf changes, with etcd's safety checks
and errors (etcd's RaftCluster checks and EtcdServer.AddMember & co).

The building functions run before the raft node exists; the
:class:`ClusterManager` is built once it does and is the server's part for
MemberAdd, MemberRemove, MemberUpdate, MemberPromote and MoveLeader.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable

from petcd import stats
from petcd.raft import ConfChange, ConfChangeType, StateType, Status
from petcd.server import ids
from petcd.server.config import ConfigError, ServerConfig
from petcd.server.errors import (
    ErrBadLeaderTransferee,
    ErrNoLeader,
    ErrNotLeader,
    ErrTimeoutLeaderTransfer,
    ErrUnhealthy,
)
from petcd.server.join import fetch_members
from petcd.server.leader_client import LeaderClient
from petcd.server.membership import (
    MAX_LEARNERS,
    MEMBERS_BUCKET,
    MEMBERS_REMOVED_BUCKET,
    Buckets,
    ErrBadURLs,
    ErrLearnerNotReady,
    ErrMemberIDExists,
    ErrMemberNotFound,
    ErrMemberNotLearner,
    ErrNotEnoughStartedMembers,
    ErrPeerURLExists,
    ErrTooManyLearners,
    Member,
    Membership,
    member_key,
)
from petcd.server.raft_storage import WalIdentity
from petcd.server.transport.tls import peer_tls_from_config
from petcd.server.urls import URLError, parse_url
from petcd.storage.backend import Backend
from petcd.storage.etcd_format import CLUSTER_BUCKET, CLUSTER_VERSION_KEY

# etcd's health interval: how long a peer must have been connected for a
# membership change to count it up (a peer only just back may go again).
HEALTH_INTERVAL = 5.0

# ---- building the membership at start ---------------------------------------------


def new_membership(cfg: ServerConfig) -> Membership:
    """A new cluster's members, from --initial-cluster and the token (ids
    derived as etcd derives them, so they match etcd's)."""
    cluster = cfg.initial_cluster_map()
    token = cfg.initial_cluster_token
    members = {}
    for name, urls in cluster.items():
        mid = ids.member_id(urls, token)
        members[mid] = Member(mid, name, urls)
    local_id = ids.member_id(cluster[cfg.name], token)
    members[local_id].client_urls = list(cfg.advertise_client_urls)
    return Membership(ids.cluster_id(list(members)), local_id, members)


async def joined_membership(cfg: ServerConfig) -> Membership:
    """A member started with --initial-cluster-state=existing after a
    MemberAdd: it learns the members (and so its own id) from a peer."""
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


def load_membership(backend: Backend, identity: WalIdentity, cfg: ServerConfig) -> Membership:
    """The members the backend holds (a restart, or a backend installed
    from the leader); a data dir from before members were stored gets the
    initial cluster's."""
    members = {}
    for _, raw in backend.items(MEMBERS_BUCKET):
        m = Member.from_json(raw)
        members[m.id] = m
    if not members:
        return new_membership(cfg)
    removed = {int(k, 16) for k, _ in backend.items(MEMBERS_REMOVED_BUCKET)}
    version = backend.get(CLUSTER_BUCKET, CLUSTER_VERSION_KEY)
    return Membership(identity.cluster_id, identity.member_id, members, removed,
                      version.decode() if version is not None else None)


def store_members(backend: Buckets, membership: Membership) -> None:
    """Record every member in the backend (a new member's first state)."""
    for m in membership.members.values():
        backend.put(MEMBERS_BUCKET, member_key(m.id), m.to_json())


def members_doc(membership: Membership) -> bytes:
    """What a member tells one that joins: the cluster id and members."""
    members = [json.loads(m.to_json()) for m in membership.members.values()]
    return json.dumps({"cluster_id": membership.cluster_id, "members": members}).encode()


# ---- changing it at run time ---------------------------------------------------------


class ClusterManager:
    """Membership changes with etcd's checks, proposed as raft conf changes.

    It reads the server's current membership, raft status and peer
    activity through the callables it is given (the membership object is
    replaced when the member installs a leader's snapshot), and proposes
    through the server's one propose-and-wait path."""

    def __init__(
        self,
        cfg: ServerConfig,
        *,
        membership: Callable[[], Membership],
        check_running: Callable[[], None],
        propose_conf_change: Callable[[ConfChange], Awaitable[None]],
        raft_status: Callable[[], Status],
        transfer_leader: Callable[[int], None],
        active_since: Callable[[int], float | None],
        leader_id: Callable[[], int],
        leader_client: LeaderClient,
    ) -> None:
        self.cfg = cfg
        self._membership = membership
        self._check_running = check_running
        self._propose = propose_conf_change
        self._status = raft_status
        self._transfer = transfer_leader
        self._active_since = active_since
        self._leader_id = leader_id
        self._leader_client = leader_client

    @property
    def membership(self) -> Membership:
        return self._membership()

    async def member_add(self, peer_urls: list[str], is_learner: bool) -> Member:
        self._check_running()
        _check_urls(peer_urls)
        ms = self.membership
        # etcd's order: the quorum and health checks before proposing, then
        # (where the change is applied) the id, the peer URLs, the number of
        # learners
        if not is_learner and not self._ready_to_add_voter():
            raise ErrNotEnoughStartedMembers()  # the new member would make quorum unreachable
        if self._connected_voters() < len(ms.voter_ids()):
            raise ErrUnhealthy()  # a voter is down (or only just back): adding is not safe now
        # etcd's MemberAdd names no cluster in the id, only the peer URLs and
        # the second: the same URLs added twice within a second collide
        mid = ids.member_id(peer_urls, "", int(time.time()))
        if mid in ms.removed:
            # a removed member's id never comes back; etcd answers its
            # "ID removed" with the gRPC error for a member not found
            raise ErrMemberNotFound()
        if mid in ms.members:
            raise ErrMemberIDExists()
        if ms.with_peer_url(peer_urls) is not None:
            raise ErrPeerURLExists()
        if is_learner and sum(1 for m in ms.members.values() if m.is_learner) >= MAX_LEARNERS:
            raise ErrTooManyLearners()
        member = Member(mid, "", list(peer_urls), is_learner=is_learner)
        kind = ConfChangeType.ConfChangeAddLearnerNode if is_learner else ConfChangeType.ConfChangeAddNode
        await self._propose(ConfChange(kind, mid, member.to_json()))
        return member

    async def member_remove(self, member_id: int) -> None:
        self._check_running()
        ms = self.membership
        m = ms.members.get(member_id)
        # etcd checks the quorum left behind before it looks the member up
        # (an unknown id is found missing only where the change is applied)
        if m is None or not m.is_learner:
            rest = [v for v in ms.voter_ids() if v != member_id]
            if self._started(rest) < len(rest) // 2 + 1:
                raise ErrNotEnoughStartedMembers()
            # a member that is down is safe to remove: it is no part of the
            # active quorum; otherwise the voters left connected must make one
            up = member_id == ms.local_id or self._active_since(member_id) is not None
            voters = len(ms.voter_ids())
            if up and self._connected_voters() - 1 < 1 + (voters - 1) // 2:
                raise ErrUnhealthy()
        if m is None:
            raise ErrMemberNotFound()
        await self._propose(ConfChange(ConfChangeType.ConfChangeRemoveNode, member_id))

    async def member_update(self, member_id: int, peer_urls: list[str]) -> None:
        self._check_running()
        _check_urls(peer_urls)
        ms = self.membership
        if member_id not in ms.members:
            raise ErrMemberNotFound()
        other = ms.with_peer_url(peer_urls)
        if other is not None and other.id != member_id:
            raise ErrPeerURLExists()
        m = ms.members[member_id]
        # etcd 3.4's MemberUpdate proposes raft attributes of the peer URLs
        # alone, which replace the member's whole: a learner updated is
        # listed (and counted by the reconfiguration checks) as a voter
        # from then on, though raft still has it as a learner
        updated = Member(member_id, m.name, list(peer_urls), list(m.client_urls), is_learner=False)
        await self._propose(ConfChange(ConfChangeType.ConfChangeUpdateNode, member_id, updated.to_json()))

    async def member_promote(self, member_id: int) -> None:
        self._check_running()
        status = self._status()
        if status.raft_state != StateType.Leader:
            # as etcd: a member that does not lead forwards the promotion
            # before any check of its own (the leader makes them), waiting
            # up to the request timeout for there to be a leader
            loop = asyncio.get_running_loop()
            deadline = loop.time() + self.cfg.request_timeout()
            while (leader := self._leader_id()) == 0:
                if loop.time() >= deadline:
                    raise ErrNoLeader()
                await asyncio.sleep(self.cfg.tick_seconds())
            await self._leader_client.promote(leader, member_id, max(0.0, deadline - loop.time()))
            return
        mine, theirs = status.progress.get(status.id), status.progress.get(member_id)
        # etcd's order: a learner within 90% of the leader's log may vote;
        # the started voters, with it, must make a quorum; then (where the
        # change is applied) it must exist and be a learner
        if mine is not None and theirs is not None and theirs.match < mine.match * 0.9:
            raise ErrLearnerNotReady()
        voters = self.membership.voter_ids()
        if self._started(voters) + 1 < (len(voters) + 1) // 2 + 1:
            raise ErrNotEnoughStartedMembers()
        m = self.membership.members.get(member_id)
        if m is None:
            raise ErrMemberNotFound()
        if not m.is_learner:
            raise ErrMemberNotLearner()
        await self._propose(ConfChange(ConfChangeType.ConfChangeAddNode, member_id))
        stats.SERVER.learner_promotes += 1  # etcd_server_learner_promote_successes

    async def move_leader(self, target: int) -> None:
        self._check_running()
        status = self._status()
        if status.raft_state != StateType.Leader:
            raise ErrNotLeader()
        m = self.membership.members.get(target)
        if m is None or m.is_learner:
            raise ErrBadLeaderTransferee()
        if target == status.id:
            return
        self._transfer(target)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.cfg.request_timeout()
        while self._status().lead != target:
            if loop.time() > deadline:
                raise ErrTimeoutLeaderTransfer()
            await asyncio.sleep(self.cfg.tick_seconds())

    def _ready_to_add_voter(self) -> bool:
        """etcd's check before adding a voter: the started voters must still
        make a quorum of the grown cluster, except that a cluster of one may
        always grow to two (how a cluster is rebuilt from one restored
        member, as etcd's runtime-reconfiguration guide does it)."""
        voters = self.membership.voter_ids()
        started = self._started(voters)
        if started == 1 and len(voters) + 1 == 2:
            return True
        return started >= (len(voters) + 1) // 2 + 1

    def _started(self, member_ids: list[int]) -> int:
        """How many of them have started: published their name (etcd's
        IsStarted), whether or not they are up now."""
        members = self.membership.members
        return sum(1 for i in member_ids if i in members and members[i].name)

    def _connected_voters(self) -> int:
        """The voters this member has been connected to for etcd's health
        interval (itself included): a peer only just back does not count."""
        since = asyncio.get_running_loop().time() - HEALTH_INTERVAL
        local = self.membership.local_id
        return sum(1 for v in self.membership.voter_ids()
                   if v == local or ((t := self._active_since(v)) is not None and t < since))


def _check_urls(urls: list[str]) -> None:
    for u in urls:
        try:
            parse_url(u, ("http", "https"))
        except URLError:
            raise ErrBadURLs() from None
