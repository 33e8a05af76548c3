"""OpenStack's etcd3gw client (PyPI), which speaks only the JSON gateway:
put, get, delete, txn, lease, watch and lock against petcd."""

from __future__ import annotations

import threading
from base64 import b64encode
from typing import Any
from urllib.parse import urlsplit

import etcd3gw  # the test extra's

from petcd.testing.harness import wait_for


def _client(url: str) -> etcd3gw.Etcd3Client:
    parts = urlsplit(url)
    assert parts.hostname is not None and parts.port is not None
    return etcd3gw.client(host=parts.hostname, port=parts.port, timeout=30)


def b64(s: str) -> str:
    return b64encode(s.encode()).decode()


def test_kv_txn_lease_lock(petcd_gw: str) -> None:
    c = _client(petcd_gw)
    assert c.put("gw/a", "1")
    assert c.put("gw/b", "2")
    assert c.get("gw/a") == [b"1"]
    assert sorted(v for v, _ in c.get_prefix("gw/")) == [b"1", b"2"]
    assert c.create("gw/a", "x") is False  # exists already
    assert c.create("gw/c", "3") is True
    assert c.replace("gw/c", "3", "4") is True
    assert c.get("gw/c") == [b"4"]
    assert c.delete("gw/c") is True
    assert c.delete("gw/c") is False
    assert c.get("gw/c") == []
    txn = c.transaction({
        "compare": [{"key": b64("gw/a"), "result": "EQUAL", "target": "VALUE", "value": b64("1")}],
        "success": [{"request_put": {"key": b64("gw/t"), "value": b64("ok")}}],
        "failure": [],
    })
    assert txn["succeeded"] is True
    assert c.get("gw/t") == [b"ok"]
    assert c.status()["version"] == "3.4.23"
    assert len(c.members()) == 1

    lease = c.lease(ttl=30)
    assert 0 < lease.ttl() <= 30
    assert lease.refresh() == 30
    assert c.put("gw/leased", "v", lease=lease)
    assert lease.keys() == [b"gw/leased"]
    assert lease.revoke()
    assert c.get("gw/leased") == []

    lock = c.lock("gw-lock", ttl=30)
    assert lock.acquire()
    assert lock.is_acquired()
    other = c.lock("gw-lock", ttl=30)
    assert not other.acquire()
    assert lock.release()
    assert other.acquire()
    assert other.release()
    assert c.delete_prefix("gw/")


def test_watch(petcd_gw: str) -> None:
    c = _client(petcd_gw)
    events, cancel = c.watch_prefix("wgw/")
    got: list[Any] = []

    def consume() -> None:
        for ev in events:
            got.append(ev)
            if len(got) == 3:
                break

    t = threading.Thread(target=consume, daemon=True)
    t.start()
    try:
        # the watch is created asynchronously: keep writing until it sees something
        wait_for(lambda: c.put("wgw/x", "0") and got, 20, "the watch to see a put")
        n = len(got)
        c.put("wgw/y", "1")
        c.delete("wgw/y")
        wait_for(lambda: len(got) >= min(3, n + 2), 20, f"the watch to see more events (have {got})")
        kinds = [ev.get("type", "PUT") for ev in got]
        assert "DELETE" in kinds or len(got) == 3
    finally:
        cancel()
        t.join(10)
