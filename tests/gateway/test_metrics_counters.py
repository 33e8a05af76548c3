"""etcd's server, lease, watch, network and (with --metrics extensive) gRPC
latency metrics move when the matching thing happens, on a 2-member cluster
(one metric set per process, so each member is scraped on its own)."""

from __future__ import annotations

import os
import signal
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from petcd.proto import rpc_pb2, rpc_pb2_grpc
from petcd.testing.harness import Server, petcd_cluster, wait_for

from .client import Http
from .test_health_metrics import scrape

# a long election timeout: a member stopped for a moment must not lose its leadership
EXTRA = ["--metrics", "extensive", "--max-txn-ops", "20000", "--election-timeout", "5000"]


@pytest.fixture(scope="module")
def members() -> Iterator[tuple[Server, Server]]:
    """(leader, follower)."""
    with tempfile.TemporaryDirectory(prefix="petcd-metrics-") as tmp:
        ms = petcd_cluster(Path(tmp), 2, extra=EXTRA)
        try:
            leader = next(m for m in ms if scrape(m.client_url)["etcd_server_is_leader"] == 1)
            yield leader, next(m for m in ms if m is not leader)
        finally:
            for m in ms:
                m.stop()


def member_id(m: Server) -> int:
    return int(m.maintenance().Status(rpc_pb2.StatusRequest(), timeout=10).header.member_id)


def grew(url: str, name: str, before: dict[str, float], by: float = 1, timeout: float = 30) -> dict[str, float]:
    """The scrape in which name has grown by at least by over before (0 if it was absent)."""
    return wait_for(lambda: (lambda s: s if s.get(name, 0) >= before.get(name, 0) + by else None)(scrape(url)),
                    timeout, f"{name} to grow by {by}")


def test_lease_counters(members: tuple[Server, Server]) -> None:
    leader, _ = members
    url = leader.client_url
    before = scrape(url)
    h = Http(url)
    status, body = h.post("/v3/lease/grant", {"TTL": "100"})
    assert status == 200
    lease_id = int(body["ID"])
    after = scrape(url)
    assert after["etcd_debugging_lease_granted_total"] == before["etcd_debugging_lease_granted_total"] + 1
    ttl = "etcd_debugging_lease_ttl_total_bucket{le=%s}"
    assert after[ttl % "128"] == before[ttl % "128"] + 1
    assert after[ttl % "64"] == before[ttl % "64"]  # 100 s is over 64
    assert after["etcd_debugging_lease_ttl_total_sum"] == before["etcd_debugging_lease_ttl_total_sum"] + 100
    stub = rpc_pb2_grpc.LeaseStub(leader.channel())
    replies = stub.LeaseKeepAlive(iter([rpc_pb2.LeaseKeepAliveRequest(ID=lease_id)]), timeout=10)
    assert next(iter(replies)).TTL == 100
    after = grew(url, "etcd_debugging_lease_renewed_total", before)
    assert after["etcd_debugging_lease_revoked_total"] == before["etcd_debugging_lease_revoked_total"]
    assert h.post("/v3/lease/revoke", {"ID": str(lease_id)})[0] == 200
    after = scrape(url)
    assert after["etcd_debugging_lease_revoked_total"] == before["etcd_debugging_lease_revoked_total"] + 1


def _watch(server: Server, key: bytes, range_end: bytes, stop: threading.Event, seconds: float) -> Any:
    """A Watch stream with one watcher on [key, range_end), open until stop is set."""

    def requests() -> Iterator[rpc_pb2.WatchRequest]:
        yield rpc_pb2.WatchRequest(create_request=rpc_pb2.WatchCreateRequest(key=key, range_end=range_end))
        stop.wait(seconds)

    return rpc_pb2_grpc.WatchStub(server.channel()).Watch(requests(), timeout=seconds)


def test_watch_counters(members: tuple[Server, Server]) -> None:
    leader, _ = members
    url = leader.client_url
    before = scrape(url)
    assert before["etcd_debugging_mvcc_watcher_total"] == 0
    stop = threading.Event()
    stream = _watch(leader, b"w/", b"w0", stop, 60)
    try:
        got = iter(stream)
        assert next(got).created
        assert scrape(url)["etcd_debugging_mvcc_watcher_total"] == 1
        assert scrape(url)["etcd_debugging_mvcc_watch_stream_total"] == before["etcd_debugging_mvcc_watch_stream_total"] + 1
        for i in range(3):
            leader.kv().Put(rpc_pb2.PutRequest(key=f"w/{i}".encode(), value=b"v"), timeout=10)
        seen = 0
        while seen < 3:
            seen += len(next(got).events)
        assert scrape(url)["etcd_debugging_mvcc_events_total"] == before["etcd_debugging_mvcc_events_total"] + 3
    finally:
        stop.set()
        stream.cancel()
    wait_for(lambda: scrape(url)["etcd_debugging_mvcc_watcher_total"] == 0, 30, "the watcher to go")
    wait_for(lambda: scrape(url)["etcd_debugging_mvcc_watch_stream_total"] == 0, 30, "the stream to go")


