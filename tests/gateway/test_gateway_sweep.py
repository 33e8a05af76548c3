"""A sweep of etcd 3.4's JSON gateway against petcd's, byte for byte where
a client could see it: the status line, the headers a client looks at
(Content-Type, Grpc-Metadata-*, Trailer, Transfer-Encoding), the trailer
fields after a chunked body, and the body, once ids, terms and header
revisions (the servers' histories may differ where etcd races itself, see
the lock test) are masked. What test_differential.py already
compares (answers of a seeded call sequence) is not repeated here."""

from __future__ import annotations

import base64
import json
import re
import socket
import time
from typing import Any

from petcd.testing.harness import Server, wait_for

from .test_differential import _dechunk

# headers compared (Date and the CORS ones are the same by construction or must differ)
_HEADERS = ("content-type", "location", "trailer", "transfer-encoding", "content-length", "connection",
            "x-content-type-options")
_MASK = re.compile(rb'"(cluster_id|member_id|raft_term|revision|ID|dbSize|dbSizeInUse|leader|raftIndex|raftTerm|'
                   rb'raftAppliedIndex|hash|memberID|token)":("[^"]*"|\d+)')


def exchange(url: str, method: str, path: str, body: bytes | None, headers: dict[str, str] | None = None,
             timeout: float = 30.0, mask: bool = True) -> tuple[str, list[str], bytes, list[str]]:
    """One request on a fresh connection that asks to be closed; the status
    line, the compared headers (sorted), the de-chunked body and the
    trailer lines, read until the server closes."""
    host, port = url.removeprefix("http://").split(":")
    s = socket.create_connection((host, int(port)), timeout=timeout)
    head = f"{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
    for k, v in (headers or {}).items():
        head += f"{k}: {v}\r\n"
    if body is not None:
        head += f"Content-Length: {len(body)}\r\n"
    s.sendall(head.encode() + b"\r\n" + (body or b""))
    data = b""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            got = s.recv(65536)
            if not got:
                break
            data += got
    finally:
        s.close()
    raw_head, _, rest = data.partition(b"\r\n\r\n")
    lines = raw_head.decode("latin-1").split("\r\n")
    kept = sorted(x for x in lines[1:] if x.split(":", 1)[0].lower() in _HEADERS
                  or x.lower().startswith("grpc-metadata-"))
    trailers: list[str] = []
    if any(x.lower() == "transfer-encoding: chunked" for x in lines[1:]):
        out = b""
        while rest:
            size_line, _, rest = rest.partition(b"\r\n")
            size = int(size_line, 16)
            if size == 0:
                trailers = [t for t in rest.decode("latin-1").split("\r\n") if t]
                break
            out += rest[:size]
            rest = rest[size + 2:]
        rest = out
    if mask:
        rest = _MASK.sub(lambda m: b'"' + m.group(1) + b'":*', rest)
        # (its length follows the masked ids')
        kept = ["Content-Length: *" if x.lower().startswith("content-length:") else x for x in kept]
    return lines[0], kept, rest, trailers


def both(petcd: str, etcd: Server, method: str, path: str, body: Any = None,
         headers: dict[str, str] | None = None) -> tuple[Any, Any]:
    raw = body if body is None or isinstance(body, bytes) else json.dumps(body).encode()
    return (exchange(petcd, method, path, raw, headers), exchange(etcd.client_url, method, path, raw, headers))


def assert_same(petcd: str, etcd: Server, calls: list[tuple[str, Any]]) -> None:
    diffs = []
    for path, body in calls:
        ours, theirs = both(petcd, etcd, "POST", path, body)
        if ours != theirs:
            diffs.append(f"POST {path} {body!r}\n  petcd: {ours}\n  etcd:  {theirs}")
    assert not diffs, "\n".join(diffs)


