"""Bad input on the HTTP port: requests too large (as etcd's gateway
refuses them), a 100 MB body, slow clients; the server keeps serving."""

from __future__ import annotations

import base64
import json
import socket
import time

from petcd.testing.harness import Server

from .client import Http
from .test_differential import _dechunk


def put_body(value_size: int) -> bytes:
    return json.dumps({"key": "Zm9v", "value": base64.b64encode(b"x" * value_size).decode()}).encode()


def test_large_requests_same_as_etcd(petcd_gw: str, etcd: Server) -> None:
    for size in (3 * 1024 * 1024, 1600 * 1024, 1024 * 1024):
        a = Http(petcd_gw).request("POST", "/v3/kv/put", put_body(size))
        b = Http(etcd.client_url).request("POST", "/v3/kv/put", put_body(size))
        assert a[0] == b[0], size
        if a[0] != 200:
            assert a[2] == b[2]


def _host_port(url: str) -> tuple[str, int]:
    host, port = url.removeprefix("http://").split(":")
    return host, int(port)


def test_100mb_body_refused_and_server_keeps_serving(petcd_gw: str) -> None:
    total = 100 * 1024 * 1024
    s = socket.create_connection(_host_port(petcd_gw), timeout=30)
    s.sendall(b"POST /v3/kv/put HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % total)
    chunk = b'{"key":"' + b"A" * (1024 * 1024 - 8)
    sent = 0
    try:
        while sent < total:
            n = min(len(chunk), total - sent)
            s.sendall(chunk[:n])
            sent += n
    except (BrokenPipeError, ConnectionResetError):
        pass
    s.shutdown(socket.SHUT_WR)
    data = b""
    try:
        while True:
            got = s.recv(65536)
            if not got:
                break
            data += got
    except ConnectionResetError:
        pass
    s.close()
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 429 "), data[:200]
    # the gRPC hop's refusal, as etcd's gateway sends it: chunked, with its trailer
    assert b"Trailer: Grpc-Trailer-Content-Type" in head
    err = json.loads(_dechunk(body))
    assert err["code"] == 8 and err["error"].startswith("grpc: received message larger than max (")
    status, _ = Http(petcd_gw).post("/v3/kv/range", {"key": "Zm9v"})
    assert status == 200


def test_slow_clients_do_not_block_others(petcd_gw: str) -> None:
    slow = []
    for _ in range(20):
        s = socket.create_connection(_host_port(petcd_gw), timeout=30)
        s.sendall(b"POST /v3/kv/put HTTP/1.1\r\nHost: x\r\nContent-Le")  # and nothing more
        slow.append(s)
    body_trickle = socket.create_connection(_host_port(petcd_gw), timeout=30)
    body_trickle.sendall(b"POST /v3/kv/put HTTP/1.1\r\nHost: x\r\nContent-Length: 40\r\n\r\n{\"ke")
    try:
        started = time.monotonic()
        h = Http(petcd_gw)
        for i in range(20):
            assert h.post("/v3/kv/put", {"key": base64.b64encode(f"s{i}".encode()).decode()})[0] == 200
        assert time.monotonic() - started < 20
        # the trickling body completes, and its request is answered
        body_trickle.sendall(b'y":"Zm9v","value":"YmFy"}' + b" " * 11)
        reply = body_trickle.recv(65536)
        assert reply.startswith(b"HTTP/1.1 200 "), reply
    finally:
        for s in slow:
            s.close()
        body_trickle.close()


def test_garbage_and_pipelining(petcd_gw: str) -> None:
    s = socket.create_connection(_host_port(petcd_gw), timeout=30)
    body = b'{"key":"Zm9v"}'
    req = b"POST /v3/kv/range HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    s.sendall(req * 3)
    data = b""
    deadline = time.monotonic() + 20
    while data.count(b"HTTP/1.1 200 OK") < 3 and time.monotonic() < deadline:
        data += s.recv(65536)
    assert data.count(b"HTTP/1.1 200 OK") == 3
    s.close()
    s = socket.create_connection(_host_port(petcd_gw), timeout=30)
    s.sendall(b"NOT HTTP AT ALL\r\n\r\n")
    reply = s.recv(65536)
    assert reply.startswith(b"HTTP/1.1 400 "), reply
    s.close()
    assert Http(petcd_gw).request("GET", "/version")[0] == 200
