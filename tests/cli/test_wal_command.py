"""`petcd wal repair`: the documented last-resort repair of a corrupt WAL, as
a real process on a real data directory."""

from __future__ import annotations

import os
from pathlib import Path

from petcd.raft.types import Entry, EntryType, HardState
from petcd.storage.backend import Backend
from petcd.storage.wal import WAL

from .conftest import run_petcd


def _entries(first: int, last: int) -> list[Entry]:
    return [Entry(1, i, EntryType.EntryNormal, b"v%d" % i * 20) for i in range(first, last + 1)]


def _corrupt_data_dir(tmp_path: Path) -> tuple[str, str, int]:
    """A data dir whose WAL (one segment, ten saves) has a flipped bit in the
    frame of the sixth save: (data dir, the segment, the frame's offset)."""
    data = tmp_path / "data"
    wal_dir = str(data / "member" / "wal")
    os.makedirs(data / "member")
    w = WAL.create(wal_dir, b"m")
    for i in range(1, 11):
        w.save(HardState(1, 1, i), _entries(i, i))
    [seg] = w.segments()
    w.close()
    raw = bytearray(Path(seg).read_bytes())
    offs, off = [], 0
    while raw[off : off + 4] == b"\xc3\x9bWL":
        offs.append(off)
        off += 16 + int.from_bytes(raw[off + 4 : off + 8], "little")
    raw[offs[6] + 30] ^= 0x20  # frame 0 holds the metadata; frame 6 the sixth save
    Path(seg).write_bytes(bytes(raw))
    return str(data), seg, offs[6]


def _files(d: str) -> dict[str, bytes]:
    return {n: Path(d, n).read_bytes() for n in sorted(os.listdir(d))}


def test_the_refusal_names_the_command_and_dry_run_changes_nothing(tmp_path: Path) -> None:
    data, seg, offset = _corrupt_data_dir(tmp_path)
    wal_dir = os.path.dirname(seg)
    before = _files(wal_dir)
    r = run_petcd("wal", "repair", "--data-dir", data, "--dry-run")
    assert r.returncode == 0, r.stderr
    assert "corrupt: wal: frame payload crc mismatch" in r.stdout
    assert f"{seg} at byte offset {offset}" in r.stdout
    assert f"repair would cut {seg} at byte {offset}" in r.stdout
    assert _files(wal_dir) == before


def test_repair_cuts_the_wal_so_it_opens_with_the_saves_before_the_damage(tmp_path: Path) -> None:
    data, seg, offset = _corrupt_data_dir(tmp_path)
    wal_dir = os.path.dirname(seg)
    r = run_petcd("wal", "repair", "--data-dir", data)
    assert r.returncode == 0, r.stderr
    assert f"cut {seg} at byte {offset}" in r.stdout
    assert "the WAL now ends at entry 5 (term 1, vote 1, commit 5)" in r.stdout
    w = WAL.open(wal_dir, None)
    c = w.read_all()
    w.close()
    assert c.entries == _entries(1, 5)
    [backup] = [n for n in os.listdir(os.path.dirname(wal_dir)) if n.startswith("wal.broken-")]
    assert os.listdir(os.path.join(os.path.dirname(wal_dir), backup)) == [os.path.basename(seg)]
    r = run_petcd("wal", "repair", "--data-dir", data)
    assert r.returncode == 0 and "intact, nothing to repair" in r.stdout


def test_repair_is_refused_when_the_backend_applied_entries_beyond_the_cut(tmp_path: Path) -> None:
    data, seg, _ = _corrupt_data_dir(tmp_path)
    wal_dir = os.path.dirname(seg)
    with Backend(os.path.join(data, "member", "snap", "db")) as b:
        b.set_consistent_index(8, 1)
    before = _files(wal_dir)
    r = run_petcd("wal", "repair", "--data-dir", data)
    assert r.returncode == 1
    assert "refused, nothing changed" in r.stderr and "applied entries up to 8" in r.stderr
    assert _files(wal_dir) == before
    assert not [n for n in os.listdir(os.path.dirname(wal_dir)) if n.startswith("wal.broken-")]
