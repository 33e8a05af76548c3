"""What only the leader answers, asked of a follower, with real processes:
lease keep-alive and time-to-live and learner promotion are forwarded to the
leader over the peer port (petcd/server/leader_client.py), as etcd forwards
them to its leader's peer handlers. The members advertise a client URL that
nobody listens on, so none of this may go through the leader's client port.
The outcomes a client sees are compared with real etcd's.
"""

from __future__ import annotations

import re
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest

from petcd.proto import rpc_pb2, rpc_pb2_grpc
from petcd.testing.harness import (
    Server,
    etcd_cluster,
    free_port,
    petcd_cluster,
    petcd_joiner,
    wait_for,
    when_healthy,
)
from tests.cluster.helpers import leader, status

pytestmark = pytest.mark.timeout(600)

NOT_READY = "etcdserver: can only promote a learner member which is in sync with leader"


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[list[Server]]:
    nowhere = f"http://127.0.0.1:{free_port()}"  # every member's advertised client URL: nobody listens there
    members = petcd_cluster(tmp_path, 3, extra=["--advertise-client-urls", nowhere])
    yield members
    for m in members:
        m.stop()


def a_follower(members: list[Server]) -> Server:
    lead = leader(members)
    return next(m for m in members if m is not lead)


def keepalive_once(lease: rpc_pb2_grpc.LeaseStub, lease_id: int) -> rpc_pb2.LeaseKeepAliveResponse:
    stream = lease.LeaseKeepAlive(iter([rpc_pb2.LeaseKeepAliveRequest(ID=lease_id)]), timeout=30)
    try:
        resp: rpc_pb2.LeaseKeepAliveResponse = next(stream)
        return resp
    finally:
        stream.cancel()


def test_a_lease_kept_alive_through_a_follower_outlives_its_ttl(cluster: list[Server]) -> None:
    lead = leader(cluster)
    follower = a_follower(cluster)
    members = rpc_pb2_grpc.ClusterStub(follower.channel()).MemberList(rpc_pb2.MemberListRequest(), timeout=30)
    assert all(u != follower.endpoint for mem in members.members for u in mem.clientURLs)
    lease = rpc_pb2_grpc.LeaseStub(follower.channel())
    ttl = 3
    granted = lease.LeaseGrant(rpc_pb2.LeaseGrantRequest(TTL=ttl), timeout=30)
    follower.kv().Put(rpc_pb2.PutRequest(key=b"held", value=b"v", lease=granted.ID), timeout=30)
    start = time.monotonic()
    renewals = 0
    # one keep-alive stream, renewing every second for three TTLs; the leader's clock decides expiry
    def requests() -> Iterator[rpc_pb2.LeaseKeepAliveRequest]:
        while time.monotonic() - start < 3 * ttl:
            yield rpc_pb2.LeaseKeepAliveRequest(ID=granted.ID)
            time.sleep(1)  # the keep-alive cadence of the scenario, not a wait for a condition

    for resp in lease.LeaseKeepAlive(requests(), timeout=60):
        assert (resp.ID, resp.TTL) == (granted.ID, ttl)
        renewals += 1
    assert renewals >= 3 * ttl - 1
    # still alive on the leader, past three of its TTLs, with its key
    on_leader = rpc_pb2_grpc.LeaseStub(lead.channel()).LeaseTimeToLive(
        rpc_pb2.LeaseTimeToLiveRequest(ID=granted.ID), timeout=30)
    assert 0 < on_leader.TTL <= ttl
    assert lead.kv().Range(rpc_pb2.RangeRequest(key=b"held"), timeout=30).count == 1
    # left alone, it expires (the renewals were real, not a lease that never expires)
    wait_for(lambda: lease.LeaseTimeToLive(rpc_pb2.LeaseTimeToLiveRequest(ID=granted.ID), timeout=30).TTL == -1,
             30, "the lease to expire once no longer kept alive")
    assert follower.kv().Range(rpc_pb2.RangeRequest(key=b"held"), timeout=30).count == 0


