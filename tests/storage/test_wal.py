"""WAL: round trips, overwrites, segments, torn tails, corruption, locking, SIGKILL."""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from petcd.raft.types import ConfState, Entry, EntryType, HardState
from petcd.storage import wal as wal_mod
from petcd.storage.errors import (
    WalCorruptError,
    WalExistsError,
    WalLockedError,
    WalNotFoundError,
    WalSnapshotMismatchError,
)
from petcd.storage.wal import WAL, WalSnapshot

REPO = Path(__file__).resolve().parents[2]


def payload(i: int) -> bytes:
    """Deterministic entry data: mostly 0..299 bytes, every 64th entry 256 KiB
    (bigger than the crash test's segments, so crashes also hit oversized cuts)."""
    if i % 64 == 0:
        return (b"%d|" % i) * ((256 << 10) // len(b"%d|" % i))
    return (b"%d|" % i * 300)[: (i * 37) % 300]


def ents(first: int, last: int, term: int = 1) -> list[Entry]:
    return [Entry(term, i, EntryType.EntryNormal, payload(i)) for i in range(first, last + 1)]


def test_save_and_read_all_round_trip_across_reopen(tmp_path: Path) -> None:
    d = str(tmp_path / "wal")
    assert not WAL.exists(d)
    w = WAL.create(d, b"member-1")
    assert WAL.exists(d)
    w.save(HardState(1, 1, 0), ents(1, 10))
    w.save(None, [Entry(1, 11, EntryType.EntryConfChange, b"cc"), Entry(2, 12, EntryType.EntryNormal, b"")])
    w.save(HardState(2, 3, 12), [])
    w.save(HardState(2, 3, 12), [])  # unchanged hard state and no entries: nothing written
    w.close()
    w = WAL.open(d, None)
    c = w.read_all()
    assert c.metadata == b"member-1"
    assert c.hard_state == HardState(2, 3, 12)
    assert c.entries == ents(1, 10) + [Entry(1, 11, EntryType.EntryConfChange, b"cc"), Entry(2, 12)]
    assert c.snapshot == WalSnapshot(0, 0)
    w.save(None, ents(13, 13, term=2))  # ready to append after read_all
    w.close()
    w = WAL.open(d, WalSnapshot(10, 1))
    c = w.read_all()
    assert [e.index for e in c.entries] == [11, 12, 13]
    w.close()


def test_create_refuses_an_existing_wal_and_open_needs_one(tmp_path: Path) -> None:
    d = str(tmp_path / "wal")
    with pytest.raises(WalNotFoundError):
        WAL.open(d, None)
    WAL.create(d, b"m").close()
    with pytest.raises(WalExistsError):
        WAL.create(d, b"m")
    assert not os.path.exists(d + ".tmp")


def test_a_second_open_of_the_same_directory_is_refused_until_close(tmp_path: Path) -> None:
    d = str(tmp_path / "wal")
    w = WAL.create(d, b"m")
    with pytest.raises(WalLockedError):
        WAL.open(d, None)
    w.close()
    w2 = WAL.open(d, None)
    w2.close()


def test_overwriting_an_index_drops_the_conflicting_suffix(tmp_path: Path) -> None:
    d = str(tmp_path / "wal")
    w = WAL.create(d, b"m", segment_size=4096)
    w.save(HardState(1, 1, 3), ents(1, 40, term=1))  # spans beyond one small segment later
    w.save(None, ents(41, 60, term=1))
    w.save(HardState(2, 2, 3), ents(20, 25, term=2))  # leader change: 20.. replaced, 26..60 gone
    w.save(None, ents(26, 27, term=2))
    w.close()
    w = WAL.open(d, None, segment_size=4096)
    c = w.read_all()
    w.close()
    assert [e.index for e in c.entries] == list(range(1, 28))
    assert [e.term for e in c.entries] == [1] * 19 + [2] * 8
    assert c.hard_state == HardState(2, 2, 3)


def test_segments_are_cut_and_release_lock_to_deletes_older_ones(tmp_path: Path) -> None:
    d = str(tmp_path / "wal")
    w = WAL.create(d, b"m", segment_size=8192)
    for i in range(1, 301):
        w.save(HardState(1, 1, i - 1), ents(i, i))
    segs = w.segments()
    assert len(segs) >= 5
    names = [os.path.basename(p) for p in segs]
    assert names[0] == "0000000000000000-0000000000000000.wal"
    assert [int(n[:16], 16) for n in names] == list(range(len(names)))
    firsts = [int(n[17:33], 16) for n in names]
    assert firsts == sorted(firsts)
    # Mark a snapshot at 200, then release: segments wholly before the one holding 200 go.
    w.save_snapshot(WalSnapshot(200, 1, ConfState(voters=[1])))
    w.release_lock_to(200)
    left = w.segments()
    holder = max(i for i, f in enumerate(firsts) if f <= 200)
    assert left == segs[holder:]
    assert sorted(os.listdir(d)) == sorted([os.path.basename(p) for p in left] + ["wal.lock"])
    w.save(HardState(1, 1, 300), [])
    w.close()
    w = WAL.open(d, WalSnapshot(200, 1), segment_size=8192)
    c = w.read_all()
    w.close()
    assert c.entries == ents(201, 300)
    assert c.metadata == b"m"  # repeated at the start of every segment
    assert c.hard_state == HardState(1, 1, 300)


def test_a_snapshot_marker_with_another_term_is_refused(tmp_path: Path) -> None:
    d = str(tmp_path / "wal")
    w = WAL.create(d, b"m")
    w.save(HardState(3, 1, 5), ents(1, 5, term=3))
    w.save_snapshot(WalSnapshot(5, 3))
    w.close()
    with pytest.raises(WalSnapshotMismatchError):
        WAL.open(d, WalSnapshot(5, 2))
    w = WAL.open(d, WalSnapshot(5, 3))
    assert w.read_all().entries == []
    w.close()


def _segment(d: str) -> str:
    [p] = [os.path.join(d, n) for n in os.listdir(d) if n.endswith(".wal")]
    return p


def _frame_offsets(path: str) -> list[int]:
    """Start offsets of the frames in a segment (parsing the documented format)."""
    data = Path(path).read_bytes()
    offs, off = [], 0
    while data[off : off + 4] == b"\xc3\x9bWL":
        offs.append(off)
        off += 16 + int.from_bytes(data[off + 4 : off + 8], "little")
    offs.append(off)  # end of the last frame
    return offs


def _tears(start: int, end: int) -> list[tuple[int, int]]:
    """Ranges [a, b) of the frame [start, end) that a torn write can leave
    unwritten (zero): one of its sectors (file offsets at multiples of 512,
    clipped to the frame), or every sector from one of them to the end."""
    bounds = [start] + [b for b in range(start // 512 * 512 + 512, end, 512)] + [end]
    ranges = [(bounds[i], bounds[i + 1]) for i in range(len(bounds) - 1)]
    ranges += [(bounds[i], end) for i in range(1, len(bounds) - 2)]
    return ranges


@pytest.mark.parametrize("mode", ["truncate", "zero"])
def test_a_torn_last_record_at_every_byte_offset_opens_at_the_previous_record(tmp_path: Path, mode: str) -> None:
    src = str(tmp_path / "src")
    w = WAL.create(src, b"m", segment_size=8192, unsafe_no_fsync=True)
    w.save(HardState(1, 1, 1), ents(1, 2))
    w.save(HardState(1, 1, 2), ents(3, 3))
    w.save(HardState(1, 1, 3), [Entry(1, 4, data=b"last record " * 200)])  # spans several sectors
    w.close()
    seg_name = os.path.basename(_segment(src))
    offs = _frame_offsets(os.path.join(src, seg_name))
    start, end = offs[-2], offs[-1]
    original = Path(src, seg_name).read_bytes()
    # truncate: the file ends at every byte inside the record (it runs past
    # the end of the file); zero: a sector, or the sectors from one on,
    # never reached the disk.
    cases = [(cut, cut) for cut in range(start, end)] if mode == "truncate" else _tears(start, end)
    assert len(cases) >= 5
    for a, b in cases:
        d = str(tmp_path / f"{mode}-{a}-{b}")
        shutil.copytree(src, d)
        path = os.path.join(d, seg_name)
        if mode == "truncate":
            os.truncate(path, a)
        else:
            with open(path, "r+b") as f:
                f.seek(a)
                f.write(bytes(b - a))
        w = WAL.open(d, None, segment_size=8192, unsafe_no_fsync=True)
        c = w.read_all()
        assert c.entries == ents(1, 3), (a, b)
        assert c.hard_state == HardState(1, 1, 2), (a, b)
        w.save(HardState(1, 1, 4), [Entry(1, 4, data=b"rewritten")])  # appends where the torn record was
        w.close()
        w = WAL.open(d, None, segment_size=8192, unsafe_no_fsync=True)
        c = w.read_all()
        w.close()
        assert c.entries == ents(1, 3) + [Entry(1, 4, data=b"rewritten")], (a, b)
        assert Path(path).read_bytes() != original
        shutil.rmtree(d)


def test_a_bit_flip_in_the_last_complete_frame_is_corruption_not_a_torn_write(tmp_path: Path) -> None:
    """Issue 9, defect 8: the last frame, written whole, then damaged, was cut
    silently as if torn (losing acknowledged entries); it must be refused,
    naming the file and the frame's offset, with the file untouched."""
    src = str(tmp_path / "src")
    w = WAL.create(src, b"m", segment_size=8192)
    w.save(HardState(1, 1, 1), ents(1, 2))
    w.save(HardState(1, 1, 2), [Entry(1, 3, data=b"acknowledged " * 100)])  # the last frame
    w.close()
    seg_name = os.path.basename(_segment(src))
    start, end = _frame_offsets(os.path.join(src, seg_name))[-2:]
    original = Path(src, seg_name).read_bytes()
    positions = list(range(start, start + 16)) + list(range(start + 16, end, 37)) + [end - 30]
    for pos in positions:
        d = str(tmp_path / f"flip-{pos}")
        shutil.copytree(src, d)
        path = os.path.join(d, seg_name)
        raw = bytearray(original)
        raw[pos] ^= 0x04
        Path(path).write_bytes(bytes(raw))
        with pytest.raises(WalCorruptError) as info:
            WAL.open(d, None, segment_size=8192)
        assert info.value.path == path and info.value.offset == start, pos
        assert f"{path} at byte offset {start}" in str(info.value)
        assert "petcd wal repair" in str(info.value)
        assert Path(path).read_bytes() == bytes(raw), pos  # nothing was cut
        shutil.rmtree(d)


@pytest.mark.parametrize("where", ["payload", "header"])
def test_a_flipped_bit_before_the_tail_raises_naming_file_and_offset_and_changes_nothing(
    tmp_path: Path, where: str
) -> None:
    d = str(tmp_path / "wal")
    w = WAL.create(d, b"m", segment_size=1 << 20)
    for i in range(1, 6):
        w.save(HardState(1, 1, i), ents(i, i))
    w.close()
    path = _segment(d)
    offs = _frame_offsets(path)
    victim = offs[3]  # the frame of the third save; two valid frames follow it
    pos = victim + (16 + 10 if where == "payload" else 5)
    raw = bytearray(Path(path).read_bytes())
    raw[pos] ^= 0x10
    Path(path).write_bytes(bytes(raw))
    with pytest.raises(WalCorruptError) as info:
        WAL.open(d, None)
    assert info.value.path == path
    assert info.value.offset == victim
    assert path in str(info.value) and str(victim) in str(info.value)
    assert Path(path).read_bytes() == bytes(raw)
    assert not WAL.exists(d + ".tmp")
    # The lock was released: a repaired copy would open again.
    with pytest.raises(WalCorruptError):
        WAL.open(d, None)


def test_damage_in_a_sealed_segment_or_a_missing_segment_is_corruption(tmp_path: Path) -> None:
    d = str(tmp_path / "wal")
    w = WAL.create(d, b"m", segment_size=4096)
    for i in range(1, 120):
        w.save(HardState(1, 1, i), ents(i, i))
    segs = w.segments()
    w.close()
    assert len(segs) >= 3
    first = segs[0]
    offs = _frame_offsets(first)
    raw = Path(first).read_bytes()
    # Garbage in the zero tail after the last frame of a sealed segment.
    Path(first).write_bytes(raw[: offs[-1]] + b"\x01" + raw[offs[-1] + 1 :])
    with pytest.raises(WalCorruptError) as info:
        WAL.open(d, None, segment_size=4096)
    assert info.value.path == first and info.value.offset == offs[-1]
    # The last frame of a sealed segment lost (zeroed): the CRC chain in the next segment notices.
    Path(first).write_bytes(raw[: offs[-2]] + bytes(offs[-1] - offs[-2]) + raw[offs[-1] :])
    with pytest.raises(WalCorruptError, match="chain") as info:
        WAL.open(d, None, segment_size=4096)
    assert info.value.path == segs[1]
    Path(first).write_bytes(raw)
    os.unlink(segs[1])
    with pytest.raises(WalCorruptError, match="missing"):
        WAL.open(d, None, segment_size=4096)


def test_save_from_a_worker_thread_and_markers_from_another_do_not_interleave(tmp_path: Path) -> None:
    d = str(tmp_path / "wal")
    w = WAL.create(d, b"m", segment_size=16384, unsafe_no_fsync=True)
    errors: list[BaseException] = []

    def saver() -> None:
        try:
            for i in range(1, 401):
                w.save(HardState(1, 1, i), ents(i, i))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    t = threading.Thread(target=saver)
    t.start()
    for i in range(200):
        w.save_snapshot(WalSnapshot(0, 0))
        if i % 50 == 0:
            w.release_lock_to(0)
    t.join(timeout=60)
    assert not t.is_alive() and not errors
    w.close()
    w = WAL.open(d, None, segment_size=16384)
    assert w.read_all().entries == ents(1, 400)
    w.close()


CHILD = r"""
import sys
sys.path.insert(0, {repo!r})
from petcd.raft.types import Entry, HardState
from petcd.storage.wal import WAL

def payload(i):
    if i % 64 == 0:
        return (b"%d|" % i) * ((256 << 10) // len(b"%d|" % i))
    return (b"%d|" % i * 300)[: (i * 37) % 300]

d = sys.argv[1]
if WAL.exists(d):
    w = WAL.open(d, None, segment_size=32768)
    last = len(w.read_all().entries)
else:
    w = WAL.create(d, b"crash", segment_size=32768)
    last = 0
print("ready", last, flush=True)
i = last + 1
while True:
    k = 1 + i % 4
    w.save(HardState(1, 1, i - 1), [Entry(1, j, data=payload(j)) for j in range(i, i + k)])
    print(i + k - 1, flush=True)
    i += k
"""


def test_sigkill_at_random_moments_keeps_every_acknowledged_save(tmp_path: Path) -> None:
    d = str(tmp_path / "wal")
    script = tmp_path / "child.py"
    script.write_text(CHILD.format(repo=str(REPO)))
    rng = random.Random(1234)
    deadline = time.monotonic() + 25
    rounds = 0
    acked = 0
    while rounds < 8 and time.monotonic() < deadline:
        rounds += 1
        proc = subprocess.Popen([sys.executable, str(script), d], stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None
        ready = proc.stdout.readline().split()
        assert ready[0] == "ready", ready
        assert int(ready[1]) >= acked  # nothing acknowledged in earlier rounds was lost
        killer = threading.Timer(rng.uniform(0.02, 0.4), proc.send_signal, args=(signal.SIGKILL,))
        killer.start()
        for line in proc.stdout:  # every line is a save() that returned
            acked = max(acked, int(line))
        proc.wait(timeout=30)
        killer.join()
        assert proc.returncode == -signal.SIGKILL
        w = WAL.open(d, None, segment_size=32768)
        c = w.read_all()
        w.close()
        indexes = [e.index for e in c.entries]
        assert indexes == list(range(1, len(indexes) + 1)), "the log is not a prefix"
        assert len(indexes) >= acked, f"acknowledged {acked} but only {len(indexes)} survived"
        assert len(indexes) <= acked + 4  # at most the one save in flight
        assert all(e.data == payload(e.index) for e in c.entries)
        acked = len(indexes)
    assert rounds >= 3


_FAILED_CUT = """
import os, resource, signal, sys
from petcd.raft.types import Entry, HardState
from petcd.storage.errors import WalError, WalWriteError
from petcd.storage.wal import WAL
d = sys.argv[1]
w = WAL.create(d, b"m", segment_size=65536)
# A real OS error: no file may grow to a segment's size, so the next cut fails.
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (65535, 65535))
acked = 0
try:
    for i in range(1, 10_000):
        w.save(HardState(1, 1, i), [Entry(1, i, data=b"x" * 1000)])
        acked = i
except WalWriteError as exc:
    print("FAILED", acked, exc.path, "|", exc)
try:
    w.save(HardState(1, 1, acked + 1), [Entry(1, acked + 1, data=b"y")])
except WalError as exc:
    print("REFUSED", exc)
w.close()
"""


def test_a_failed_wal_write_names_the_file_and_refuses_later_writes(tmp_path: Path) -> None:
    d = str(tmp_path / "wal")
    r = subprocess.run([sys.executable, "-c", _FAILED_CUT, d], capture_output=True, text=True, timeout=120,
                       env={**os.environ, "PYTHONPATH": str(REPO)})
    assert r.returncode == 0, r.stderr
    failed, refused = r.stdout.splitlines()
    _, acked, path, rest = failed.split(" ", 3)
    assert path.startswith(d + os.sep) and path.endswith(".wal"), failed
    assert f"wal: creating the segment {path} failed: [Errno 27] File too large" in rest, failed
    assert "bytes free on its file system" in rest
    assert refused.startswith("REFUSED wal: unusable after an earlier write failure"), refused
    w = WAL.open(d, None, segment_size=65536)
    c = w.read_all()
    w.close()
    assert [e.index for e in c.entries] == list(range(1, int(acked) + 1))  # every acknowledged save survives


def _make_corrupt_wal(tmp_path: Path) -> tuple[str, str, int, int]:
    """A WAL of several segments with a flipped bit in the fourth frame of
    its second segment: (dir, damaged segment, damaged frame's offset, the
    last entry index before it)."""
    d = str(tmp_path / "member" / "wal")
    os.makedirs(os.path.dirname(d))
    w = WAL.create(d, b"m", segment_size=4096)
    for i in range(1, 120):
        w.save(HardState(1, 1, i), ents(i, i))
    segs = w.segments()
    w.close()
    assert len(segs) >= 3
    damaged = segs[1]
    offs = _frame_offsets(damaged)
    raw = bytearray(Path(damaged).read_bytes())
    raw[offs[3] + 20] ^= 0x01
    Path(damaged).write_bytes(bytes(raw))
    # Before the damaged frame: the segment's first frame (crc chain,
    # metadata, hard state) and two frames of one entry each, the first of
    # them the entry the segment is named after.
    first_index = int(os.path.basename(damaged).split("-")[1].split(".")[0], 16)
    return d, damaged, offs[3], first_index + 1


def test_repair_cuts_at_the_damage_keeps_everything_before_it_and_can_be_undone(tmp_path: Path) -> None:
    d, damaged, offset, last_kept = _make_corrupt_wal(tmp_path)
    before = {n: Path(d, n).read_bytes() for n in os.listdir(d) if n.endswith(".wal")}
    with pytest.raises(WalCorruptError):
        WAL.open(d, None, segment_size=4096)
    result = wal_mod.repair(d, None, segment_size=4096)
    assert result is not None and result.damaged == damaged and result.offset == offset
    w = WAL.open(d, None, segment_size=4096)
    c = w.read_all()
    assert c.entries == ents(1, last_kept)
    assert c.hard_state == HardState(1, 1, last_kept)
    w.save(HardState(1, 1, last_kept + 1), ents(last_kept + 1, last_kept + 1))  # the log goes on
    w.close()
    [backup] = [p for p in os.listdir(tmp_path / "member") if p.startswith("wal.broken-")]
    moved = sorted(os.listdir(tmp_path / "member" / backup))
    assert moved == sorted(n for n in before if n >= os.path.basename(damaged))
    for n in moved:  # the originals are kept byte for byte
        assert Path(tmp_path / "member" / backup / n).read_bytes() == before[n]
    assert wal_mod.repair(d, None, segment_size=4096) is None  # nothing left to repair


def test_repair_then_undo_restores_the_original_files(tmp_path: Path) -> None:
    d, damaged, offset, last_kept = _make_corrupt_wal(tmp_path)
    before = {n: Path(d, n).read_bytes() for n in os.listdir(d)}
    result = wal_mod.repair(d, None, segment_size=4096)
    assert result is not None
    assert result.damaged == damaged and result.offset == offset and result.last_index == last_kept
    assert str(offset) in result.problem
    wal_mod.undo_repair(result)
    assert {n: Path(d, n).read_bytes() for n in os.listdir(d)} == before
    assert not os.path.exists(result.backup_dir)


_FAILED_CREATE = """
import resource, signal, sys
from petcd.storage.errors import WalWriteError
from petcd.storage.wal import WAL
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (65536, 65536))
try:
    WAL.create(sys.argv[1], b"m", segment_size=1 << 20)
except WalWriteError as exc:
    print(exc)
"""


def test_a_wal_that_cannot_be_created_names_the_directory_and_leaves_nothing(tmp_path: Path) -> None:
    d = str(tmp_path / "wal")
    r = subprocess.run([sys.executable, "-c", _FAILED_CREATE, d], capture_output=True, text=True, timeout=60,
                       env={**os.environ, "PYTHONPATH": str(REPO)})
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"wal: creating the WAL {d} failed: [Errno 27] File too large ("), r.stdout
    assert os.listdir(tmp_path) == []
