"""Requests a follower hands to the leader, over the peer port: the ones only
the leader can answer (lease renewal and remaining TTL, which live in the
leader's lessor; learner promotion, which needs the leader's view of
replication). etcd sends these to its leader's peer URLs (its /leases,
/leases/internal and /members/promote/<id> peer handlers); petcd sends them
as calls on the call connection to the leader (petcd/server/transport/calls.py),
so they need no client port, no client TLS and no connection per request.

Each request is a call of its own kind whose body is the etcd request's
protobuf and whose answer is the etcd response's (``KINDS``). A failure
travels back as etcd's message, which becomes the same error here
(``_KNOWN``), so the client sees the leader's status code and message.

Failures that are about reaching the leader, not about the request (the
leader unreachable, the connection lost, the member asked no longer
leading, an answer that is not ours) become "no leader", which clients
retry; no answer within the request timeout is "request timed out"; more
than MAX_PENDING requests in flight to the leader, "too many requests".
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, TypeVar

from google.protobuf.message import DecodeError, Message

from petcd.lease import lessor
from petcd.proto import rpc_pb2
from petcd.server import errors, membership
from petcd.server.errors import ErrNoLeader, ErrNotLeader, ErrTimeout, ErrTooManyRequests
from petcd.server.transport.calls import CallFailed, CallTimeout, TooManyCalls
from petcd.server.transport.wire import TransportError

if TYPE_CHECKING:
    from petcd.server.transport import PeerTransport

log = logging.getLogger("petcd.server")

M = TypeVar("M", bound=Message)

# The kinds of call (petcd/server/transport/call_wire.py; 0 is the transport's PING).
RENEW = 1  # LeaseKeepAliveRequest -> LeaseKeepAliveResponse (ID, TTL)
TIME_TO_LIVE = 2  # LeaseTimeToLiveRequest -> LeaseTimeToLiveResponse
PROMOTE = 3  # MemberPromoteRequest -> MemberPromoteResponse (empty: the follower learns the members by raft)

KINDS: dict[int, tuple[type[Message], type[Message]]] = {
    RENEW: (rpc_pb2.LeaseKeepAliveRequest, rpc_pb2.LeaseKeepAliveResponse),
    TIME_TO_LIVE: (rpc_pb2.LeaseTimeToLiveRequest, rpc_pb2.LeaseTimeToLiveResponse),
    PROMOTE: (rpc_pb2.MemberPromoteRequest, rpc_pb2.MemberPromoteResponse),
}

# The errors the leader may answer a forwarded request with, by etcd's
# message: its answer becomes the same error here, so the client sees the
# leader's status code and message, not UNKNOWN.
_KNOWN: dict[str, type[Exception]] = {
    cls.message: cls
    for cls in (
        lessor.ErrLeaseNotFound,
        lessor.ErrLeaseTTLTooLarge,
        membership.ErrMemberNotFound,
        membership.ErrMemberNotLearner,
        membership.ErrLearnerNotReady,
        membership.ErrTooManyLearners,
        membership.ErrNotEnoughStartedMembers,
        errors.ErrLeaderChanged,
        errors.ErrTimeout,
        errors.ErrTimeoutDueToLeaderFail,
        errors.ErrNotSupportedForLearner,
        errors.ErrTooManyRequests,
        errors.ErrNoSpace,
        errors.ErrCorrupt,
        errors.ErrUnhealthy,
        errors.ErrNoLeader,
    )
}
# What the member asked answers when it is no longer the leader to ask (it
# lost its leadership, or it is stopping): to the client, "no leader".
_GONE = frozenset({errors.ErrNotLeader.message, errors.ErrStopped.message})
# The errors the leader sends as they are (everything a request to it may fail with that a client should see).
_SENT = (errors.ServerError, lessor.LeaseError)


def translate(exc: TransportError) -> Exception:
    """Our error for a failed call to the leader: the error whose message the
    leader answered; a timeout is "request timed out"; too many requests in
    flight to the leader is "too many requests"; anything else (the leader
    unreachable, stopping or gone, no longer leading, an unknown message) is
    "no leader", which clients retry."""
    if isinstance(exc, CallFailed):
        known = _KNOWN.get(exc.message)
        if known is not None:
            return known()
        if exc.message not in _GONE:
            log.warning("petcd: the leader answered a forwarded request with an unknown error: %s", exc.message)
        return ErrNoLeader()
    if isinstance(exc, CallTimeout):
        return ErrTimeout()
    if isinstance(exc, TooManyCalls):
        return ErrTooManyRequests()
    log.debug("petcd: forwarding to the leader failed: %s", exc)
    return ErrNoLeader()


class LeaderClient:
    """Asks the leader, by its member id, on the peer transport's call connection to it."""

    def __init__(self, transport: PeerTransport) -> None:
        self.transport = transport

    async def _ask(self, leader: int, kind: int, req: Message, timeout: float) -> bytes:
        try:
            return await self.transport.call(leader, kind, req.SerializeToString(), timeout)
        except TransportError as exc:
            raise translate(exc) from None

    async def renew(self, leader: int, lease_id: int, timeout: float) -> int:
        """The lease's TTL after the leader renewed it (ErrLeaseNotFound if the leader knows no such lease)."""
        body = await self._ask(leader, RENEW, rpc_pb2.LeaseKeepAliveRequest(ID=lease_id), timeout)
        return int(_parse(rpc_pb2.LeaseKeepAliveResponse, body).TTL)

    async def time_to_live(
        self, leader: int, req: rpc_pb2.LeaseTimeToLiveRequest, timeout: float
    ) -> rpc_pb2.LeaseTimeToLiveResponse:
        body = await self._ask(leader, TIME_TO_LIVE, req, timeout)
        return _parse(rpc_pb2.LeaseTimeToLiveResponse, body)

    async def promote(self, leader: int, member_id: int, timeout: float) -> None:
        await self._ask(leader, PROMOTE, rpc_pb2.MemberPromoteRequest(ID=member_id), timeout)

    async def close(self) -> None:
        """Nothing of its own to close: the call connections are the transport's."""