def test_time_to_live_through_a_follower_is_the_leaders(cluster: list[Server]) -> None:
    lead = leader(cluster)
    follower = a_follower(cluster)
    lease = rpc_pb2_grpc.LeaseStub(follower.channel())
    granted = lease.LeaseGrant(rpc_pb2.LeaseGrantRequest(TTL=60), timeout=30)
    for key in (b"b", b"a"):
        follower.kv().Put(rpc_pb2.PutRequest(key=key, value=b"v", lease=granted.ID), timeout=30)
    got = lease.LeaseTimeToLive(rpc_pb2.LeaseTimeToLiveRequest(ID=granted.ID, keys=True), timeout=30)
    on_leader = rpc_pb2_grpc.LeaseStub(lead.channel()).LeaseTimeToLive(
        rpc_pb2.LeaseTimeToLiveRequest(ID=granted.ID, keys=True), timeout=30)
    assert (got.ID, got.grantedTTL, list(got.keys)) == (granted.ID, 60, [b"a", b"b"])
    assert 0 < got.TTL <= 60 and abs(got.TTL - on_leader.TTL) <= 1
    assert got.header.member_id == status(follower).header.member_id  # answered by the follower, for the client
    # hundreds of renewals through one follower at once: one connection to the leader carries them all
    with ThreadPoolExecutor(16) as pool:
        ttls = list(pool.map(lambda _: keepalive_once(lease, granted.ID).TTL, range(300)))
    assert ttls == [60] * 300


def test_renewals_follow_the_leadership_when_it_moves(cluster: list[Server]) -> None:
    old = leader(cluster)
    follower = a_follower(cluster)
    target = next(m for m in cluster if m is not old and m is not follower)
    lease = rpc_pb2_grpc.LeaseStub(follower.channel())
    granted = lease.LeaseGrant(rpc_pb2.LeaseGrantRequest(TTL=60), timeout=30)
    assert keepalive_once(lease, granted.ID).TTL == 60
    old.maintenance().MoveLeader(rpc_pb2.MoveLeaderRequest(targetID=status(target).header.member_id), timeout=30)
    assert leader(cluster) is target
    # the follower now asks the new leader; the old leader, now a follower, asks it too
    for m in (follower, old):
        stub = rpc_pb2_grpc.LeaseStub(m.channel())
        assert keepalive_once(stub, granted.ID).TTL == 60
        ttl = stub.LeaseTimeToLive(rpc_pb2.LeaseTimeToLiveRequest(ID=granted.ID), timeout=30)
        assert 55 <= ttl.TTL <= 60 and ttl.grantedTTL == 60


def test_a_renewal_through_a_follower_rides_out_the_leaders_death(cluster: list[Server]) -> None:
    """As etcd, a follower keeps trying the leader until the request
    timeout: a keep-alive and a TTL query sent the moment the leader dies
    wait for the next election and are answered, instead of failing with
    "no leader" (a client's keep-alive would otherwise lose its turn, and a
    short lease could expire)."""
    old = leader(cluster)
    follower = a_follower(cluster)
    lease = rpc_pb2_grpc.LeaseStub(follower.channel())
    granted = lease.LeaseGrant(rpc_pb2.LeaseGrantRequest(TTL=60), timeout=30)
    old.kill()
    with ThreadPoolExecutor(2) as pool:
        renewed = pool.submit(keepalive_once, lease, granted.ID)
        ttl = pool.submit(lease.LeaseTimeToLive, rpc_pb2.LeaseTimeToLiveRequest(ID=granted.ID), timeout=30)
        assert renewed.result(60).TTL == 60
        assert ttl.result(60).grantedTTL == 60
    assert leader([m for m in cluster if m is not old]) is not old


def outcomes(members: list[Server], lead: Server, follower: Server, learner_peer: str) -> dict[str, object]:
    """What a client sees asking a follower the things only the leader answers."""
    lease = rpc_pb2_grpc.LeaseStub(follower.channel())
    out: dict[str, object] = {}
    out["keepalive unknown lease"] = keepalive_once(lease, 0x1234).TTL
    out["ttl unknown lease"] = lease.LeaseTimeToLive(rpc_pb2.LeaseTimeToLiveRequest(ID=0x1234), timeout=30).TTL
    granted = lease.LeaseGrant(rpc_pb2.LeaseGrantRequest(TTL=30), timeout=30)
    out["keepalive"] = keepalive_once(lease, granted.ID).TTL
    ttl = lease.LeaseTimeToLive(rpc_pb2.LeaseTimeToLiveRequest(ID=granted.ID), timeout=30)
    out["ttl granted"] = (ttl.grantedTTL, 0 < ttl.TTL <= 30)
    cluster = rpc_pb2_grpc.ClusterStub(lead.channel())

    added = when_healthy(lambda: cluster.MemberAdd(
        rpc_pb2.MemberAddRequest(peerURLs=[learner_peer], isLearner=True), timeout=30))
    wait_for(lambda: any(m.ID == added.member.ID for m in rpc_pb2_grpc.ClusterStub(follower.channel()).MemberList(
        rpc_pb2.MemberListRequest(), timeout=30).members), 30, "the follower to know the learner")
    with pytest.raises(grpc.RpcError) as err:  # never started: the leader sees it far behind
        rpc_pb2_grpc.ClusterStub(follower.channel()).MemberPromote(
            rpc_pb2.MemberPromoteRequest(ID=added.member.ID), timeout=30)
    out["promote a learner not in sync"] = (err.value.code(), err.value.details())
    cluster.MemberRemove(rpc_pb2.MemberRemoveRequest(ID=added.member.ID), timeout=30)
    return out


