"""`petcd cluster --size 3`: three members on local ports, stopped by SIGINT."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
from pathlib import Path

from petcd.testing.harness import etcdctl, wait_for


def _free_base() -> int:
    """A base port whose six cluster ports (base+10000*i, +1) are all free."""
    for base in range(21000, 25000, 7):
        ports = [base + 10000 * i + d for i in range(3) for d in (0, 1)]
        if max(ports) > 65535:
            break
        try:
            socks = []
            for p in ports:
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", p))
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
        return base
    raise AssertionError("no free port range")


def test_cluster_command_starts_three_members_and_stops_them(tmp_path: Path) -> None:
    base = _free_base()
    proc = subprocess.Popen([sys.executable, "-m", "petcd", "cluster", "--size", "3", "--base-port", str(base),
                             "--data-dir", str(tmp_path / "c")], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    try:
        endpoints = ",".join(f"127.0.0.1:{base + 10000 * i}" for i in range(3))

        def three_members() -> bool:
            out = etcdctl(endpoints, "member", "list", "-w", "json", check=False)
            return out.returncode == 0 and len(json.loads(out.stdout)["members"]) == 3

        wait_for(three_members, 90, "the local cluster")
        etcdctl(endpoints.split(",")[2], "put", "hello", "cluster")
        assert etcdctl(endpoints.split(",")[0], "get", "hello", "--print-value-only").stdout.strip() == "cluster"
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
    assert proc.returncode == 0
    assert sorted(p.name for p in (tmp_path / "c").iterdir() if p.suffix == ".petcd") == [
        "infra1.petcd", "infra2.petcd", "infra3.petcd"]
