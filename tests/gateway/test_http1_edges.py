"""The HTTP/1.1 protocol's edges on the client port, real etcd as the
oracle where it answers: requests Go's net/http refuses (byte for byte),
Expect: 100-continue, an Upgrade request with a body, deep pipelining,
HTTP/1.0, a head over MAX_HEAD, head lines ending in a bare LF, broken
chunked bodies, CORS headers."""

from __future__ import annotations

import base64
import json
import re
import socket

import pytest

from petcd.api.http1 import MAX_HEAD, MAX_PIPELINED
from petcd.testing.harness import Server

from .client import Http


def _connect(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=10)


def _until_closed(s: socket.socket) -> bytes:
    data = b""
    try:
        while got := s.recv(65536):
            data += got
    except ConnectionResetError:  # (a server that closes on unread bytes, after its answer)
        pass
    return data


def _exchange(url: str, data: bytes, half_close: bool = True) -> bytes:
    """Send data, half-close (unless the last request asks the server to
    close: Go cancels a request whose client half-closed), read the
    replies until the server closes."""
    with _connect(url) as s:
        try:
            s.sendall(data)
            if half_close:
                s.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            pass  # refused before the last byte; the answer is there to read
        return _until_closed(s)


def _undated(reply: bytes) -> bytes:
    return re.sub(rb"\r\nDate: [^\r]*", b"", reply)


def _statuses(reply: bytes) -> list[int]:
    return [int(m) for m in re.findall(rb"HTTP/1\.[01] (\d{3}) ", reply)]


REFUSED = {
    "no Host": b"POST /v3/kv/range HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}",
    "unknown transfer coding": b"POST /v3/kv/range HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
    "two Content-Lengths": b"POST /v3/kv/range HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}",
}


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_refused_requests_answered_as_etcd_answers_them(name: str, petcd_gw: str, etcd: Server) -> None:
    ours, theirs = _exchange(petcd_gw, REFUSED[name]), _exchange(etcd.client_url, REFUSED[name])
    assert theirs.startswith(b"HTTP/1.1 4") or theirs.startswith(b"HTTP/1.1 5"), theirs
    assert ours == theirs


def test_expect_100_continue(petcd_gw: str, etcd: Server) -> None:
    body = json.dumps({"key": "ZXhwZWN0", "value": "MQ=="}).encode()
    head = b"POST /v3/kv/put HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: %d\r\n\r\n" % len(body)
    for url in (petcd_gw, etcd.client_url):
        with _connect(url) as s:
            s.sendall(head)
            # the body is sent only once the server asks for it
            assert s.recv(65536) == b"HTTP/1.1 100 Continue\r\n\r\n", url
            s.sendall(body)
            assert s.recv(65536).startswith(b"HTTP/1.1 200 OK\r\n"), url
    # an answer given without reading the body ends the connection, and says so
    unread = b"GET /nope HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n"
    for url in (petcd_gw, etcd.client_url):
        with _connect(url) as s:
            s.sendall(unread)
            reply = b""
            while b"404 page not found\n" not in reply:
                got = s.recv(65536)
                assert got, reply
                reply += got
            if url == petcd_gw:  # (etcd says so, then waits for the client to go)
                assert s.recv(65536) == b""
        assert reply.startswith(b"HTTP/1.1 404 "), reply
        assert b"\r\nConnection: close\r\n" in reply.partition(b"\r\n\r\n")[0] + b"\r\n", reply


def test_upgrade_request_with_a_body_is_served_and_the_connection_goes_on(petcd_gw: str) -> None:
    # curl --http2 on http:// asks to upgrade to h2c; like Go, petcd does not
    # switch, reads the body and goes on with HTTP/1.1
    body = json.dumps({"key": "dXBncmFkZQ==", "value": "aDJj"}).encode()
    reply = _exchange(petcd_gw, (
        b"POST /v3/kv/put HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n"
        b"HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\nContent-Length: %d\r\n\r\n%s"
        b"GET /version HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n") % (len(body), body))
    assert reply.count(b"HTTP/1.1 200 OK\r\n") == 2, reply
    status, got = Http(petcd_gw).post("/v3/kv/range", {"key": "dXBncmFkZQ=="})
    assert status == 200 and got["kvs"][0]["value"] == "aDJj"