def _parse(cls: type[M], body: bytes) -> M:
    msg = cls()
    try:
        msg.ParseFromString(body)
    except DecodeError:
        log.warning("petcd: the leader answered a forwarded request with a malformed %s", cls.__name__)
        raise ErrNoLeader() from None
    return msg


class LeaderService:
    """The leader's side: answers the calls LeaderClient makes (the
    transport's ``on_call``), through the server's own entry points, while
    this member leads; a member that does not lead answers "not leader"
    (it never forwards a forwarded request again)."""

    def __init__(
        self,
        is_leader: Callable[[], bool],
        renew: Callable[[int], Awaitable[int]],
        time_to_live: Callable[[rpc_pb2.LeaseTimeToLiveRequest], Awaitable[rpc_pb2.LeaseTimeToLiveResponse]],
        promote: Callable[[int], Awaitable[None]],
    ) -> None:
        self.is_leader = is_leader
        self.renew = renew
        self.time_to_live = time_to_live
        self.promote = promote

    async def __call__(self, peer_id: int, kind: int, body: bytes) -> bytes:
        types = KINDS.get(kind)
        if types is None:
            raise CallFailed(f"petcd: unknown call kind {kind}")
        req = types[0]()
        try:
            req.ParseFromString(body)
        except DecodeError:
            raise CallFailed(f"petcd: malformed {types[0].__name__}") from None
        try:
            if not self.is_leader():
                raise ErrNotLeader()
            return (await self._answer(kind, req)).SerializeToString()
        except _SENT as exc:
            raise CallFailed(str(exc)) from None

    async def _answer(self, kind: int, req: Message) -> Message:
        if kind == RENEW:
            assert isinstance(req, rpc_pb2.LeaseKeepAliveRequest)
            return rpc_pb2.LeaseKeepAliveResponse(ID=req.ID, TTL=await self.renew(req.ID))
        if kind == TIME_TO_LIVE:
            assert isinstance(req, rpc_pb2.LeaseTimeToLiveRequest)
            return await self.time_to_live(req)
        assert isinstance(req, rpc_pb2.MemberPromoteRequest)
        await self.promote(req.ID)
        return rpc_pb2.MemberPromoteResponse()
