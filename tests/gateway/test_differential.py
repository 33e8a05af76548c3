"""The same sequence of JSON calls to petcd's gateway and to real etcd
3.4's: every answer (HTTP status and body) the same once what legitimately
differs is taken out (cluster and member ids, raft terms, lease ids, db
sizes, URLs)."""

from __future__ import annotations

import base64
import json
import random
import socket
import time
from base64 import b64encode
from typing import Any

from petcd.testing.harness import Server

from .client import Http


def b64(s: str | bytes) -> str:
    return b64encode(s.encode() if isinstance(s, str) else s).decode()


class Ids:
    """Lease ids by order of appearance, so that both servers' can be compared."""

    def __init__(self) -> None:
        self.seen: dict[str, str] = {}

    def key(self, encoded: str) -> str:
        """A lock or election key (prefix/<lease id in hex>) with the lease named."""
        raw = base64.b64decode(encoded)
        prefix, sep, tail = raw.rpartition(b"/")
        for lid, name in self.seen.items():
            if sep and tail == format(int(lid), "x").encode():
                return f"{prefix.decode(errors='replace')}/{name}"
        return encoded

    def name(self, raw: str) -> str:
        if raw not in self.seen:
            self.seen[raw] = f"L{len(self.seen)}"
        return self.seen[raw]


def normalise(obj: Any, ids: Ids) -> Any:
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            if k == "header":
                v = {hk: hv for hk, hv in v.items() if hk not in ("cluster_id", "member_id", "raft_term")}
                if "members" in obj:
                    # Known difference of petcd's Cluster service (gRPC too, not the
                    # gateway's): etcd leaves the revision out of its headers.
                    v.pop("revision", None)
            elif k in ("ID", "lease") and isinstance(v, str):
                v = ids.name(v)
            elif k == "key" and isinstance(v, str):
                v = ids.key(v)
            elif k in ("dbSize", "dbSizeInUse", "leader", "raftIndex", "raftTerm", "raftAppliedIndex",
                       "peerURLs", "clientURLs", "hash", "memberID"):
                v = "*"
            elif k == "TTL" and isinstance(v, str) and v not in ("-1", "0"):
                v = "ttl"
            out[k] = normalise(v, ids)
        return out
    if isinstance(obj, (list, tuple)):
        return type(obj)(normalise(v, ids) for v in obj)
    return obj


def sequence(seed: int) -> list[tuple[str, Any]]:
    """Seeded calls: puts, ranges with every option, deletes, txns, leases,
    compaction, member list, status, bad input."""
    rnd = random.Random(seed)
    keys = [f"k{i:02d}" for i in range(12)]
    calls: list[tuple[str, Any]] = []
    for _ in range(30):
        k = rnd.choice(keys)
        calls.append(("/v3/kv/put", {"key": b64(k), "value": b64(f"v{rnd.randrange(1000)}"),
                                     "prev_kv": rnd.random() < 0.5}))
    range_options: list[dict[str, Any]] = [{}, {"limit": 3}, {"sort_order": "DESCEND", "sort_target": "KEY"},
                 {"sort_order": "ASCEND", "sort_target": "MOD"}, {"keys_only": True}, {"count_only": True},
                 {"revision": "5"}, {"min_mod_revision": "10", "max_mod_revision": "20"},
                 {"min_create_revision": "3"}, {"serializable": True}, {"limit": "2", "sort_target": "VALUE"}]
    for opts in range_options:
        calls.append(("/v3/kv/range", {"key": b64("k"), "range_end": b64("l"), **opts}))
    calls += [
        ("/v3/kv/range", {"key": b64("k03")}),
        ("/v3/kv/range", {"key": "AA==", "range_end": "AA=="}),
        ("/v3beta/kv/range", {"key": b64("k01")}),
        ("/v3/kv/deleterange", {"key": b64("k00"), "range_end": b64("k03"), "prev_kv": True}),
        ("/v3/kv/deleterange", {"key": b64("nope")}),
        ("/v3/kv/txn", {"compare": [{"key": b64("k05"), "target": "VERSION", "result": "GREATER", "version": "0"}],
                        "success": [{"request_put": {"key": b64("t1"), "value": b64("x")}},
                                    {"request_range": {"key": b64("k05")}}],
                        "failure": [{"request_delete_range": {"key": b64("k05")}}]}),
        ("/v3/kv/txn", {"compare": [{"key": b64("t1"), "target": "VALUE", "value": b64("y")}],
                        "success": [{"request_put": {"key": b64("t2"), "value": b64("x")}}],
                        "failure": [{"request_range": {"key": b64("t1")}}]}),
        ("/v3/kv/txn", {"success": [{"request_put": {"key": b64("d"), "value": b64("1")}},
                                    {"request_put": {"key": b64("d"), "value": b64("2")}}]}),
        ("/v3/lease/grant", {"TTL": 60}),
        ("/v3/lease/grant", {"TTL": "120", "ID": "7777"}),
        ("/v3/lease/grant", {"TTL": 60, "ID": 7777}),
        ("/v3/kv/put", {"key": b64("leased"), "value": b64("x"), "lease": "7777"}),
        ("/v3/lease/timetolive", {"ID": "7777", "keys": True}),
        ("/v3/kv/lease/timetolive", {"ID": "1234"}),
        ("/v3/lease/revoke", {"ID": "7777"}),
        ("/v3/lease/revoke", {"ID": "7777"}),
        ("/v3/kv/range", {"key": b64("leased")}),
        ("/v3/kv/compaction", {"revision": "10"}),
        ("/v3/kv/compaction", {"revision": "5"}),
        ("/v3/kv/compaction", {"revision": "100000"}),
        ("/v3/kv/range", {"key": b64("k01"), "revision": "4"}),
        ("/v3/cluster/member/list", {}),
        ("/v3/maintenance/status", {}),
        ("/v3/kv/put", {"key": b64("x"), "value": b64("y"), "ignore_value": True}),
        ("/v3/kv/put", {"key": ""}),
        ("/v3/kv/put", {"key": "!!!"}),
        ("/v3/kv/put", {"key": 123}),
        ("/v3/kv/put", b"{bad"),
        ("/v3/kv/put", {"key": b64("k"), "lease": "123"}),
        ("/v3/kv/put", {"key": b64("k"), "bogus": 1}),
        ("/v3/kv/range", {"key": b64("k"), "sort_order": "SIDEWAYS"}),
        ("/v3/kv/range", {"key": b64("k"), "limit": 1.5}),
        ("/v3/kv/txn", {"success": [{"request_put": {"key": b64("a")}}] * 200}),
        ("/v3/kv/nothing", {}),
        ("/v3alpha/kv/range", {"key": b64("k")}),
    ]
    return calls


