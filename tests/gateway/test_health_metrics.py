"""/health, /livez, /readyz, /version and /metrics on petcd's HTTP port."""

from __future__ import annotations

import socket
from base64 import b64encode
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from petcd.testing.harness import petcd_server, wait_for

from .client import Http


def b64(s: str) -> str:
    return b64encode(s.encode()).decode()


def scrape(url: str) -> dict[str, float]:
    status, headers, body = Http(url).request("GET", "/metrics")
    assert status == 200
    assert headers["content-type"].startswith("text/plain; version=0.0.4")
    out: dict[str, float] = {}
    for fam in text_string_to_metric_families(body.decode()):
        for s in fam.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
            out[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
    return out


def test_metrics_parse_and_move(petcd_gw: str) -> None:
    before = scrape(petcd_gw)
    for name in ("etcd_server_has_leader", "etcd_server_is_leader", "etcd_mvcc_db_total_size_in_bytes",
                 "etcd_debugging_mvcc_keys_total", "etcd_server_proposals_committed_total",
                 "etcd_server_proposals_applied_total", "process_resident_memory_bytes",
                 "etcd_disk_wal_fsync_duration_seconds_count", "etcd_disk_backend_commit_duration_seconds_count"):
        assert name in before, name
    assert before["etcd_server_has_leader"] == 1
    assert before["etcd_server_leader_changes_seen_total"] == 1  # its own election
    assert before["etcd_server_is_leader"] == 1
    h = Http(petcd_gw)
    for i in range(3):
        assert h.post("/v3/kv/put", {"key": b64(f"metric{i}"), "value": b64("v")})[0] == 200
    h.post("/v3/kv/range", {"key": b64("metric0")})
    assert h.post("/v3/kv/deleterange", {"key": b64("metric0")})[0] == 200
    assert h.post("/v3/kv/txn", {"success": [{"request_put": {"key": b64("metric0"), "value": b64("w")}}]})[0] == 200
    assert h.post("/v3/kv/put", {"key": b64("big"), "value": b64("x" * 10_000)})[0] == 200
    after = scrape(petcd_gw)
    # etcd 3.4 serves the mvcc operation counts under both names
    for op in ("put", "range", "delete", "txn"):
        assert after[f"etcd_debugging_mvcc_{op}_total"] == after[f"etcd_mvcc_{op}_total"]
        assert after[f"etcd_debugging_mvcc_{op}_total"] > before[f"etcd_debugging_mvcc_{op}_total"], op
    # the entries (keys, values, framing) went to the WAL
    assert after["etcd_disk_wal_write_bytes_total"] >= before["etcd_disk_wal_write_bytes_total"] + 10_000
    assert after["etcd_mvcc_put_total"] >= before["etcd_mvcc_put_total"] + 3
    assert after["etcd_mvcc_range_total"] > before["etcd_mvcc_range_total"]
    assert after["etcd_disk_wal_fsync_duration_seconds_count"] >= before["etcd_disk_wal_fsync_duration_seconds_count"] + 3
    assert after["etcd_debugging_mvcc_keys_total"] >= before["etcd_debugging_mvcc_keys_total"] + 3
    assert after["etcd_server_proposals_applied_total"] >= before["etcd_server_proposals_applied_total"] + 3
    handled = "grpc_server_handled_total{grpc_code=OK,grpc_method=Put,grpc_service=etcdserverpb.KV,grpc_type=unary}"
    assert after.get(handled, 0) >= before.get(handled, 0) + 3


def test_version(petcd_gw: str) -> None:
    status, headers, body = Http(petcd_gw).request("GET", "/version")
    assert (status, headers["content-type"], body) == (200, "application/json",
                                                       b'{"etcdserver":"3.4.23","etcdcluster":"3.4.0"}')


def test_health_turns_with_nospace_alarm(petcd_gw: str) -> None:
    h = Http(petcd_gw)
    before = scrape(petcd_gw)
    assert h.request("GET", "/health")[::2] == (200, b'{"health":"true"}')
    assert scrape(petcd_gw)["etcd_server_health_success_total"] == before["etcd_server_health_success_total"] + 1
    assert h.request("GET", "/livez")[::2] == (200, b"ok")
    assert h.request("GET", "/readyz")[::2] == (200, b"ok")
    member = h.post("/v3/maintenance/status", {})[1]["header"]["member_id"]
    alarm = {"memberID": member, "alarm": "NOSPACE"}
    assert h.post("/v3/maintenance/alarm", {"action": "ACTIVATE", **alarm})[0] == 200
    try:
        assert h.request("GET", "/health")[::2] == (503, b'{"health":"false"}')
        after = scrape(petcd_gw)
        assert after["etcd_server_health_failures_total"] == before["etcd_server_health_failures_total"] + 1
        assert after["etcd_server_health_success_total"] == before["etcd_server_health_success_total"] + 1
        status, body = h.post("/v3/kv/put", {"key": b64("full"), "value": b64("x")})
        assert (status, body["code"], body["error"]) == (429, 8, "etcdserver: mvcc: database space exceeded")
    finally:
        assert h.post("/v3/maintenance/alarm", {"action": "DEACTIVATE", **alarm})[0] == 200
    assert h.request("GET", "/health")[::2] == (200, b'{"health":"true"}')
    assert h.request("POST", "/health")[0] == 405
    status, _, body = h.request("GET", "/readyz?verbose")
    assert status == 200
    assert body.decode().splitlines() == ["[+]data_corruption ok", "[+]serializable_read ok",
                                          "[+]linearizable_read ok", "readyz check passed"]
    assert h.request("GET", "/livez/serializable_read")[::2] == (200, b"ok")


def test_etcdctl_check_datascale(petcd_gw: str) -> None:
    """etcdctl's data-scale check writes 10,000 keys and reads the member's
    memory from /metrics (process_resident_memory_bytes)."""
    from petcd.testing.harness import etcdctl

    cp = etcdctl(petcd_gw.removeprefix("http://"), "check", "datascale", "--load=s", timeout=300)
    assert "PASS: Approximate system memory used" in cp.stdout, cp.stdout + cp.stderr


def test_grpc_calls_counted(petcd_gw: str) -> None:
    """Calls over gRPC count as etcd's go-grpc-prometheus counts them, codes included."""
    import grpc

    from petcd.proto import rpc_pb2, rpc_pb2_grpc

    key = "grpc_server_handled_total{grpc_code=%s,grpc_method=%s,grpc_service=etcdserverpb.KV,grpc_type=unary}"
    before = scrape(petcd_gw)
    with grpc.insecure_channel(petcd_gw.removeprefix("http://")) as ch:
        kv = rpc_pb2_grpc.KVStub(ch)
        kv.Range(rpc_pb2.RangeRequest(key=b"x"), timeout=10)
        try:
            kv.Put(rpc_pb2.PutRequest(key=b""), timeout=10)
        except grpc.RpcError as exc:
            assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT
    after = scrape(petcd_gw)
    assert after[key % ("OK", "Range")] == before.get(key % ("OK", "Range"), 0) + 1
    assert after[key % ("InvalidArgument", "Put")] == before.get(key % ("InvalidArgument", "Put"), 0) + 1
    started = "grpc_server_started_total{grpc_method=Range,grpc_service=etcdserverpb.KV,grpc_type=unary}"
    assert after[started] == before.get(started, 0) + 1
    # a unary call: one message each way (none sent for the failed Put), as go-grpc-prometheus
    msgs = "grpc_server_msg_%s_total{grpc_method=%s,grpc_service=etcdserverpb.KV,grpc_type=unary}"
    assert after[msgs % ("received", "Range")] == before.get(msgs % ("received", "Range"), 0) + 1
    assert after[msgs % ("sent", "Range")] == before.get(msgs % ("sent", "Range"), 0) + 1
    assert after[msgs % ("received", "Put")] == before.get(msgs % ("received", "Put"), 0) + 1
    assert after.get(msgs % ("sent", "Put"), 0) == before.get(msgs % ("sent", "Put"), 0)
    # the Python client sends no client-api-version: etcd labels that unknown
    unary = "etcd_server_client_requests_total{client_api_version=unknown,type=unary}"
    assert after[unary] >= before.get(unary, 0) + 2


def test_client_requests_by_api_version_and_stream_messages(petcd_gw: str) -> None:
    """etcd_server_client_requests_total counts calls (a stream once) by the
    client's client-api-version; a stream's messages count one by one."""
    import grpc

    from petcd.proto import rpc_pb2, rpc_pb2_grpc

    md = [("client-api-version", "3.4")]
    unary = "etcd_server_client_requests_total{client_api_version=3.4,type=unary}"
    stream = "etcd_server_client_requests_total{client_api_version=3.4,type=stream}"
    watch = "grpc_server_msg_%s_total{grpc_method=Watch,grpc_service=etcdserverpb.Watch,grpc_type=bidi_stream}"
    before = scrape(petcd_gw)
    with grpc.insecure_channel(petcd_gw.removeprefix("http://")) as ch:
        rpc_pb2_grpc.KVStub(ch).Range(rpc_pb2.RangeRequest(key=b"x"), timeout=10, metadata=md)
        creates = [rpc_pb2.WatchRequest(create_request=rpc_pb2.WatchCreateRequest(key=b"msg/%d" % i)) for i in range(2)]
        calls = rpc_pb2_grpc.WatchStub(ch).Watch(iter(creates), timeout=10, metadata=md)
        got = iter(calls)
        assert next(got).created and next(got).created
        rpc_pb2_grpc.KVStub(ch).Put(rpc_pb2.PutRequest(key=b"msg/0", value=b"v"), timeout=10)
        assert len(next(got).events) == 1
        after = scrape(petcd_gw)
        calls.cancel()
    assert after[unary] == before.get(unary, 0) + 1
    assert after[stream] == before.get(stream, 0) + 1
    assert after[watch % "received"] == before.get(watch % "received", 0) + 2
    assert after[watch % "sent"] == before.get(watch % "sent", 0) + 3  # two created, one event


def test_fd_gauges(tmp_path: Path) -> None:
    """os_fd_used counts the member's open descriptors (each client
    connection is one more); os_fd_limit is its RLIMIT_NOFILE soft limit.
    A member of its own: on the module's, connections that earlier tests
    left behind close at their own pace and move the count under this test."""
    server = petcd_server(tmp_path).start()
    try:
        url = server.client_url
        before = scrape(url)
        assert 0 < before["os_fd_used"] < before["os_fd_limit"]
        host, port = url.removeprefix("http://").rsplit(":", 1)
        conns = [socket.create_connection((host, int(port)), timeout=10) for _ in range(5)]
        try:
            wait_for(lambda: scrape(url)["os_fd_used"] >= before["os_fd_used"] + 5, 30, "5 more descriptors")
        finally:
            for c in conns:
                c.close()
        wait_for(lambda: scrape(url)["os_fd_used"] <= before["os_fd_used"], 30, "the connections' descriptors to go")
    finally:
        server.stop()


def test_expired_leases_counted(petcd_gw: str) -> None:
    """A lease left to expire is revoked by the leader and counted; one
    revoked by its client is not."""
    h = Http(petcd_gw)
    before = scrape(petcd_gw)
    revoked = h.post("/v3/lease/grant", {"TTL": "60"})[1]["ID"]
    assert h.post("/v3/lease/revoke", {"ID": revoked})[0] == 200
    assert h.post("/v3/lease/grant", {"TTL": "1"})[0] == 200
    after = wait_for(lambda: (lambda s: s if s["etcd_debugging_lease_revoked_total"]
                              >= before["etcd_debugging_lease_revoked_total"] + 2 else None)(scrape(petcd_gw)),
                     30, "the lease to expire")
    assert after["etcd_debugging_server_lease_expired_total"] == before["etcd_debugging_server_lease_expired_total"] + 1