def test_follower_answers_and_errors_match_etcds(cluster: list[Server], tmp_path: Path) -> None:
    lead = leader(cluster)
    ours = outcomes(cluster, lead, a_follower(cluster), f"http://127.0.0.1:{free_port()}")
    assert ours["promote a learner not in sync"] == (grpc.StatusCode.FAILED_PRECONDITION, NOT_READY)
    (tmp_path / "etcd").mkdir()
    etcd = etcd_cluster(tmp_path / "etcd", 3)
    try:
        theirs = outcomes(etcd, leader(etcd), a_follower(etcd), f"http://127.0.0.1:{free_port()}")
    finally:
        for m in etcd:
            m.stop()
    assert ours == theirs


def test_a_learner_is_promoted_through_a_follower(cluster: list[Server], tmp_path: Path) -> None:
    lead = leader(cluster)
    peer = f"http://127.0.0.1:{free_port()}"
    added = when_healthy(lambda: rpc_pb2_grpc.ClusterStub(lead.channel()).MemberAdd(
        rpc_pb2.MemberAddRequest(peerURLs=[peer], isLearner=True), timeout=30))
    initial = ",".join(f"{m.name or 'm3'}={m.peerURLs[0]}" for m in added.members)
    new = petcd_joiner(tmp_path, "m3", peer, initial).start()
    try:
        follower = a_follower(cluster)
        stub = rpc_pb2_grpc.ClusterStub(follower.channel())

        def promoted() -> bool:
            try:
                stub.MemberPromote(rpc_pb2.MemberPromoteRequest(ID=added.member.ID), timeout=30)
            except grpc.RpcError as exc:
                assert (exc.code(), exc.details()) == (grpc.StatusCode.FAILED_PRECONDITION, NOT_READY)
                return False
            return True

        wait_for(promoted, 60, "the learner to be promoted through a follower")

        def four_voters() -> bool:
            # the follower's list is its own (as etcd's): it shows the
            # promotion once the follower has applied it
            listed = stub.MemberList(rpc_pb2.MemberListRequest(), timeout=30).members
            return len(listed) == 4 and not any(m.isLearner for m in listed)

        wait_for(four_voters, 30, "the follower to list four voters")
        wait_for(lambda: not status(new).isLearner, 30, "the new member to know it is a voter")
    finally:
        new.stop()


def scrape(m: Server) -> str:
    with urllib.request.urlopen(f"{m.client_url}/metrics", timeout=30) as resp:
        text: str = resp.read().decode()
        return text


RTT = "etcd_network_peer_round_trip_time_seconds"


def rtt_series(text: str) -> dict[str, list[str]]:
    """Peer id -> the bucket bounds of its round-trip histogram."""
    out: dict[str, list[str]] = {}
    for to, le in re.findall(RTT + r'_bucket\{To="([0-9a-f]+)",le="([^"]+)"\}', text):
        out.setdefault(to, []).append(le)
    return out


def test_round_trip_times_to_every_peer_are_in_metrics(cluster: list[Server], tmp_path: Path) -> None:
    ids = [format(status(m).header.member_id, "x") for m in cluster]
    for i, m in enumerate(cluster):
        others = set(ids) - {ids[i]}
        wait_for(lambda m=m, others=others: set(rtt_series(scrape(m))) == others, 30,  # type: ignore[misc]
                 "a round-trip time to every other member")
    text = scrape(cluster[0])
    ours_help = re.search(f"# HELP {RTT} (.*)", text)
    for to in rtt_series(text):
        count = re.search(RTT + r'_count\{To="' + to + r'"\} (\S+)', text)
        total = re.search(RTT + r'_sum\{To="' + to + r'"\} (\S+)', text)
        assert count and total and float(count.group(1)) >= 1 and 0 < float(total.group(1)) / float(count.group(1)) < 1
    (tmp_path / "etcd").mkdir()
    etcd = etcd_cluster(tmp_path / "etcd", 3)
    try:
        theirs = wait_for(lambda: rtt_series(scrape(etcd[0])) and scrape(etcd[0]), 60,
                          "etcd to report a round-trip time")
    finally:
        for m in etcd:
            m.stop()
    their_help = re.search(f"# HELP {RTT} (.*)", theirs)
    assert ours_help and their_help and ours_help.group(1) == their_help.group(1)
    assert next(iter(rtt_series(text).values())) == next(iter(rtt_series(theirs).values()))