def test_deep_pipelining_answers_every_request_in_order(petcd_gw: str) -> None:
    n = 5 * MAX_PIPELINED  # beyond the queue that pauses reading
    reqs = b"".join(
        b"POST /v3/kv/range HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (len(b), b)
        for b in (json.dumps({"key": base64.b64encode(b"p%d" % i).decode(), "count_only": True}).encode()
                  for i in range(n)))
    reply = _exchange(petcd_gw, reqs + b"GET /version HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert reply.count(b"HTTP/1.1 200 OK\r\n") == n + 1
    assert reply.endswith(b"}") and b'"etcdserver"' in reply.rsplit(b"\r\n\r\n", 1)[1]


def test_http10_answered_and_closed_like_etcd(petcd_gw: str, etcd: Server) -> None:
    ours = _exchange(petcd_gw, b"GET /version HTTP/1.0\r\n\r\n")
    theirs = _exchange(etcd.client_url, b"GET /version HTTP/1.0\r\n\r\n")
    assert ours.split(b" ", 2)[1] == theirs.split(b" ", 2)[1] == b"200"
    assert ours.partition(b"\r\n\r\n")[2] == theirs.partition(b"\r\n\r\n")[2]


def test_head_lines_ending_in_a_bare_lf_served_as_etcd_serves_them(petcd_gw: str, etcd: Server) -> None:
    put = json.dumps({"key": "YmFyZS1sZg==", "value": "MQ=="}).encode()
    data = (b"GET /version HTTP/1.1\nHost: x\nAccept: */*\n\n"
            b"POST /v3/kv/put HTTP/1.1\nHost: x\nContent-Length: %d\n\n%s"  # a request line right after a body
            b"GET /health HTTP/1.1\r\nHost: x\n\r\n"
            b"GET /version HTTP/1.1\nHost: x\nConnection: close\n\n") % (len(put), put)
    ours, theirs = _exchange(petcd_gw, data, half_close=False), _exchange(etcd.client_url, data, half_close=False)
    assert _statuses(theirs) == [200, 200, 200, 200], theirs
    assert _statuses(ours) == _statuses(theirs), ours
    assert ours.endswith(b'"etcdcluster":"3.4.0"}') and theirs.endswith(b'"etcdcluster":"3.4.0"}')


CHUNKED = b"POST /v3/kv/range HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
BROKEN_BODIES = {
    "bad chunk size": CHUNKED + b"zz\r\n{}\r\n0\r\n\r\n",
    "chunk size too large": CHUNKED + b"1ffffffffffffffff\r\n{}\r\n0\r\n\r\n",
    "no CRLF after chunk data": CHUNKED + b"1\r\n{XX1\r\n}\r\n0\r\n\r\n",
    "bare LF after chunk data": CHUNKED + b"1\r\n{\n1\r\n}\r\n0\r\n\r\n",
    "watch": b"POST /v3/watch HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    "lease keep-alive": b"POST /v3/lease/keepalive HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    "snapshot": b"POST /v3/maintenance/snapshot HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    "unknown path": b"POST /nope HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    "unread by /version": b"GET /version HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
}


@pytest.mark.parametrize("name", sorted(BROKEN_BODIES))
def test_broken_chunked_body_answered_as_etcd_answers_it(name: str, petcd_gw: str, etcd: Server) -> None:
    """The handler answers (grpc-gateway: a JSON error with Go's text for
    the fault) and says Connection: close; byte for byte but the Date."""
    data = BROKEN_BODIES[name] + b"GET /version HTTP/1.1\r\nHost: x\r\n\r\n"  # never read
    ours, theirs = _exchange(petcd_gw, data), _exchange(etcd.client_url, data)
    assert b"\r\nConnection: close\r\n" in theirs, theirs
    assert _undated(ours) == _undated(theirs)


# Go's DefaultMaxHeaderBytes and the 4096 bytes its reader allows over it
GO_MAX_HEAD = (1 << 20) + 4096


@pytest.mark.parametrize("over", [0, 1])
def test_head_size_limit_and_its_answer_as_etcd(over: int, petcd_gw: str, etcd: Server) -> None:
    pre, post = b"GET /version HTTP/1.1\r\nHost: x\r\nX-Big: ", b"\r\n\r\n"
    data = pre + b"a" * (GO_MAX_HEAD + over - len(pre) - len(post)) + post
    ours, theirs = _exchange(petcd_gw, data), _exchange(etcd.client_url, data)
    assert _statuses(theirs) == [431 if over else 200], theirs[:200]
    if over:
        assert ours == theirs
    else:
        assert _undated(ours) == _undated(theirs)


CORS = {
    "unknown path": b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n",
    "unknown gateway path": b"GET /v3/nope HTTP/1.1\r\nHost: x\r\nOrigin: http://elsewhere\r\n\r\n",
    "gateway error": b"POST /v3/kv/range HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\n{x}",
    "gateway answer": b"POST /v3/kv/range HTTP/1.1\r\nHost: x\r\nContent-Length: 16\r\n\r\n{\"key\": \"Y29ycw==\"}",
    "preflight": b"OPTIONS /v3/kv/range HTTP/1.1\r\nHost: x\r\nOrigin: http://elsewhere\r\n\r\n",
    "method not allowed": b"GET /v3/kv/range HTTP/1.1\r\nHost: x\r\n\r\n",
}


@pytest.mark.parametrize("name", sorted(CORS))
def test_cors_headers_as_etcd_sends_them(name: str, petcd_gw: str, etcd: Server) -> None:
    """etcd 3.4 (no --cors) puts its CORS headers on every answer a handler
    gives, a 404 included, and on none the server gives itself."""
    def cors(reply: bytes) -> list[bytes]:
        return [h for h in reply.partition(b"\r\n\r\n")[0].split(b"\r\n") if h.lower().startswith(b"access-control-")]

    data = CORS[name].replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n", 1)  # the head's end
    ours, theirs = _exchange(petcd_gw, data, half_close=False), _exchange(etcd.client_url, data, half_close=False)
    assert len(cors(theirs)) == 3, theirs
    assert cors(ours) == cors(theirs)
    assert _statuses(ours) == _statuses(theirs)
    refused = b"GET /version HTTP/1.1\r\n\r\n"  # no Host: the server's own 400
    assert cors(_exchange(etcd.client_url, refused)) == cors(_exchange(petcd_gw, refused)) == []


def test_head_over_max_head_refused_with_431(petcd_gw: str) -> None:
    with _connect(petcd_gw) as s:
        s.sendall(b"GET /version HTTP/1.1\r\nHost: x\r\nX-Big: ")
        try:  # in pieces: the limit holds for a head that never ends too
            for _ in range(2 * MAX_HEAD // 1024):
                s.sendall(b"a" * 1024)
        except (BrokenPipeError, ConnectionResetError):
            pass
        reply = _until_closed(s)
    assert reply.startswith(b"HTTP/1.1 431 Request Header Fields Too Large\r\n"), reply
    assert Http(petcd_gw).request("GET", "/version")[0] == 200


def test_a_body_cut_short_by_a_lost_connection_is_never_handed_over_truncated() -> None:
    """A reader of a body whose connection was lost before its end gets an
    error, never the bytes that did arrive (a truncated put)."""
    import asyncio

    from petcd.api.http1 import Body

    async def scenario() -> None:
        whole = Body(lambda: None)
        whole._feed(b'{"key": "dA=="}')
        whole._end()
        whole._cut()  # lost after the body ended: nothing is lost
        assert await whole.read(1 << 20) == b'{"key": "dA=="}'
        for how in ("read", "iterate"):
            body = Body(lambda: None)
            body._feed(b'{"key": "dA==", "value": "MQ=="}')
            body._cut()
            with pytest.raises(ConnectionResetError):
                if how == "read":
                    await body.read(1 << 20)
                else:
                    async for _ in body:
                        pass

    asyncio.run(scenario())