def run(url: str, calls: list[tuple[str, Any]]) -> list[tuple[int, Any]]:
    h = Http(url)
    ids = Ids()
    out = []
    try:
        for path, body in calls:
            raw = body if isinstance(body, bytes) else json.dumps(body).encode()
            status, _, data = h.request("POST", path, raw)
            try:
                parsed: Any = json.loads(data)
            except ValueError:
                parsed = data.decode(errors="replace").strip()
            out.append((status, normalise(parsed, ids)))
    finally:
        h.close()
    return out


def test_same_answers_as_etcd(petcd_gw: str, etcd: Server) -> None:
    calls = sequence(seed=12)
    ours = run(petcd_gw, calls)
    theirs = run(etcd.client_url, calls)
    diffs = [(i, calls[i], o, t) for i, (o, t) in enumerate(zip(ours, theirs, strict=True)) if o != t]
    assert not diffs, "\n".join(f"#{i} {c}\n  petcd: {o}\n  etcd:  {t}" for i, c, o, t in diffs)


def watch_lines(url: str, body: bytes, n: int, timeout: float = 20.0) -> tuple[bytes, list[Any]]:
    """POST body to /v3/watch on a raw socket; the status line and the
    first n JSON lines of the stream."""
    host, port = url.removeprefix("http://").split(":")
    s = socket.create_connection((host, int(port)), timeout=timeout)
    try:
        s.sendall(b"POST /v3/watch HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
        buf = b""
        deadline = time.monotonic() + timeout
        while True:
            head, sep, rest = buf.partition(b"\r\n\r\n")
            lines = [json.loads(x) for x in _dechunk(rest).split(b"\n") if x.strip()] if sep else []
            if len(lines) >= n or time.monotonic() > deadline:
                return head.split(b"\r\n")[0], lines
            try:
                got = s.recv(65536)
            except TimeoutError:
                got = b""
            if not got:
                return head.split(b"\r\n")[0], lines
            buf += got
    finally:
        s.close()


def _dechunk(data: bytes) -> bytes:
    out = b""
    while data:
        size_line, sep, rest = data.partition(b"\r\n")
        if not sep:
            break
        size = int(size_line, 16)
        if size == 0:
            break  # the last chunk; trailer fields may follow
        if len(rest) < size:
            break
        out += rest[:size]
        data = rest[size + 2:]
    return out


def test_watch_stream_same_as_etcd(petcd_gw: str, etcd: Server) -> None:
    results = []
    for url in (petcd_gw, etcd.client_url):
        h = Http(url)
        rev = int(h.post("/v3/kv/put", {"key": b64("w0"), "value": b64("a")})[1]["header"]["revision"])
        h.post("/v3/kv/put", {"key": b64("w1"), "value": b64("b")})
        h.post("/v3/kv/deleterange", {"key": b64("w0")})
        body = json.dumps({"create_request": {"key": b64("w"), "range_end": b64("x"), "start_revision": str(rev),
                                              "prev_kv": True}}).encode()
        status, lines = watch_lines(url, body, 2)
        h.close()
        ids = Ids()
        for line in lines:
            line["result"]["header"].pop("revision", None)
        results.append((status, [normalise(x, ids) for x in lines]))
    assert results[0] == results[1]
    assert results[0][0] == b"HTTP/1.1 200 OK"
    assert sum(len(x["result"].get("events", [])) for x in results[0][1]) == 3


def test_bad_watch_and_unknown_paths(petcd_gw: str, etcd: Server) -> None:
    for body in (b"{bad", b'{"create_request":{"key":"!!"}}'):
        got = [watch_lines(u, body, 1, timeout=2) for u in (petcd_gw, etcd.client_url)]  # etcd sends the 500 head at once, then no line
        assert got[0] == got[1]
    for method, path in [("GET", "/version"), ("GET", "/nothing"), ("GET", "/v3/kv/range"), ("PUT", "/version"),
                         ("POST", "/health"), ("OPTIONS", "/v3/kv/range"), ("OPTIONS", "/nothing"),
                         ("DELETE", "/v3/kv/put"), ("GET", "/v3/"), ("POST", "/v3/watch/")]:
        a = Http(petcd_gw).request(method, path)
        b = Http(etcd.client_url).request(method, path)
        assert (a[0], a[2], a[1].get("allow")) == (b[0], b[2], b[1].get("allow")), (method, path)
