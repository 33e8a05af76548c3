"""etcdctl snapshot save, then `petcd snapshot restore`, then a member
started from the restored data dir serves the same data."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from petcd.testing.harness import etcdctl, petcd_server
from tests.restore import restored_server

pytestmark = pytest.mark.timeout(300)


def test_snapshot_save_restore_and_serve(tmp_path: Path) -> None:
    src = petcd_server(tmp_path, name="src").start()
    try:
        for i in range(50):
            etcdctl(src.endpoint, "put", f"snap/{i:03d}", f"value-{i}")
        before = json.loads(etcdctl(src.endpoint, "get", "snap/", "--prefix", "-w", "json").stdout)
        db = tmp_path / "backup.db"
        out = etcdctl(src.endpoint, "snapshot", "save", str(db))
        assert "Snapshot saved" in out.stdout + out.stderr
    finally:
        src.stop()

    status = subprocess.run([sys.executable, "-m", "petcd", "snapshot", "status", str(db), "-w", "json"],
                            capture_output=True, text=True, timeout=60)
    assert status.returncode == 0, status.stderr
    st = json.loads(status.stdout)
    assert st["revision"] == before["header"]["revision"] and st["totalKey"] >= 50

    dst = restored_server("petcd", tmp_path, db)
    dst.start()
    try:
        after = json.loads(etcdctl(dst.endpoint, "get", "snap/", "--prefix", "-w", "json").stdout)
        assert after["kvs"] == before["kvs"]
        assert after["header"]["revision"] == before["header"]["revision"]
        etcdctl(dst.endpoint, "put", "snap/new", "x")  # and it takes writes
    finally:
        dst.stop()


def test_restore_refuses_a_corrupted_snapshot(tmp_path: Path) -> None:
    src = petcd_server(tmp_path, name="src").start()
    try:
        etcdctl(src.endpoint, "put", "k", "v")
        db = tmp_path / "backup.db"
        etcdctl(src.endpoint, "snapshot", "save", str(db))
    finally:
        src.stop()
    raw = bytearray(db.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    db.write_bytes(bytes(raw))
    cp = subprocess.run([sys.executable, "-m", "petcd", "snapshot", "restore", str(db), "--data-dir",
                         str(tmp_path / "bad.petcd")], capture_output=True, text=True, timeout=60)
    assert cp.returncode != 0
    assert "sha256" in cp.stderr or "integrity" in cp.stderr
    assert not (tmp_path / "bad.petcd" / "member" / "wal").exists()
