"""A third gRPC implementation against petcd: Node's @grpc/grpc-js through
the npm ``etcd3`` client (put, get, txn, range, delete, watch, lease, lock,
election), and the same script against real etcd to show the script itself
is right. The package is installed with npm on first use into a cache
directory (``$PETCD_NODE_CACHE``, else ``~/.cache/petcd-node``)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from petcd.testing.harness import etcd_server, petcd_server, require_binary

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

