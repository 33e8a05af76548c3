"""Pointed at a data directory real etcd left behind, petcd refuses with a
clear message and changes nothing in it: not a byte, not a name, not a
timestamp."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from petcd.server.config import ServerConfig
from petcd.storage.etcd_datadir import EtcdDataDirError
from petcd.testing.harness import etcd_server, etcdctl, free_port

pytestmark = pytest.mark.timeout(300)


def _tree(root: Path) -> dict[str, tuple[int, int, int, str]]:
    """Every file and directory under root: mode, size, mtime, sha256."""
    out: dict[str, tuple[int, int, int, str]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = p.lstat()
            digest = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else ""
            out[str(p.relative_to(root))] = (st.st_mode, st.st_size, st.st_mtime_ns, digest)
    st = root.lstat()
    out["."] = (st.st_mode, st.st_size, st.st_mtime_ns, "")
    return out


@pytest.fixture(scope="module")
def etcd_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("etcd-dir")
    # a low snapshot count, so the dir has etcd's .snap files too
    s = etcd_server(tmp, extra=["--snapshot-count", "20"]).start()
    try:
        for i in range(60):
            etcdctl(s.endpoint, "put", f"k{i}", f"v{i}")
    finally:
        s.stop()
    assert list((s.data_dir / "member" / "snap").glob("*.snap"))
    return s.data_dir


def test_petcd_refuses_an_etcd_data_dir_untouched(etcd_data_dir: Path) -> None:
    before = _tree(etcd_data_dir)
    client, peer = f"http://127.0.0.1:{free_port()}", f"http://127.0.0.1:{free_port()}"
    cp = subprocess.run(
        [sys.executable, "-m", "petcd", "--data-dir", str(etcd_data_dir), "--listen-client-urls", client,
         "--advertise-client-urls", client, "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
         "--initial-cluster", f"default={peer}"],
        capture_output=True, text=True, timeout=120,
    )
    assert cp.returncode == 1
    assert "belongs to etcd" in cp.stderr and "petcd migrate --data-dir" in cp.stderr
    assert "bbolt" in cp.stderr
    assert _tree(etcd_data_dir) == before


def test_embedded_member_refuses_an_etcd_data_dir(etcd_data_dir: Path) -> None:
    from petcd.embed.etcd import Etcd

    before = _tree(etcd_data_dir)
    with pytest.raises(EtcdDataDirError, match="belongs to etcd"):
        Etcd(ServerConfig(data_dir=str(etcd_data_dir)))
    assert _tree(etcd_data_dir) == before


def test_only_etcds_wal_is_enough_to_refuse(etcd_data_dir: Path, tmp_path: Path) -> None:
    # a dir whose db is gone (or was never written) but whose WAL is etcd's
    copy = tmp_path / "wal-only"
    (copy / "member").mkdir(parents=True)
    import shutil

    shutil.copytree(etcd_data_dir / "member" / "wal", copy / "member" / "wal")
    before = _tree(copy)
    with pytest.raises(EtcdDataDirError, match="etcd's WAL"):
        from petcd.embed.etcd import Etcd

        Etcd(ServerConfig(data_dir=str(copy)))
    assert _tree(copy) == before


@pytest.mark.parametrize("dry_run", [False, True])
def test_wal_repair_refuses_an_etcd_data_dir_untouched(etcd_data_dir: Path, dry_run: bool) -> None:
    before = _tree(etcd_data_dir)
    cp = subprocess.run([sys.executable, "-m", "petcd", "wal", "repair", "--data-dir", str(etcd_data_dir)]
                        + (["--dry-run"] if dry_run else []), capture_output=True, text=True, timeout=120)
    assert cp.returncode == 1
    assert "belongs to etcd" in cp.stderr
    assert _tree(etcd_data_dir) == before
