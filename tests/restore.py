"""A single-member server whose data dir is restored from a snapshot file by the
restore command of its own kind: ``petcd snapshot restore`` for petcd, ``etcdctl
snapshot restore`` for etcd. Shared by the snapshot, migration and bbolt tests."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from petcd.testing.harness import Server, etcd_server, petcd_server, require_binary


def restored_server(kind: str, tmp_path: Path, snapshot: Path, extra: list[str] | None = None) -> Server:
    """A "petcd" or "etcd" server (not started) on fresh ports, with extra flags, whose data
    dir (tmp_path / "restored.<kind>") the restore command made from snapshot; the command
    must succeed (AssertionError with its stderr otherwise)."""
    restored = tmp_path / f"restored.{kind}"
    if kind == "petcd":
        name = "dst"
        server = petcd_server(tmp_path, name=name, data_dir=restored, extra=extra)
        command = [sys.executable, "-m", "petcd", "snapshot", "restore"]
    elif kind == "etcd":
        name = "default"  # the member name etcd_server starts with
        server = etcd_server(tmp_path, extra)
        server.data_dir = restored
        server.args[server.args.index("--data-dir") + 1] = str(restored)
        command = [require_binary("etcdctl"), "snapshot", "restore"]
    else:
        raise ValueError(f"unknown server kind {kind!r}")
    peer = server.args[server.args.index("--initial-advertise-peer-urls") + 1]
    cp = subprocess.run(
        [*command, str(snapshot), "--data-dir", str(restored), "--name", name,
         "--initial-cluster", f"{name}={peer}", "--initial-advertise-peer-urls", peer],
        capture_output=True, text=True, timeout=120, env=dict(os.environ, ETCDCTL_API="3"),
    )
    assert cp.returncode == 0, cp.stderr
    return server
