"""Requests a follower hands to the leader over the leader's client URL:
the ones only the leader can answer (lease renewal and remaining TTL, which
live in the leader's lessor; learner promotion, which needs the leader's view
of replication)."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TypeVar

import grpc

from petcd.lease import lessor
from petcd.proto import rpc_pb2, rpc_pb2_grpc
from petcd.server import errors, membership
from petcd.server.errors import ErrNoLeader
from petcd.server.urls import parse_url

T = TypeVar("T")

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
        errors.ErrNotLeader,
        errors.ErrLeaderChanged,
        errors.ErrStopped,
        errors.ErrTimeout,
        errors.ErrTimeoutDueToLeaderFail,
        errors.ErrNotSupportedForLearner,
    )
}


def translate(exc: grpc.aio.AioRpcError) -> Exception:
    """Our error for the leader's failed answer: the one whose message the
    leader sent; anything else (the leader unreachable, gone, unknown) is
    "no leader", which clients retry."""
    known = _KNOWN.get(exc.details() or "")
    return known() if known is not None else ErrNoLeader()


async def _answer(call: Awaitable[T]) -> T:
    """The leader's answer, its errors made ours."""
    try:
        return await call
    except grpc.aio.AioRpcError as exc:
        raise translate(exc) from None


class LeaderClient:
    def __init__(self) -> None:
        self._channels: dict[str, grpc.aio.Channel] = {}

    def _channel(self, client_urls: list[str]) -> grpc.aio.Channel:
        if not client_urls:
            raise ErrNoLeader()  # the leader has not published its client URLs yet
        # A plain URL if the leader has one. Over https the system's roots verify the leader: a
        # private CA (--trusted-ca-file) is not known here yet, so such a leader is not reached.
        urls = sorted((parse_url(u) for u in client_urls), key=lambda u: u.tls)
        target = urls[0].netloc
        ch = self._channels.get(target)
        if ch is None:
            if urls[0].tls:
                ch = grpc.aio.secure_channel(target, grpc.ssl_channel_credentials())
            else:
                ch = grpc.aio.insecure_channel(target)
            self._channels[target] = ch
        return ch

    async def renew(self, client_urls: list[str], lease_id: int, timeout: float) -> int:
        return await _answer(self._renew(client_urls, lease_id, timeout))

    async def _renew(self, client_urls: list[str], lease_id: int, timeout: float) -> int:
        stub = rpc_pb2_grpc.LeaseStub(self._channel(client_urls))
        call = stub.LeaseKeepAlive(timeout=timeout)
        try:
            await call.write(rpc_pb2.LeaseKeepAliveRequest(ID=lease_id))
            resp = await call.read()
        finally:
            call.cancel()
        if resp is grpc.aio.EOF:
            raise ErrNoLeader()
        return int(resp.TTL)

    async def time_to_live(
        self, client_urls: list[str], req: rpc_pb2.LeaseTimeToLiveRequest, timeout: float
    ) -> rpc_pb2.LeaseTimeToLiveResponse:
        stub = rpc_pb2_grpc.LeaseStub(self._channel(client_urls))
        resp: rpc_pb2.LeaseTimeToLiveResponse = await _answer(stub.LeaseTimeToLive(req, timeout=timeout))
        return resp

    async def promote(self, client_urls: list[str], member_id: int, timeout: float) -> None:
        stub = rpc_pb2_grpc.ClusterStub(self._channel(client_urls))
        await _answer(stub.MemberPromote(rpc_pb2.MemberPromoteRequest(ID=member_id), timeout=timeout))

    async def close(self) -> None:
        for ch in self._channels.values():
            await ch.close()
        self._channels.clear()
