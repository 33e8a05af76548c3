"""LeaderClient and LeaderService (petcd/server/leader_client.py) over two
real peer transports on 127.0.0.1: the leader's answers and errors come back
as the same values and error types, and failures to reach the leader are
"no leader" or "request timed out", as clients expect."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

from petcd.lease.lessor import ErrLeaseNotFound
from petcd.proto import rpc_pb2
from petcd.server.errors import ErrNoLeader, ErrTimeout, ErrTooManyRequests
from petcd.server.leader_client import KINDS, LeaderClient, LeaderService, translate
from petcd.server.membership import ErrLearnerNotReady
from petcd.server.transport import PeerTransport
from petcd.server.transport.calls import CallFailed, CallTimeout, TooManyCalls
from petcd.server.transport.wire import TransportError
from petcd.testing.harness import free_port

CLUSTER = 0xC1
LEADER, FOLLOWER = 0x1, 0x2


class FakeLeader:
    """What the leader's server would do, with knobs."""

    def __init__(self) -> None:
        self.leading = True
        self.leases = {7: 30}
        self.promoted: list[int] = []
        self.hang = asyncio.Event()

    async def renew(self, lease_id: int) -> int:
        if lease_id == 99:
            await self.hang.wait()
        if lease_id not in self.leases:
            raise ErrLeaseNotFound()
        return self.leases[lease_id]

    async def time_to_live(self, req: rpc_pb2.LeaseTimeToLiveRequest) -> rpc_pb2.LeaseTimeToLiveResponse:
        if req.ID not in self.leases:
            raise ErrLeaseNotFound()
        return rpc_pb2.LeaseTimeToLiveResponse(ID=req.ID, TTL=12, grantedTTL=self.leases[req.ID],
                                               keys=[b"k"] if req.keys else [])

    async def promote(self, member_id: int) -> None:
        if member_id == 5:
            raise ErrLearnerNotReady()
        if member_id == 6:
            raise RuntimeError("a bug")
        self.promoted.append(member_id)


@asynccontextmanager
async def pair(fake: FakeLeader) -> AsyncIterator[LeaderClient]:
    service = LeaderService(lambda: fake.leading, fake.renew, fake.time_to_live, fake.promote)
    leader = PeerTransport(LEADER, CLUSTER, ["http://127.0.0.1:0"], on_message=lambda m: None, on_call=service,
                           probe_interval=0)
    follower = PeerTransport(FOLLOWER, CLUSTER, ["http://127.0.0.1:0"], on_message=lambda m: None, probe_interval=0)
    await leader.start()
    await follower.start()
    follower.add_peer(LEADER, [f"http://127.0.0.1:{leader.addresses[0][1]}"])
    follower.add_peer(0x3, [f"http://127.0.0.1:{free_port()}"])  # a leader nobody can reach
    try:
        yield LeaderClient(follower)
    finally:
        await follower.stop()
        await leader.stop()


def test_answers_and_errors_come_back_as_the_leaders() -> None:
    async def main() -> None:
        fake = FakeLeader()
        async with pair(fake) as client:
            assert await client.renew(LEADER, 7, 5) == 30
            ttl = await client.time_to_live(LEADER, rpc_pb2.LeaseTimeToLiveRequest(ID=7, keys=True), 5)
            assert (ttl.ID, ttl.TTL, ttl.grantedTTL, list(ttl.keys)) == (7, 12, 30, [b"k"])
            await client.promote(LEADER, 4, 5)
            assert fake.promoted == [4]
            with pytest.raises(ErrLeaseNotFound):
                await client.renew(LEADER, 8, 5)
            with pytest.raises(ErrLeaseNotFound):
                await client.time_to_live(LEADER, rpc_pb2.LeaseTimeToLiveRequest(ID=8), 5)
            with pytest.raises(ErrLearnerNotReady):
                await client.promote(LEADER, 5, 5)
            with pytest.raises(ErrNoLeader):  # the leader's own bug: retryable, not UNKNOWN
                await client.promote(LEADER, 6, 5)
            with pytest.raises(ErrTimeout):
                await client.renew(LEADER, 99, 0.3)
            with pytest.raises(ErrNoLeader):
                await client.renew(0x3, 7, 5)  # unreachable
            with pytest.raises(ErrNoLeader):
                await client.renew(0x4, 7, 5)  # not even a peer
            fake.leading = False  # it lost its leadership: "no leader", which clients retry
            with pytest.raises(ErrNoLeader):
                await client.renew(LEADER, 7, 5)
            fake.hang.set()

    asyncio.run(main())


def test_the_service_refuses_what_it_does_not_know() -> None:
    async def main() -> None:
        fake = FakeLeader()
        service = LeaderService(lambda: True, fake.renew, fake.time_to_live, fake.promote)
        with pytest.raises(CallFailed, match="unknown call kind"):
            await service(FOLLOWER, 200, b"")
        with pytest.raises(CallFailed, match="malformed"):
            await service(FOLLOWER, min(KINDS), b"\xff\xff")
        answer = await service(FOLLOWER, min(KINDS), rpc_pb2.LeaseKeepAliveRequest(ID=7).SerializeToString())
        assert rpc_pb2.LeaseKeepAliveResponse.FromString(answer).TTL == 30

    asyncio.run(main())


def test_translate() -> None:
    assert isinstance(translate(CallFailed(ErrLeaseNotFound.message)), ErrLeaseNotFound)
    assert isinstance(translate(CallFailed("etcdserver: not leader")), ErrNoLeader)
    assert isinstance(translate(CallFailed("etcdserver: server stopped")), ErrNoLeader)
    assert isinstance(translate(CallFailed("something else")), ErrNoLeader)
    assert isinstance(translate(CallTimeout("slow")), ErrTimeout)
    assert isinstance(translate(TransportError("gone")), ErrNoLeader)
    assert isinstance(translate(TooManyCalls("busy")), ErrTooManyRequests)