def test_slow_watcher_and_pending_events(members: tuple[Server, Server]) -> None:
    """A client that does not read its watch stream: once flow control
    stops the stream, events wait in its outbox (pending) until it is full,
    and the watcher is parked behind the store (a slow watcher); reading
    again drains both."""
    leader, _ = members
    url = leader.client_url
    before = scrape(url)
    assert before["etcd_debugging_mvcc_slow_watcher_total"] == 0
    assert before["etcd_debugging_mvcc_pending_events_total"] == 0
    stop = threading.Event()
    stream = _watch(leader, b"slow-w/", b"slow-w0", stop, 120)
    n = 40
    try:
        got = iter(stream)
        assert next(got).created
        for i in range(n):  # 40 MB: far over what the transport and the outbox hold
            leader.kv().Put(rpc_pb2.PutRequest(key=b"slow-w/%d" % i, value=b"x" * 1_000_000), timeout=30)
        seen = scrape(url)
        assert seen["etcd_debugging_mvcc_pending_events_total"] > 0
        assert seen["etcd_debugging_mvcc_slow_watcher_total"] == 1
        count = 0
        while count < n:
            count += len(next(got).events)
        wait_for(lambda: (lambda s: s["etcd_debugging_mvcc_slow_watcher_total"] == 0
                          and s["etcd_debugging_mvcc_pending_events_total"] == 0)(scrape(url)), 30, "the backlog to drain")
    finally:
        stop.set()
        stream.cancel()
    wait_for(lambda: scrape(url)["etcd_debugging_mvcc_watch_stream_total"] == 0, 30, "the stream to go")


def test_peer_bytes(members: tuple[Server, Server]) -> None:
    leader, follower = members
    lid, fid = format(member_id(leader), "x"), format(member_id(follower), "x")
    sent, received = f"etcd_network_peer_sent_bytes_total{{To={fid}}}", f"etcd_network_peer_received_bytes_total{{From={lid}}}"
    before_l, before_f = scrape(leader.client_url), scrape(follower.client_url)
    assert before_l[sent] > 0 and before_f[received] > 0  # heartbeats at least
    leader.kv().Put(rpc_pb2.PutRequest(key=b"big", value=b"x" * 100_000), timeout=10)
    # the entry goes out once and comes back nowhere else
    grew(leader.client_url, sent, before_l, by=100_000)
    grew(follower.client_url, received, before_f, by=100_000)


def test_slow_apply(members: tuple[Server, Server]) -> None:
    """20,000 puts in one txn take far over etcd's 100 ms to apply in petcd."""
    leader, _ = members
    before = scrape(leader.client_url)
    ops = [rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=b"slow/%05d" % i, value=b"v")) for i in range(20_000)]
    assert leader.kv().Txn(rpc_pb2.TxnRequest(success=ops), timeout=60).succeeded
    grew(leader.client_url, "etcd_server_slow_apply_total", before)


def test_handling_seconds_with_metrics_extensive(members: tuple[Server, Server]) -> None:
    leader, _ = members
    key = "grpc_server_handling_seconds_count{grpc_method=Range,grpc_service=etcdserverpb.KV,grpc_type=unary}"
    before = scrape(leader.client_url)
    # every method is there from the start, as etcd initializes them
    assert "grpc_server_handling_seconds_count{grpc_method=Compact,grpc_service=etcdserverpb.KV,grpc_type=unary}" in before
    leader.kv().Range(rpc_pb2.RangeRequest(key=b"x"), timeout=10)
    after = scrape(leader.client_url)
    assert after[key] == before[key] + 1
    assert after[key.replace("_count", "_sum")] > before[key.replace("_count", "_sum")]
    inf = key.replace("_count{", "_bucket{").replace("}", ",le=+Inf}")
    assert after[inf] == after[key]


def test_no_handling_seconds_with_basic_metrics(petcd_gw: str) -> None:
    assert not any(k.startswith("grpc_server_handling_seconds") for k in scrape(petcd_gw))


def test_heartbeat_send_failures_when_the_leader_stalls(members: tuple[Server, Server]) -> None:
    """A leader stopped for 6 heartbeat intervals sends its next heartbeat late."""
    leader, _ = members
    assert leader.proc is not None
    before = scrape(leader.client_url)
    os.kill(leader.proc.pid, signal.SIGSTOP)
    try:
        time.sleep(0.6)  # the stall itself is what is tested (well under the 5 s election timeout)
    finally:
        os.kill(leader.proc.pid, signal.SIGCONT)
    after = grew(leader.client_url, "etcd_server_heartbeat_send_failures_total", before)
    assert after["etcd_server_is_leader"] == 1


def test_proposals_pending_and_failed(members: tuple[Server, Server]) -> None:
    """With the follower stopped, a put waits (pending 1) and, given up by
    its client, counts as failed."""
    leader, follower = members
    assert follower.proc is not None
    url = leader.client_url
    before = scrape(url)
    assert before["etcd_server_proposals_pending"] == 0
    os.kill(follower.proc.pid, signal.SIGSTOP)
    errors: list[grpc.StatusCode] = []

    def put() -> None:
        try:
            leader.kv().Put(rpc_pb2.PutRequest(key=b"stuck", value=b"v"), timeout=3)
        except grpc.RpcError as exc:
            errors.append(exc.code())

    t = threading.Thread(target=put)
    try:
        t.start()
        wait_for(lambda: scrape(url)["etcd_server_proposals_pending"] == 1, 30, "the put to be pending")
        t.join(60)
    finally:
        os.kill(follower.proc.pid, signal.SIGCONT)
    assert errors == [grpc.StatusCode.DEADLINE_EXCEEDED]
    grew(url, "etcd_server_proposals_failed_total", before)
    wait_for(lambda: scrape(url)["etcd_server_proposals_pending"] == 0, 30, "nothing pending")