def test_server_errors_carry_the_grpc_trailer(petcd_gw: str, etcd: Server) -> None:
    # An error the gRPC server gave (not the gateway's own JSON refusal) is
    # sent chunked, with the Trailer header and Grpc-Trailer-Content-Type after it.
    ours, theirs = both(petcd_gw, etcd, "POST", "/v3/kv/put", {"key": ""})
    assert theirs[3] == ["Grpc-Trailer-Content-Type: application/grpc"]
    assert "Trailer: Grpc-Trailer-Content-Type" in theirs[1]
    assert ours == theirs
    assert_same(petcd_gw, etcd, [
        ("/v3/kv/range", {}),
        ("/v3/kv/range", {"key": "YQ==", "revision": "999999"}),
        ("/v3/kv/put", {"key": "YQ==", "lease": "99999"}),
        ("/v3/kv/put", {"key": "bm9wZQ==", "ignore_value": True}),
        ("/v3/lease/grant", {"TTL": "99999999999"}),
        ("/v3/lease/revoke", {}),
        ("/v3/maintenance/transfer-leadership", {"targetID": "12345"}),
        ("/v3/cluster/member/add", {"peerURLs": ["bad"]}),
        ("/v3/cluster/member/remove", {"ID": "1"}),
        ("/v3/cluster/member/promote", {"ID": "1"}),
        # the gateway's own refusals: no trailer, a Content-Length
        ("/v3/kv/put", b"{bad"),
        ("/v3/kv/range", {"key": "YQ==", "sort_target": "X"}),
        # a message the gRPC hop refuses as too large is the server's refusal
        ("/v3/kv/put", {"key": "YQ==", "value": "eHh4" * (3 * 1024 * 1024 // 3)}),
    ])


def test_server_stream_request_errors(petcd_gw: str, etcd: Server) -> None:
    # a server stream's request that does not parse is InvalidArgument (400), as a unary one's
    calls: list[tuple[str, Any]] = []
    for path in ("/v3/maintenance/snapshot", "/v3/election/observe"):
        calls += [(path, b"{bad"), (path, b"[1]")]
    calls.append(("/v3/election/observe", {"name": 1}))
    assert_same(petcd_gw, etcd, calls)


def test_empty_keepalive_stream_headers(petcd_gw: str, etcd: Server) -> None:
    # no request, no response: the stream ends with no header metadata
    assert_same(petcd_gw, etcd, [("/v3/lease/keepalive", b"")])


def test_stream_refused_before_its_first_message(petcd_gw: str, etcd: Server) -> None:
    # With auth on, a snapshot without a token fails before its first
    # message: the stream's error object with the code's HTTP status, sent
    # chunked with no newline after it and no Grpc-Metadata-Content-Type.
    setup: list[tuple[str, Any]] = [("/v3/auth/user/add", {"name": "root", "password": "pw"}),
                                    ("/v3/auth/user/grant", {"user": "root", "role": "root"}),
                                    ("/v3/auth/enable", {})]
    for url in (petcd_gw, etcd.client_url):
        for path, body in setup:
            assert exchange(url, "POST", path, json.dumps(body).encode())[0] == "HTTP/1.1 200 OK"
    try:
        ours, theirs = both(petcd_gw, etcd, "POST", "/v3/maintenance/snapshot", {})
        assert theirs[0] == "HTTP/1.1 500 Internal Server Error"
        assert ours == theirs
        assert_same(petcd_gw, etcd, [("/v3/kv/range", {"key": "YQ=="}), ("/v3/election/leader", {"name": "YQ=="}),
                                     ("/v3/lease/leases", {})])
    finally:
        for url in (petcd_gw, etcd.client_url):
            token = json.loads(exchange(url, "POST", "/v3/auth/authenticate",
                                        b'{"name":"root","password":"pw"}', mask=False)[2])["token"]
            assert exchange(url, "POST", "/v3/auth/disable", b"{}", {"Authorization": token})[0] == "HTTP/1.1 200 OK"


# Request bodies read as etcd's gateway reads them (Go's json.Decoder, then
# gogo's jsonpb): the first value only, Go's syntax errors word for word,
# quoted integers read by json.Unmarshal, base64 by Go's StdEncoding.
_RANGE_BODIES = [
    b'{"key":"YQ=="} x', b'{"key":"YQ=="}{"key":"Yg=="}', b'{"key":"YQ=="}]', b"null", b" null ",
    b'{"key":"YQ==","limit":" 5"}', b'{"key":"YQ==","limit":"5 "}', b'{"key":"YQ==","limit":" "}',
    b'{"key":"YQ==","limit":"5 x"}', b'{"key":"YQ==","limit":"true"}', b'{"key":"YQ==","limit":"null"}',
    b'{"key":"YQ==","limit":"[1]"}', b'{"key":"YQ==","limit":"-"}', b'{"key":"YQ==","limit":"1."}',
    b'{"key":"YQ==","limit":"1e+"}', b'{"key":"YQ==","limit":"fa"}', b'{"key":"YQ==","limit":"[1"}',
    b'{"key":"YQ==","sort_order":1e0}', b'{"key":"YQ==","sort_order":99999999999}',
    b'{"key":"YQ==","sort_order":1.0}', b'{"key":"\xff"}', b"\x01{}", b"\xff{}", b"\xc2\x80{}",
    b'{"key":"YQ==","limit":"\x01"}', b'{"key":tru}', b'{"key":"a\\q"}', b'{"key":"YQ==","limit":-}',
    b'{"key":"YQ==","limit":1.}', b'{"key":"YQ==","limit":NaN}', b'{"key":"YQ=="}', b'{"key":"YQ="}',
    b'{"key":"YQ=x"}', b'{"key":"Y=Q="}', b'{"key":"YWJ=YQ=="}', b'{"key":"Y\\nQ=="}', b'{"key":"YR=="}',
    b'{"key":"YQ==","a":[1 2]}', b'{"key":"YQ==","a":{"b" 1}}', b'{"key":"YQ==","a":"\\u12g4"}',
    b'{"key":"YQ==","a":1e}', b'{"key":"YQ==","a":fals}', b'{"key":"YQ==","a":nul',
]


def test_request_bodies_read_as_etcd_reads_them(petcd_gw: str, etcd: Server) -> None:
    for url in (petcd_gw, etcd.client_url):
        assert exchange(url, "POST", "/v3/kv/put", b'{"key":"YQ==","value":"eA=="}')[0] == "HTTP/1.1 200 OK"
    assert_same(petcd_gw, etcd, [("/v3/kv/range", b) for b in _RANGE_BODIES] + [
        ("/v3/auth/user/add", b'{"name":"\\ud800","password":"x"}'),  # half a surrogate pair: U+FFFD
        ("/v3/auth/user/get", b'{"name":"\\ufffd"}'),
    ])


def test_stream_requests_after_the_first_read_one_at_a_time(petcd_gw: str, etcd: Server) -> None:
    # the first object is served whatever follows it; what follows that
    # does not parse ends the requests, not the stream
    for path, body in [
        ("/v3/watch", b'{"create_request":{"key":"YQ=="}} {bad'),
        ("/v3/watch", b'{"create_request":{"key":"YQ=="}} {"create_request":{"key":"YQ="}}'),
        ("/v3/lease/keepalive", b'{"ID":"1"}x'),
        ("/v3/lease/keepalive", b'{"ID":"1"}{"ID":"x"}'),
    ]:
        got = []
        for url in (petcd_gw, etcd.client_url):
            status, lines = stream_lines(url, path, body, 1)
            got.append((status, [_MASK.sub(lambda m: b'"' + m.group(1) + b'":*', json.dumps(x, separators=(",", ":"))
                                           .encode()) for x in lines]))
        assert got[0] == got[1], (path, body)
        assert got[0][0] == b"HTTP/1.1 200 OK"


def stream_lines(url: str, path: str, body: bytes, n: int, timeout: float = 30.0) -> tuple[bytes, list[Any]]:
    """POST body to a streaming path; the status line and the first n JSON
    lines of the answer (fewer if it ends first)."""
    host, port = url.removeprefix("http://").split(":")
    s = socket.create_connection((host, int(port)), timeout=timeout)
    try:
        s.sendall(b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % (path.encode(), len(body)) + body)
        buf = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            head, sep, rest = buf.partition(b"\r\n\r\n")
            lines = [json.loads(x) for x in _dechunk(rest).split(b"\n") if x.strip()] if sep else []
            if len(lines) >= n or rest.endswith(b"0\r\n\r\n"):
                return head.split(b"\r\n")[0], lines
            got = s.recv(65536)
            if not got:
                break
            buf += got
        head, _, rest = buf.partition(b"\r\n\r\n")
        return head.split(b"\r\n")[0], [json.loads(x) for x in _dechunk(rest).split(b"\n") if x.strip()]
    finally:
        s.close()


def test_paths_as_gos_mux_routes_them(petcd_gw: str, etcd: Server) -> None:
    # The path is percent-decoded before routing; an unclean one (empty,
    # "." or ".." segments) is redirected to its clean form, as /v3 is to
    # /v3/; a bad escape is refused before any routing.
    paths = ["/v3/kv/%72ange", "/v3/kv/r%61nge?z", "/%76ersion", "/v3/kv//range?a=b", "//v3/kv/range", "/v3",
             "/v3?x=1", "/v3?", "/v3beta", "/v3/./", "/v3/kv/./range", "/v3/kv/range/..", "/v3/kv/%2e%2e/kv/range",
             "/v3/kv/../kv/range?q=1", "/./version", "/..", "/../version", "/v3//", "/x/%27%22%3C/..//",
             "/x/!()*//", "/x/%C3%A9//", "/x/a%20b//", "/v3/kv/%zzrange", "/v3/kv/range%", "/v3/kv/range?%zz"]
    diffs = []
    for path in paths:
        for method, body in (("POST", b"{}"), ("GET", None)):
            ours, theirs = both(petcd_gw, etcd, method, path, body)
            if ours != theirs:
                diffs.append(f"{method} {path}\n  petcd: {ours}\n  etcd:  {theirs}")
    assert not diffs, "\n".join(diffs)


def _count(url: str, key: bytes) -> int:
    end = key[:-1] + bytes([key[-1] + 1])
    body = json.dumps({"key": base64.b64encode(key).decode(), "range_end": base64.b64encode(end).decode(),
                       "count_only": True}).encode()
    return int(json.loads(exchange(url, "POST", "/v3/kv/range", body, mask=False)[2]).get("count", "0"))


def test_a_waiting_lock_leaves_the_queue_when_its_client_goes(petcd_gw: str, etcd: Server) -> None:
    # Go cancels a request's context when its client closes (or half-closes)
    # the connection: a lock waiting in its queue deletes its key.
    for url in (petcd_gw, etcd.client_url):
        for lid in ("901", "902", "903"):
            assert exchange(url, "POST", "/v3/lease/grant", b'{"TTL":60,"ID":"%s"}' % lid.encode())[0].endswith("200 OK")
        held = exchange(url, "POST", "/v3/lock/lock", b'{"name":"Z29uZQ==","lease":"901"}')
        assert held[0].endswith("200 OK")
        host, port = url.removeprefix("http://").split(":")
        # a waiter that goes away
        s = socket.create_connection((host, int(port)), timeout=30)
        body = b'{"name":"Z29uZQ==","lease":"902"}'
        s.sendall(b"POST /v3/lock/lock HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
        wait_for(lambda: _count(url, b"gone/") == 2, 30, "the waiter's key")  # noqa: B023
        s.close()
        wait_for(lambda: _count(url, b"gone/") == 1, 30, "the waiter's key to go")  # noqa: B023
    # a waiter that half-closes after its request: cancelled, and told so
    answers = []
    for url in (petcd_gw, etcd.client_url):
        host, port = url.removeprefix("http://").split(":")
        s = socket.create_connection((host, int(port)), timeout=30)
        body = b'{"name":"Z29uZQ==","lease":"903"}'
        s.sendall(b"POST /v3/lock/lock HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
        s.shutdown(socket.SHUT_WR)
        data = b""
        while True:
            got = s.recv(65536)
            if not got:
                break
            data += got
        s.close()
        head, _, rest = data.partition(b"\r\n\r\n")
        answers.append((head.split(b"\r\n")[0], rest))
        if url == petcd_gw:  # (etcd may leave the key behind: its txn that joins the queue is cancelled too)
            wait_for(lambda: _count(url, b"gone/") == 1, 30, "the half-closed waiter's key to go")  # noqa: B023
    assert answers[0] == answers[1]
    assert answers[0][0] == b"HTTP/1.1 408 Request Timeout"


def test_grpc_timeout_header(petcd_gw: str, etcd: Server) -> None:
    # grpc-gateway reads Grpc-Timeout (an int64 and a unit; 0 is none; the
    # nanoseconds wrap as Go's int64) before the body; a call still running
    # at the deadline is cancelled: 504 (no trailer: the gRPC client's own
    # error), or the error object ending a stream that had begun.
    diffs = []
    for value in ("1n", "bogus", "5", "x5S", "1.5S", "+5S", "-5S", "0S", "60S", "99999999999999999999S",
                  "9223372036854775807S", "1u"):
        for body in (b'{"key":"YQ=="}', b"{bad"):
            ours, theirs = both(petcd_gw, etcd, "POST", "/v3/kv/range", body, {"Grpc-Timeout": value})
            if ours != theirs:
                diffs.append(f"{value} {body!r}\n  petcd: {ours}\n  etcd:  {theirs}")
    assert not diffs, "\n".join(diffs)
    for url in (petcd_gw, etcd.client_url):
        assert exchange(url, "POST", "/v3/lock/lock", b'{"name":"dGltZW91dA=="}')[0].endswith("200 OK")
    # waits: cut short by the deadline
    assert_same_with(petcd_gw, etcd, "/v3/lock/lock", b'{"name":"dGltZW91dA=="}', {"Grpc-Timeout": "300m"},
                     "HTTP/1.1 504 Gateway Timeout")
    assert_same_with(petcd_gw, etcd, "/v3/election/observe", b'{"name":"bm8tbGVhZGVy"}', {"Grpc-Timeout": "300m"},
                     "HTTP/1.1 504 Gateway Timeout")
    got = []
    for url in (petcd_gw, etcd.client_url):
        status, lines = timed_stream(url, "/v3/watch", b'{"create_request":{"key":"dGltZW91dA=="}}', "500m")
        got.append((status, [list(x) for x in lines]))
    assert got[0] == got[1]
    assert got[0][1] == [["result"], ["error"]]


def assert_same_with(petcd: str, etcd: Server, path: str, body: bytes, headers: dict[str, str], status: str) -> None:
    """etcd answers a call cut short by Grpc-Timeout one of two ways, by
    which timer fires first: its gateway's gRPC client's (DEADLINE_EXCEEDED,
    the `status` given) or, rarely and under load, its own handler's, whose
    context error gRPC sends as UNKNOWN "context deadline exceeded" (500).
    petcd answers the first way; etcd is asked again until it does too."""
    ours = exchange(petcd, "POST", path, body, headers)
    assert ours[0] == status
    for _ in range(8):
        theirs = exchange(etcd.client_url, "POST", path, body, headers)
        if theirs[0] == status:
            break
        assert theirs[0] == "HTTP/1.1 500 Internal Server Error" and b"context deadline exceeded" in theirs[2], theirs
    assert ours == theirs


def timed_stream(url: str, path: str, body: bytes, timeout: str) -> tuple[bytes, list[Any]]:
    """A stream with a Grpc-Timeout, read until the server ends it (with
    the deadline's error)."""
    host, port = url.removeprefix("http://").split(":")
    s = socket.create_connection((host, int(port)), timeout=60)
    try:
        s.sendall(b"POST %s HTTP/1.1\r\nHost: x\r\nGrpc-Timeout: %s\r\nContent-Length: %d\r\n\r\n"
                  % (path.encode(), timeout.encode(), len(body)) + body)
        buf = b""
        while not buf.endswith(b"0\r\n\r\n"):
            got = s.recv(65536)
            if not got:
                break
            buf += got
    finally:
        s.close()
    head, _, rest = buf.partition(b"\r\n\r\n")
    data = _dechunk(rest)
    assert not data.endswith(b"\n"), data  # (the error that ends a stream has no newline after it)
    return head.split(b"\r\n")[0], [json.loads(x) for x in data.split(b"\n") if x.strip()]


def _raw_exchange(url: str, data: bytes) -> bytes:
    """data sent as is; all the answer until the server closes, with the
    Date and CORS lines and the ids taken out."""
    host, port = url.removeprefix("http://").split(":")
    s = socket.create_connection((host, int(port)), timeout=30)
    out = b""
    try:
        s.sendall(data)
        while True:
            got = s.recv(65536)
            if not got:
                break
            out += got
    finally:
        s.close()
    out = b"\r\n".join(x for x in out.split(b"\r\n") if not x.startswith((b"Date:", b"Access-Control-")))
    out = re.sub(rb"Content-Length: \d+", b"Content-Length: *", out)
    return _MASK.sub(lambda m: b'"' + m.group(1) + b'":*', out)


def test_http10_gateway_answers(petcd_gw: str, etcd: Server) -> None:
    # Answered in HTTP/1.0, closing unless asked to keep alive (then said
    # so); an error with a trailer, or a stream, has no length: it closes.
    diffs = []
    for data in [b"POST /v3/kv/put HTTP/1.0\r\nContent-Length: 2\r\n\r\n{}",
                 b"POST /v3/kv/put HTTP/1.0\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\n{}",
                 b'POST /v3/kv/range HTTP/1.0\r\nContent-Length: 14\r\n\r\n{"key":"YQ=="}',
                 b'POST /v3/kv/range HTTP/1.0\r\nConnection: keep-alive\r\nContent-Length: 14\r\n\r\n{"key":"YQ=="}'
                 b"GET /version HTTP/1.0\r\n\r\n",
                 b'POST /v3/lease/keepalive HTTP/1.0\r\nConnection: keep-alive\r\nContent-Length: 10\r\n\r\n{"ID":"1"}',
                 b"POST /v3/kv/range HTTP/1.0\r\nContent-Length: 4\r\n\r\n{bad",
                 b"GET /v3 HTTP/1.0\r\n\r\n", b"GET /v3/kv/range HTTP/1.0\r\n\r\n"]:
        ours, theirs = _raw_exchange(petcd_gw, data), _raw_exchange(etcd.client_url, data)
        if ours != theirs:
            diffs.append(f"{data!r}\n  petcd: {ours!r}\n  etcd:  {theirs!r}")
    assert not diffs, "\n".join(diffs)
