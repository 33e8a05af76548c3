"""--enable-grpc-gateway=false: the JSON API is gone from the client port
(404 as etcd answers), /health, /version and /metrics and gRPC stay."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from petcd.proto import rpc_pb2
from petcd.testing.harness import Server, etcd_server, petcd_server

from .client import Http

OFF = ["--enable-grpc-gateway=false"]
PATHS = ["/v3/kv/range", "/v3beta/kv/range", "/v3alpha/kv/range", "/v3/watch", "/v3/lock/lock"]


@pytest.fixture(scope="module")
def servers() -> Iterator[tuple[Server, Server]]:
    with tempfile.TemporaryDirectory(prefix="petcd-gwoff-") as tmp:
        p = petcd_server(Path(tmp), extra=OFF).start()
        try:
            e = etcd_server(Path(tmp), extra=OFF).start()
            try:
                yield p, e
            finally:
                e.stop()
        finally:
            p.stop()


def answers(url: str) -> list[tuple[int, str, bytes]]:
    h = Http(url)
    out = []
    for path in PATHS:
        for method in ("POST", "GET"):
            status, headers, body = h.request(method, path, b'{"key":"YQ=="}')
            out.append((status, headers.get("content-type", ""), body))
    h.close()
    return out


def test_gateway_off_answers_404_as_etcd(servers: tuple[Server, Server]) -> None:
    p, e = servers
    mine, theirs = answers(p.client_url), answers(e.client_url)
    assert mine == theirs
    assert {s for s, _, _ in mine} == {404}
    assert mine[0][2] == b"404 page not found\n"


def test_gateway_off_keeps_health_version_metrics_grpc(servers: tuple[Server, Server]) -> None:
    p, _ = servers
    h = Http(p.client_url)
    assert h.request("GET", "/health")[::2] == (200, b'{"health":"true"}')
    assert h.request("GET", "/version")[0] == 200
    status, _, body = h.request("GET", "/metrics")
    assert status == 200 and b"etcd_server_has_leader 1" in body
    p.kv().Put(rpc_pb2.PutRequest(key=b"a", value=b"b"), timeout=10)
    assert p.kv().Range(rpc_pb2.RangeRequest(key=b"a"), timeout=10).kvs[0].value == b"b"
