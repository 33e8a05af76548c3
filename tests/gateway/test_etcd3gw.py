"""OpenStack's etcd3gw client (PyPI), which speaks only the JSON gateway:
put, get, delete, txn, lease, watch and lock against petcd, and its whole
surface against petcd and real etcd at once (etcd3gw_driver.py), whose
transcripts must be equal."""

from __future__ import annotations

import threading
from base64 import b64encode
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import etcd3gw  # the test extra's

from petcd.testing.harness import wait_for
from tests.gateway import etcd3gw_driver
from tests.on_both import on_both, transcript_diff


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


def test_etcd3gw_same_as_etcd(tmp_path: Path) -> None:
    """etcd3gw's whole surface (etcd3gw_driver.py) against a fresh petcd and a
    fresh etcd at once: the transcripts must be equal."""
    petcd_t, etcd_t = on_both(tmp_path, lambda s: etcd3gw_driver.run(s.client_url))
    failures = [f"{scenario}:\n" + transcript_diff(etcd_t[scenario], petcd_t[scenario])
                for scenario in etcd3gw_driver.SCENARIOS if petcd_t[scenario] != etcd_t[scenario]]
    assert not failures, "etcd3gw: petcd differs from etcd\n" + "\n\n".join(failures)
    t = {name: dict((step, r) for step, r in steps) for name, steps in petcd_t.items()}
    # beyond equality, what etcd3gw's users rely on (so an oracle that changed would show)
    assert all(step != "scenario failed" for steps in petcd_t.values() for step, _ in steps), petcd_t
    assert t["kv"]["create existing"] is False and t["kv"]["replace right"] is True
    assert t["lock"]["acquire"] is True and t["lock"]["other acquire"] is False
    assert t["lock"]["other acquire after release"] is True
    assert t["watch"]["watch_once timeout"]["raised"] == "WatchTimedOut"
