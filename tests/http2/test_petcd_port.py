"""petcd's client port on the new front end, end to end with a real petcd
process and grpcio as the client: what changed with it (a port in use fails
before anything else happens, a half-closed Watch keeps delivering, health,
malformed requests) and that many clients at once are served."""

from __future__ import annotations

import queue
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from petcd.proto import rpc_pb2, rpc_pb2_grpc
from petcd.testing.harness import Server, etcd_server, petcd_server


@pytest.fixture(scope="module")
def petcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    s = petcd_server(tmp_path_factory.mktemp("port")).start()
    yield s
    s.stop()


def test_port_in_use_fails_at_once_and_touches_nothing(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        s = petcd_server(tmp_path)
        s.args[s.args.index("--listen-client-urls") + 1] = f"http://127.0.0.1:{port}"
        t0 = time.monotonic()
        proc = subprocess.run(s.args, capture_output=True, text=True, timeout=60)
        assert proc.returncode != 0
        assert f"listen tcp 127.0.0.1:{port}: bind: address already in use" in proc.stdout + proc.stderr
        assert time.monotonic() - t0 < 30
        # it never bootstrapped: no data dir, no member elected itself
        assert not s.data_dir.exists()
        assert "became leader" not in proc.stdout + proc.stderr


def test_half_closed_watch_keeps_delivering(petcd: Server) -> None:
    """A client whose request iterator ends (grpcio, grpcurl) still gets
    events, as with etcd."""
    ch = petcd.channel()
    watch = rpc_pb2_grpc.WatchStub(ch).Watch(
        iter([rpc_pb2.WatchRequest(create_request=rpc_pb2.WatchCreateRequest(key=b"hc/", range_end=b"hc0"))]),
        timeout=60,
    )
    got: queue.Queue[rpc_pb2.WatchResponse | BaseException] = queue.Queue()

    def read() -> None:
        try:
            for resp in watch:
                got.put(resp)
        except BaseException as exc:
            got.put(exc)

    threading.Thread(target=read, daemon=True).start()
    created = got.get(timeout=30)
    assert isinstance(created, rpc_pb2.WatchResponse) and created.created
    time.sleep(0.3)  # the half-close has reached the server by now
    kv = petcd.kv()
    for i in range(3):
        kv.Put(rpc_pb2.PutRequest(key=b"hc/%d" % i, value=b"v"), timeout=30)
    keys: list[bytes] = []
    while len(keys) < 3:
        item = got.get(timeout=30)
        assert isinstance(item, rpc_pb2.WatchResponse), item
        keys.extend(ev.kv.key for ev in item.events)
    assert keys == [b"hc/0", b"hc/1", b"hc/2"]
    watch.cancel()


def test_health_service(petcd: Server) -> None:
    stub = health_pb2_grpc.HealthStub(petcd.channel())
    assert stub.Check(health_pb2.HealthCheckRequest(), timeout=10).status == health_pb2.HealthCheckResponse.SERVING
    with pytest.raises(grpc.RpcError) as ei:
        stub.Check(health_pb2.HealthCheckRequest(service="nope"), timeout=10)
    assert ei.value.code() == grpc.StatusCode.NOT_FOUND


def test_malformed_request_is_etcds_internal_error(petcd: Server) -> None:
    raw = petcd.channel().unary_unary("/etcdserverpb.KV/Range", request_serializer=lambda b: b,
                                      response_deserializer=lambda b: b)
    with pytest.raises(grpc.RpcError) as ei:
        raw(b"\xff\xff\xff", timeout=10)
    assert ei.value.code() == grpc.StatusCode.INTERNAL
    assert str(ei.value.details()).startswith("grpc: error unmarshalling request: ")


def test_unknown_method_and_service(petcd: Server) -> None:
    ch = petcd.channel()
    for path, msg in (
        ("/etcdserverpb.KV/Nope", "unknown method Nope for service etcdserverpb.KV"),
        ("/etcdserverpb.Nope/X", "unknown service etcdserverpb.Nope"),
    ):
        call = ch.unary_unary(path, request_serializer=lambda b: b, response_deserializer=lambda b: b)
        with pytest.raises(grpc.RpcError) as ei:
            call(b"", timeout=10)
        assert ei.value.code() == grpc.StatusCode.UNIMPLEMENTED
        assert ei.value.details() == msg


def test_thousands_of_concurrent_unary_calls(petcd: Server) -> None:
    """More than grpc's pending-call limit at once: none is CANCELLED."""
    kv = petcd.kv()
    futs = [kv.Range.future(rpc_pb2.RangeRequest(key=b"x", serializable=True), timeout=120) for _ in range(3000)]
    futs += [kv.Put.future(rpc_pb2.PutRequest(key=b"c%d" % i, value=b"v"), timeout=120) for i in range(500)]
    for f in futs:
        assert f.result().header.revision > 0


def _transport_errors(endpoint: str) -> list[tuple[grpc.StatusCode, str]]:
    ch = grpc.insecure_channel(endpoint, options=[("grpc.max_send_message_length", 64 << 20)])
    out = []
    calls = (
        lambda: rpc_pb2_grpc.KVStub(ch).Put(rpc_pb2.PutRequest(key=b"h", value=b"x" * (8 << 20)), timeout=30),
        lambda: ch.unary_unary("/etcdserverpb.KV/Nope")(b"", timeout=10),
        lambda: ch.unary_unary("/etcdserverpb.Nope/X")(b"", timeout=10),
        lambda: ch.unary_unary("etcdserverpb.KV.Range")(b"", timeout=10),
        lambda: health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service="nope"), timeout=10),
    )
    for call in calls:
        with pytest.raises(grpc.RpcError) as ei:
            call()
        out.append((ei.value.code(), str(ei.value.details())))
    ch.close()
    return out


def test_transport_errors_match_etcd(petcd: Server, tmp_path: Path) -> None:
    """What the front end itself answers (size limit, unknown method and
    service, malformed names, health of an unknown service) is etcd's code
    and wording."""
    etcd = etcd_server(tmp_path).start()
    try:
        assert _transport_errors(petcd.endpoint) == _transport_errors(etcd.endpoint)
    finally:
        etcd.stop()
