"""The v3lock and v3election services through the gateway, the same
scenario against petcd and real etcd: who holds the lock, who waits, who
leads, what Observe streams, and the errors."""

from __future__ import annotations

import json
import socket
import threading
import time
from base64 import b64encode
from typing import Any

from petcd.testing.harness import Server, wait_for

from .client import Http
from .test_differential import Ids, _dechunk, normalise


def b64(s: str) -> str:
    return b64encode(s.encode()).decode()


def lock_scenario(url: str) -> list[Any]:
    h = Http(url)
    ids = Ids()
    out: list[Any] = []
    l1 = h.post("/v3/lease/grant", {"TTL": 60})[1]["ID"]
    l2 = h.post("/v3/lease/grant", {"TTL": 60})[1]["ID"]
    ids.name(l1), ids.name(l2)
    st, first = h.post("/v3/lock/lock", {"name": b64("mylock"), "lease": l1})
    out.append((st, normalise(first, ids)))
    assert st == 200
    key1 = first["key"]
    second: list[Any] = []

    def wait_second() -> None:
        h2 = Http(url)
        second.append(h2.post("/v3/lock/lock", {"name": b64("mylock"), "lease": l2}))
        h2.close()

    t = threading.Thread(target=wait_second, daemon=True)
    t.start()
    # the second locker queues: its key appears under the prefix, and it waits
    wait_for(lambda: h.post("/v3/kv/range", {"key": b64("mylock/"), "range_end": b64("mylock0"),
                                              "count_only": True})[1].get("count") == "2", 20, "the second locker's key")
    time.sleep(0.3)
    out.append(("waiting", not second))
    out.append(normalise(h.post("/v3/lock/unlock", {"key": key1}), ids))
    t.join(20)
    out.append(("acquired", [(s, normalise(b, ids)) for s, b in second]))
    out.append(normalise(h.post("/v3/lock/unlock", {"key": second[0][1]["key"]}), ids))
    out.append(normalise(h.post("/v3/lock/unlock", {}), ids))
    out.append(normalise(h.post("/v3/lock/lock", {"name": b64("x"), "lease": "12345"}), ids))
    h.close()
    return out


def observe(url: str, name: str, n: int, lines: list[Any], started: threading.Event) -> None:
    host, port = url.removeprefix("http://").split(":")
    s = socket.create_connection((host, int(port)), timeout=20)
    body = json.dumps({"name": b64(name)}).encode()
    s.sendall(b"POST /v3/election/observe HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
    started.set()
    buf = b""
    try:
        while len(lines) < n:
            got = s.recv(65536)
            if not got:
                break
            buf += got
            _, sep, rest = buf.partition(b"\r\n\r\n")
            if sep:
                lines[:] = [json.loads(x) for x in _dechunk(rest).split(b"\n") if x.strip()]
    finally:
        s.close()


def election_scenario(url: str) -> list[Any]:
    h = Http(url)
    ids = Ids()
    out: list[Any] = []
    out.append(normalise(h.post("/v3/election/leader", {"name": b64("el")}), ids))
    l1 = h.post("/v3/lease/grant", {"TTL": 60})[1]["ID"]
    l2 = h.post("/v3/lease/grant", {"TTL": 60})[1]["ID"]
    ids.name(l1), ids.name(l2)
    lines: list[Any] = []
    started = threading.Event()
    obs = threading.Thread(target=observe, args=(url, "el", 4, lines, started), daemon=True)
    obs.start()
    started.wait(10)
    st, c1 = h.post("/v3/election/campaign", {"name": b64("el"), "lease": l1, "value": b64("one")})
    out.append((st, normalise(c1, ids)))
    leader1 = c1["leader"]
    wait_for(lambda: len(lines) >= 1, 20, "observe to see the first leader")
    out.append(normalise(h.post("/v3/election/proclaim", {"leader": leader1, "value": b64("uno")}), ids))
    out.append(normalise(h.post("/v3/election/leader", {"name": b64("el")}), ids))
    wait_for(lambda: len(lines) >= 2, 20, "observe to see the new value")
    second: list[Any] = []
    t = threading.Thread(target=lambda: second.append(Http(url).post(
        "/v3/election/campaign", {"name": b64("el"), "lease": l2, "value": b64("two")})), daemon=True)
    t.start()
    # the second candidate queues: its key appears under the election's prefix, and it waits
    wait_for(lambda: h.post("/v3/kv/range", {"key": b64("el/"), "range_end": b64("el0"),
                                              "count_only": True})[1].get("count") == "2", 20, "the second candidate's key")
    time.sleep(0.3)
    out.append(("second waits", not second))
    out.append(normalise(h.post("/v3/election/resign", {"leader": leader1}), ids))
    t.join(20)
    out.append(("second leads", [(s, normalise(b, ids)) for s, b in second]))
    wait_for(lambda: len(lines) >= 3, 20, "observe to see the second leader")
    out.append(normalise(h.post("/v3/election/proclaim", {"leader": leader1, "value": b64("x")}), ids))
    out.append(normalise(h.post("/v3/election/resign", {}), ids))
    for line in lines[:3]:
        line["result"]["header"].pop("revision", None)
    out.append(("observed", [normalise(x, ids) for x in lines[:3]]))
    h.post("/v3/lease/revoke", {"ID": l2})
    h.close()
    return out


def test_lock_same_as_etcd(petcd_gw: str, etcd: Server) -> None:
    ours, theirs = lock_scenario(petcd_gw), lock_scenario(etcd.client_url)
    assert ours == theirs
    assert ours[1] == ("waiting", True)


def test_election_same_as_etcd(petcd_gw: str, etcd: Server) -> None:
    ours, theirs = election_scenario(petcd_gw), election_scenario(etcd.client_url)
    assert ours == theirs
