"""Server streams through the gateway: a snapshot arrives whole (its last
blob the sha256 of the rest), election Observe and watch cancel/progress
requests on one stream."""

from __future__ import annotations

import base64
import hashlib
import json
import socket
import time
from collections.abc import Callable
from typing import Any

from .client import Http
from .test_differential import _dechunk


def stream(url: str, path: str, body: bytes, until: int, timeout: float = 30.0,
           more: list[bytes] | None = None, end_body: bool = False,
           then: tuple[int, Callable[[], None]] | None = None) -> list[Any]:
    """POST a chunked body to a streaming path; the JSON lines answered (at
    least `until`, or all once the response ends). `more` are further
    request objects sent after the first answer; `then` (n, action) runs
    the action once n lines have come."""
    host, port = url.removeprefix("http://").split(":")
    s = socket.create_connection((host, int(port)), timeout=timeout)
    s.sendall(b"POST %s HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" % path.encode())
    s.sendall(b"%x\r\n%s\r\n" % (len(body), body) + (b"0\r\n\r\n" if end_body else b""))
    pending = list(more or [])
    buf = b""
    lines: list[Any] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            got = s.recv(1 << 20)
            if not got:
                break
            buf += got
            _, sep, rest = buf.partition(b"\r\n\r\n")
            if sep:
                lines = [json.loads(x) for x in _dechunk(rest).split(b"\n") if x.strip()]
                if rest.endswith(b"0\r\n\r\n") or len(lines) >= until:
                    break
                if then is not None and len(lines) >= then[0]:
                    then[1]()
                    then = None
                if lines and pending:
                    nxt = pending.pop(0)
                    s.sendall(b"%x\r\n%s\r\n" % (len(nxt), nxt))
    finally:
        s.close()
    return lines


def test_snapshot_whole(petcd_gw: str) -> None:
    h = Http(petcd_gw)
    for i in range(50):
        h.post("/v3/kv/put", {"key": base64.b64encode(b"snap%d" % i).decode(), "value": "eA=="})
    lines = stream(petcd_gw, "/v3/maintenance/snapshot", b"{}", until=10**9, timeout=60, end_body=True)
    blobs = [base64.b64decode(x["result"].get("blob", "")) for x in lines]
    assert len(blobs) >= 2
    data, digest = b"".join(blobs[:-1]), blobs[-1]
    assert hashlib.sha256(data).digest() == digest
    assert lines[-1]["result"].get("remaining_bytes", "0") == "0"


def test_watch_cancel_and_progress_on_one_stream(petcd_gw: str) -> None:
    create = json.dumps({"create_request": {"key": base64.b64encode(b"wc").decode()}}).encode()
    progress = json.dumps({"progress_request": {}}).encode()
    cancel = json.dumps({"cancel_request": {"watch_id": "0"}}).encode()
    lines = stream(petcd_gw, "/v3/watch", create, until=3, more=[progress, cancel])
    results = [x["result"] for x in lines]
    assert results[0].get("created") is True
    assert results[1].get("watch_id") == "-1" or "-1" in json.dumps(results[1])  # the progress notification
    assert results[2].get("canceled") is True


def test_one_revision_for_two_watchers_of_a_stream(petcd_gw: str) -> None:
    # the server hands a revision to a stream once for all its watchers;
    # each still gets a response of its own, as from etcd
    key = base64.b64encode(b"two-watchers").decode()
    creates = b"".join(json.dumps({"create_request": {"key": key}}).encode() for _ in range(2))

    def put() -> None:
        assert Http(petcd_gw).post("/v3/kv/put", {"key": key, "value": "eA=="})[0] == 200

    lines = stream(petcd_gw, "/v3/watch", creates, until=4, then=(2, put))
    results = [x["result"] for x in lines]
    assert [r.get("created") for r in results[:2]] == [True, True]
    created_ids = sorted(r.get("watch_id", "0") for r in results[:2])
    events = results[2:]
    assert sorted(r.get("watch_id", "0") for r in events) == created_ids
    for r in events:
        assert [base64.b64decode(e["kv"]["key"]) for e in r["events"]] == [b"two-watchers"]
    assert events[0]["header"]["revision"] == events[1]["header"]["revision"]


def test_election_observe(petcd_gw: str) -> None:
    h = Http(petcd_gw)
    lease = h.post("/v3/lease/grant", {"TTL": 60})[1]["ID"]
    name = base64.b64encode(b"obs").decode()
    st, camp = h.post("/v3/election/campaign", {"name": name, "lease": lease, "value": "djE="})
    assert st == 200
    lines = stream(petcd_gw, "/v3/election/observe", json.dumps({"name": name}).encode(), until=1, end_body=True)
    assert base64.b64decode(lines[0]["result"]["kv"]["value"]) == b"v1"
    assert h.post("/v3/election/resign", {"leader": camp["leader"]})[0] == 200
