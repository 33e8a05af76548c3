"""Member and cluster ids are etcd's: checked against a real etcd cluster."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from petcd.server import ids


def test_member_id_ignores_url_order_and_depends_on_token() -> None:
    a = ids.member_id(["http://b:2", "http://a:1"], "t")
    assert a == ids.member_id(["http://a:1", "http://b:2"], "t")
    assert a != ids.member_id(["http://a:1", "http://b:2"], "u")
    assert 0 < a < 1 << 64


def test_cluster_id_ignores_member_order() -> None:
    assert ids.cluster_id([3, 1, 2]) == ids.cluster_id([1, 2, 3]) != ids.cluster_id([1, 2])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _need_etcd() -> None:
    if shutil.which("etcd") and shutil.which("etcdctl"):
        return
    if os.environ.get("CI") == "true":
        pytest.fail("etcd and etcdctl are needed in CI (Debian's etcd-server and etcd-client)")
    pytest.skip("etcd/etcdctl not installed")


def test_ids_match_a_real_etcd_cluster(tmp_path: Path) -> None:
    """Three etcd members, one with two peer URLs: every member id and the
    cluster id etcd reports equal ours."""
    _need_etcd()
    token = "petcd-ids-test"
    names = ["a", "b", "c"]
    peers = {n: [f"http://127.0.0.1:{_free_port()}"] for n in names}
    peers["a"].append(f"http://127.0.0.1:{_free_port()}")
    clients = {n: f"http://127.0.0.1:{_free_port()}" for n in names}
    cluster = ",".join(f"{n}={u}" for n in names for u in peers[n])
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for n in names:
            urls = ",".join(peers[n])
            with open(tmp_path / f"{n}.log", "wb") as logf:
                procs.append(subprocess.Popen(
                    ["etcd", "--name", n, "--data-dir", str(tmp_path / n),
                     "--listen-peer-urls", urls, "--initial-advertise-peer-urls", urls,
                     "--listen-client-urls", clients[n], "--advertise-client-urls", clients[n],
                     "--initial-cluster", cluster, "--initial-cluster-token", token,
                     "--logger", "zap", "--log-outputs", "stderr"],
                    stdout=logf, stderr=subprocess.STDOUT,
                ))
        doc = None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            r = subprocess.run(["etcdctl", "--endpoints", clients["a"], "--command-timeout=2s",
                                "member", "list", "-w", "json"],
                               capture_output=True, env={**os.environ, "ETCDCTL_API": "3"}, timeout=30)
            if r.returncode == 0:
                doc = json.loads(r.stdout)
                break
            assert all(p.poll() is None for p in procs), (tmp_path / "a.log").read_text(errors="replace")
            time.sleep(0.2)
        assert doc is not None, "etcd did not answer member list within 60 s"
    finally:
        for p in procs:
            p.kill()  # a throwaway cluster: no need for etcd's leader hand-over on SIGTERM
        for p in procs:
            p.wait(30)
    reported = {m["name"]: m["ID"] for m in doc["members"]}
    ours = {n: ids.member_id(peers[n], token) for n in names}
    assert reported == ours
    assert doc["header"]["member_id"] == ours["a"]
    assert doc["header"]["cluster_id"] == ids.cluster_id(list(ours.values()))
