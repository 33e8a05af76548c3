"""Snapshotter: save/load the newest, fall back past corrupt files, purge."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from petcd.raft.types import ConfState, Snapshot, SnapshotMetadata
from petcd.storage.snap import Snapshotter, snap_name


def snap(term: int, index: int, data: bytes = b"") -> Snapshot:
    return Snapshot(data or b"state@%d" % index, SnapshotMetadata(ConfState(voters=[1, 2, 3]), index, term))


def test_save_then_load_returns_the_newest(tmp_path: Path) -> None:
    s = Snapshotter(str(tmp_path / "snap"))
    assert s.load() is None
    s.save_snap(snap(1, 10))
    s.save_snap(snap(2, 30))
    s.save_snap(snap(2, 20))
    got = s.load()
    assert got == snap(2, 30)
    assert sorted(os.listdir(tmp_path / "snap")) == [snap_name(1, 10), snap_name(2, 20), snap_name(2, 30)]
    # A new Snapshotter (a restart) sees the same.
    assert Snapshotter(str(tmp_path / "snap")).load() == snap(2, 30)


def test_an_empty_snapshot_is_not_saved(tmp_path: Path) -> None:
    s = Snapshotter(str(tmp_path))
    s.save_snap(Snapshot())
    assert os.listdir(tmp_path) == []


def test_a_corrupt_newest_file_is_set_aside_and_the_previous_one_loads(tmp_path: Path) -> None:
    s = Snapshotter(str(tmp_path))
    s.save_snap(snap(1, 10, b"older"))
    s.save_snap(snap(1, 20, b"newer"))
    newest = tmp_path / snap_name(1, 20)
    raw = bytearray(newest.read_bytes())
    raw[-3] ^= 0x01
    newest.write_bytes(bytes(raw))
    (tmp_path / snap_name(1, 30)).write_bytes(b"\x00")  # too short to hold a crc
    got = s.load()
    assert got == snap(1, 10, b"older")
    assert sorted(os.listdir(tmp_path)) == [
        snap_name(1, 10),
        snap_name(1, 20) + ".broken",
        snap_name(1, 30) + ".broken",
    ]


def test_purge_keeps_the_newest_files_and_removes_stray_temporaries(tmp_path: Path) -> None:
    s = Snapshotter(str(tmp_path), keep=3)
    for i in range(1, 8):
        s.save_snap(snap(1, i * 100))
    (tmp_path / (snap_name(1, 800) + ".x1y2.tmp")).write_bytes(b"half written")
    s.purge()
    assert sorted(os.listdir(tmp_path)) == [snap_name(1, 500), snap_name(1, 600), snap_name(1, 700)]
    assert s.load() == snap(1, 700)


_FAILED_SAVE = """
import resource, signal, sys
from petcd.raft.types import ConfState, Snapshot, SnapshotMetadata
from petcd.storage.errors import SnapError
from petcd.storage.snap import Snapshotter
s = Snapshotter(sys.argv[1])
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))  # a real OS error on the write
try:
    s.save_snap(Snapshot(b"x" * 100_000, SnapshotMetadata(ConfState(voters=[1]), 10, 2)))
except SnapError as exc:
    print(exc)
"""


def test_a_failed_save_names_the_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    d = tmp_path / "snap"
    repo = Path(__file__).resolve().parents[2]
    r = subprocess.run([sys.executable, "-c", _FAILED_SAVE, str(d)], capture_output=True, text=True, timeout=60,
                       env={**os.environ, "PYTHONPATH": str(repo)})
    assert r.returncode == 0, r.stderr
    final = d / snap_name(2, 10)
    assert r.stdout.startswith(f"snap: writing {final} failed: [Errno 27] File too large ("), r.stdout
    assert os.listdir(d) == []
