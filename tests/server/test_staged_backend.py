"""The backend a leader's snapshot carries is staged beside the member's own
(written, fsynced and checked in a worker thread) before raft takes it; the
install after raft has taken it is a rename. What a stage leaves behind, and
what it refuses."""

from __future__ import annotations

import os
from pathlib import Path

from petcd.raft import ConfState, Snapshot, SnapshotMetadata
from petcd.server.config import ServerConfig
from petcd.server.state import discard_staged, install_backend, stage_backend, staged_backend_path
from petcd.storage.backend import Backend


def _config(tmp_path: Path) -> ServerConfig:
    cfg = ServerConfig(data_dir=str(tmp_path / "m.petcd"))
    os.makedirs(os.path.dirname(cfg.backend_path()), exist_ok=True)
    return cfg


def _backend_bytes(tmp_path: Path, index: int, value: bytes) -> bytes:
    """A leader's committed backend at index, as bytes."""
    path = str(tmp_path / "leader.db")
    b = Backend(path)
    b.put("key", b"k", value)
    b.set_consistent_index(index, 3)
    b.commit()
    b.close()
    return Path(path).read_bytes()


def _snapshot(data: bytes, index: int) -> Snapshot:
    return Snapshot(data, SnapshotMetadata(ConfState([1]), index, 3))


def _staged(cfg: ServerConfig) -> list[str]:
    d, base = os.path.split(cfg.backend_path())
    return sorted(n for n in os.listdir(d) if n.startswith(base + "."))


def test_a_staged_backend_is_installed_by_a_rename(tmp_path: Path) -> None:
    cfg = _config(tmp_path)
    snap = _snapshot(_backend_bytes(tmp_path, 50, b"leader's"), 50)
    assert stage_backend(snap, cfg.backend_path()) is None
    staged = staged_backend_path(cfg.backend_path(), 50)
    assert _staged(cfg) == [os.path.basename(staged)], "a lock file or a second copy was left"
    inode = os.stat(staged).st_ino
    install_backend(cfg, snap)
    assert os.stat(cfg.backend_path()).st_ino == inode, "the install wrote a copy instead of renaming the staged file"
    assert _staged(cfg) == []
    b = Backend(cfg.backend_path())
    assert b.get("key", b"k") == b"leader's" and b.consistent_index() == (50, 3)
    b.close()


def test_without_a_staged_file_the_install_writes_the_data(tmp_path: Path) -> None:
    cfg = _config(tmp_path)
    data = _backend_bytes(tmp_path, 7, b"v")
    install_backend(cfg, _snapshot(data, 7))
    assert Path(cfg.backend_path()).read_bytes() == data


def test_a_backend_that_cannot_be_installed_is_refused_and_leaves_nothing(tmp_path: Path) -> None:
    cfg = _config(tmp_path)
    assert stage_backend(_snapshot(b"", 9), cfg.backend_path()) == "it carries no backend"
    why = stage_backend(_snapshot(b"not a database" * 1000, 9), cfg.backend_path())
    assert why is not None and why.startswith("its backend cannot be opened"), why
    behind = stage_backend(_snapshot(_backend_bytes(tmp_path, 40, b"v"), 41), cfg.backend_path())
    assert behind == "its backend is at index 40, behind the snapshot's 41"
    assert _staged(cfg) == []


def test_a_newer_stage_and_a_restart_discard_older_staged_backends(tmp_path: Path) -> None:
    cfg = _config(tmp_path)
    assert stage_backend(_snapshot(_backend_bytes(tmp_path, 10, b"a"), 10), cfg.backend_path()) is None
    (tmp_path / "leader.db").unlink()
    assert stage_backend(_snapshot(_backend_bytes(tmp_path, 20, b"b"), 20), cfg.backend_path()) is None
    assert _staged(cfg) == [os.path.basename(staged_backend_path(cfg.backend_path(), 20))]
    discard_staged(cfg.backend_path())
    assert _staged(cfg) == []
