"""Leases on the server side: the entry points the Lease service calls, and
the leader's expiry of leases.

Grant and revoke are raft requests, so every member holds the same leases
and the same keys per lease; the grant's id is chosen here, once, so every
member applies the same. Keep-alives and TTL queries are the leader's (the
remaining TTL lives in the leader's lessor): a follower forwards them to the
leader over the peer port, and as etcd does it keeps trying until the
request timeout (waiting for an election, retrying a leader that does not
answer), so a keep-alive rides out a change of leader instead of failing.
Expiry is the leader's too: every 0.5 s the leader
proposes the revocation of each expired lease, so every member deletes its
keys at the same revision. Runs on the event loop only.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from petcd import stats
from petcd.auth.tokens import AuthInfo
from petcd.lease.lessor import ErrLeaseNotFound
from petcd.proto import raft_internal_pb2, rpc_pb2
from petcd.server.errors import ErrNoLeader, ErrTimeout, ErrTooManyRequests
from petcd.server.ids import RequestIds
from petcd.server.leader_client import LeaderClient
from petcd.server.raft_node import RaftNode
from petcd.server.state import MemberState
from petcd.server.tasks import TaskGroup

log = logging.getLogger("petcd.server")

T = TypeVar("T")

# etcd's pause between two attempts to reach the leader for a forwarded
# lease call (a leader that does not answer, or none elected yet)
RETRY_PAUSE = 0.05
# What a forwarded lease call retries until the request timeout: the leader
# not known, not answering, or too busy; a lease error is the answer.
_RETRIED = (ErrNoLeader, ErrTimeout, ErrTooManyRequests)


class LeaseFront:
    """The member's lease calls. It reads the current state through
    ``state`` (replaced whole when the member installs a leader's backend),
    proposes through ``raft_request``, makes reads linearizable with
    ``linearizable_read``, and asks the leader through ``leader_client``."""

    def __init__(
        self,
        *,
        node: RaftNode,
        state: Callable[[], MemberState],
        ids: RequestIds,
        raft_request: Callable[..., Awaitable[Any]],
        linearizable_read: Callable[[], Awaitable[None]],
        check_running: Callable[[], None],
        stopped: Callable[[], bool],
        leader_client: LeaderClient,
        request_timeout: float,
        background: TaskGroup,
    ) -> None:
        self.node = node
        self._state = state
        self.ids = ids
        self.raft_request = raft_request
        self.linearizable_read = linearizable_read
        self._check_running = check_running
        self._stopped = stopped
        self.leader_client = leader_client
        self.request_timeout = request_timeout
        self.background = background

    async def grant(self, req: rpc_pb2.LeaseGrantRequest) -> rpc_pb2.LeaseGrantResponse:
        if req.ID == 0:  # the id is chosen here, once, so every member applies the same
            req = rpc_pb2.LeaseGrantRequest(TTL=req.TTL, ID=self.ids.next() & ((1 << 63) - 1))
        resp: rpc_pb2.LeaseGrantResponse = await self.raft_request(
            raft_internal_pb2.InternalRaftRequest(lease_grant=req)
        )
        return resp

    async def revoke(self, req: rpc_pb2.LeaseRevokeRequest,
                     auth: AuthInfo | None = None) -> rpc_pb2.LeaseRevokeResponse:
        """Revoke as ``auth``'s user; None is the server itself (expiry),
        which revokes as root, as etcd does (the keys may be anyone's)."""
        if auth is None:
            auth = AuthInfo("root", self._state().auth.revision)
        resp: rpc_pb2.LeaseRevokeResponse = await self.raft_request(
            raft_internal_pb2.InternalRaftRequest(lease_revoke=req), auth
        )
        return resp

    async def renew(self, lease_id: int) -> int:
        self._check_running()
        ttl = await self._from_leader(lambda leader, timeout: self.leader_client.renew(leader, lease_id, timeout))
        return ttl if ttl is not None else self._state().lessor.renew(lease_id)

    async def time_to_live(self, req: rpc_pb2.LeaseTimeToLiveRequest) -> rpc_pb2.LeaseTimeToLiveResponse:
        await self.linearizable_read()
        # the remaining TTL lives in the leader's lessor
        forwarded = await self._from_leader(
            lambda leader, timeout: self.leader_client.time_to_live(leader, req, timeout))
        if forwarded is not None:
            return forwarded
        state = self._state()
        if req.keys:
            state.lease_keys.finish()
        lease = state.lessor.lookup(req.ID)
        if lease is None:
            raise ErrLeaseNotFound()
        resp = rpc_pb2.LeaseTimeToLiveResponse(ID=lease.id, TTL=state.lessor.remaining(lease.id), grantedTTL=lease.ttl)
        if req.keys:
            resp.keys.extend(sorted(lease.keys))
        return resp

    async def leases(self) -> rpc_pb2.LeaseLeasesResponse:
        await self.linearizable_read()
        return rpc_pb2.LeaseLeasesResponse(leases=[rpc_pb2.LeaseStatus(ID=i) for i in sorted(self._state().lessor.leases)])

    def leader_id(self) -> int:
        """The leader's member id, where a follower forwards what is the leader's (over the peer port)."""
        lead = self.node.lead
        if lead not in self._state().membership.members:
            raise ErrNoLeader()
        return lead

    async def _from_leader(self, ask: Callable[[int, float], Awaitable[T]]) -> T | None:
        """ask(leader id, seconds left) until the leader answers, as etcd
        asks: through elections and a leader that does not answer, until
        the request timeout (see _RETRIED); None once this member leads
        (the caller answers from its own lessor)."""
        deadline = asyncio.get_running_loop().time() + self.request_timeout
        while not self.node.is_leader():
            leader = await self._wait_leader(deadline)
            try:
                return await ask(leader, self._left(deadline))
            except _RETRIED:
                await self._pause(deadline)
        return None

    async def _wait_leader(self, deadline: float) -> int:
        """The leader's member id once there is one; "no leader" if none is
        elected before the deadline (etcd's waitLeader)."""
        while True:
            self._check_running()
            try:
                return self.leader_id()
            except ErrNoLeader:
                if self._left(deadline) <= 0:
                    raise
            await asyncio.sleep(min(RETRY_PAUSE, self._left(deadline)))

    async def _pause(self, deadline: float) -> None:
        """Between two attempts at the leader; "request timed out" once the
        deadline has passed (etcd's answer when the leader never answered)."""
        self._check_running()
        if self._left(deadline) <= 0:
            raise ErrTimeout()
        await asyncio.sleep(min(RETRY_PAUSE, self._left(deadline)))

    @staticmethod
    def _left(deadline: float) -> float:
        return deadline - asyncio.get_running_loop().time()

    async def expirer(self) -> None:
        """The leader revokes expired leases through raft, so every member
        deletes their keys at the same revision."""
        revoking: set[int] = set()  # revocations in flight (held by self.background)
        while not self._stopped():
            await asyncio.sleep(0.5)
            if not self.node.is_leader():
                continue
            for lease_id in self._state().lessor.expired():
                if lease_id in revoking:
                    continue
                revoking.add(lease_id)
                task = self.background.spawn(self._revoke_expired(lease_id), f"revoke-lease-{lease_id:x}")
                task.add_done_callback(functools.partial(_forget, revoking, lease_id))

    async def _revoke_expired(self, lease_id: int) -> None:
        try:
            await self.revoke(rpc_pb2.LeaseRevokeRequest(ID=lease_id))
        except Exception as exc:  # tried again on the next pass while it is still expired
            log.warning("revoking expired lease %x failed: %s", lease_id, exc)
            return
        stats.LEASES.expired += 1  # etcd_debugging_server_lease_expired_total


def _forget(ids: set[int], lease_id: int, _done: asyncio.Task[None]) -> None:
    ids.discard(lease_id)
