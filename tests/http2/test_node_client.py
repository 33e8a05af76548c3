"""A third gRPC implementation against petcd: Node's @grpc/grpc-js through
the npm ``etcd3`` client (put, get, txn, range, delete, watch, lease, lock,
election), and the same script against real etcd to show the script itself
is right; then the package's whole surface (assets/node_etcd3_driver.js)
against a fresh petcd and a fresh etcd at once, whose transcripts must be
equal. The package is installed with npm on first use into a cache
directory (``$PETCD_NODE_CACHE``, else ``~/.cache/petcd-node``). In CI
(CI=true) a missing node, npm or etcd is a failure, elsewhere a skip."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

from petcd.testing.harness import etcd_server, petcd_server, require_binary
from tests.on_both import on_both, transcript_diff

SCRIPT = Path(__file__).parent / "assets" / "node_etcd3.js"
ETCD3_VERSION = "1.1.2"


def node_modules() -> Path:
    require_binary("node")
    npm = require_binary("npm")
    cache = Path(os.environ.get("PETCD_NODE_CACHE") or Path.home() / ".cache" / "petcd-node")
    modules = cache / "node_modules"
    if not (modules / "etcd3" / "package.json").exists():
        cache.mkdir(parents=True, exist_ok=True)
        subprocess.run([npm, "install", "--no-audit", "--no-fund", "--prefix", str(cache), f"etcd3@{ETCD3_VERSION}"],
                       check=True, capture_output=True, timeout=600)
    return modules


def run_script(endpoint: str) -> list[str]:
    proc = subprocess.run(["node", str(SCRIPT), str(node_modules()), endpoint],
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return [line.split()[1] for line in proc.stdout.splitlines() if line.startswith("ok ")]


STEPS = ["put/get", "txn", "range/delete", "watch", "lease", "lock", "election"]


def test_etcd3_node_client_against_petcd(tmp_path: Path) -> None:
    s = petcd_server(tmp_path).start()
    try:
        assert run_script(s.endpoint) == STEPS
    finally:
        s.stop()


def test_the_same_script_against_etcd(tmp_path: Path) -> None:
    require_binary("etcd")
    s = etcd_server(tmp_path).start()
    try:
        assert run_script(s.endpoint) == STEPS
    finally:
        s.stop()



# The differential sweep: node_etcd3_driver.js drives the package's public
# surface and prints a transcript of every call's result or error; the same
# scenarios run against a fresh petcd and a fresh etcd at once, and the
# transcripts must be equal.
DRIVER = Path(__file__).parent / "assets" / "node_etcd3_driver.js"
SCENARIOS = ["kv", "large", "keepalive", "namespace", "alarm", "txn", "lease", "lock", "election", "watch", "stm", "maintenance", "auth"]


def run_driver(endpoint: str, scenarios: list[str]) -> dict[str, list[list[Any]]]:
    """Each scenario's transcript from the driver against endpoint (one after another)."""
    proc = subprocess.run(["node", str(DRIVER), str(node_modules()), endpoint, *scenarios],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out: dict[str, list[list[Any]]] = json.loads(proc.stdout)
    return out


def test_etcd3_node_client_same_as_etcd(tmp_path: Path) -> None:
    require_binary("etcd")
    modules = node_modules()  # installed once, before the two drivers race for it
    assert modules.exists()
    petcd_t, etcd_t = on_both(tmp_path, lambda s: run_driver(s.endpoint, SCENARIOS))
    failures = [f"{scenario}:\n" + transcript_diff(etcd_t[scenario], petcd_t[scenario])
                for scenario in SCENARIOS if petcd_t[scenario] != etcd_t[scenario]]
    assert not failures, "npm etcd3: petcd differs from etcd\n" + "\n\n".join(failures)
    t = {name: dict((step, r) for step, r in steps) for name, steps in petcd_t.items()}
    # beyond equality, what Node users rely on (so an oracle that changed would show)
    assert all(name != "scenario failed" for steps in petcd_t.values() for name, _ in steps), petcd_t
    assert t["lease"]["revoke again raw"]["raised"] == "EtcdLeaseInvalidError"
    assert t["lease"]["lost"][0] == "lost" and t["lease"]["lost"][1]["raised"] == "EtcdLeaseInvalidError"
    assert t["lock"]["second acquire"]["raised"] == "EtcdLockFailedError"
    assert t["auth"]["alice read outside"]["raised"] == "EtcdPermissionDeniedError"
    assert t["auth"]["wrong password"]["raised"] == "EtcdAuthenticationFailedError"
    assert t["stm"]["conflict"]["raised"] == "STMConflictError"
    assert t["stm"]["counter after"] == 9
