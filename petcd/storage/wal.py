"""The write-ahead log: raft's hard state and entries, durable before use.

What it is for: every raft ``Ready`` is made durable here with ONE write and
ONE fdatasync (``save``) before the server acknowledges anything; after a
crash ``open`` + ``read_all`` give back the hard state and the entries above
the newest raft snapshot.

On-disk format (petcd's own; not etcd's byte format)
----------------------------------------------------
A WAL is a directory of segment files named like etcd's,
``%016x-%016x.wal`` = (sequence number, index of the first entry expected in
the segment), plus a ``wal.lock`` file held with ``flock`` while a WAL object
has the directory open. Segments are preallocated (``posix_fallocate``) so
the unwritten tail reads as zeros.

A segment is a sequence of *frames*; one ``save()`` or ``save_snapshot()``
writes exactly one frame with one ``pwritev`` and one ``fdatasync``::

    frame   = magic "\\xc3\\x9bWL" | u32 payload length | u32 crc32(payload) | u32 crc32(previous 12 bytes) | payload
    payload = record*
    record  = u8 type | u32 length | body

Record types: METADATA (opaque bytes given to ``create``), ENTRY (u64 term,
u64 index, u8 type, data), STATE (u64 term, u64 vote, u64 commit), SNAPSHOT
(u64 index, u64 term, u8 has-conf-state, ConfState protobuf) and CRC (u32).
The first frame of every segment starts with a CRC record holding the
*chain* value: crc32 folded over the payload CRCs of every earlier frame in
every earlier segment. A missing, reordered or foreign segment breaks the
chain. Each new segment's first frame also repeats the metadata and the
latest hard state, so releasing old segments loses neither.

Entries are encoded with ``struct`` rather than raftpb protobuf: building a
protobuf message per entry costs several microseconds, ``struct.pack`` a
fraction of one, and the format is private to this module.

Torn tail versus corruption (the rule)
--------------------------------------
Frames are decoded from the start of each segment. At the first offset F
where a frame is incomplete, has a bad magic or header CRC, or a payload
CRC mismatch:

1. if every byte from F to the end of the file is zero, F is the clean end
   of the log (the preallocated tail);
2. otherwise, if a *valid frame* (good header CRC, fits in the file, good
   payload CRC) starts anywhere after F (after the bad frame's claimed end,
   when its header is intact), the damage is in the middle of durable data:
   ``WalCorruptError`` naming the file and F; the file is not touched;
3. otherwise, in any segment but the last, it is corruption too (a segment
   is sealed and fsync'd before the next one is created);
4. otherwise (the last segment) the frame at F is a *torn write*, the
   remains of the one write in flight when the process died (its ``save``
   never returned, so nothing in it was acknowledged), when it runs past
   the end of the file, or when one of its 512-byte sectors (file offsets
   at multiples of 512; for a bad header, the header's sectors) is still
   all zeros: the segment is preallocated with zeros and disks write whole
   sectors, so a write that did not finish leaves a zero sector. The file
   is then truncated at F (and re-preallocated) and the log opens at the
   last whole frame;
5. a frame that lies wholly in the file with every sector written, whose
   CRC still fails, was written whole and damaged afterwards (a bit flip
   on the medium): ``WalCorruptError`` naming the file and F, as etcd
   refuses to start on a CRC mismatch.

Because a whole ``save`` is one frame, reordered sector writes within the
in-flight write cannot produce a valid frame after a bad one. (A bit flip
in the last frame of a segment whose final sector holds only zero bytes of
data, such as the high bytes of a hard state, reads as a tear; that frame
was never followed by another write.)

Repairing a corrupt WAL
-----------------------
A member whose WAL is corrupt refuses to start; the error names the
segment and the byte offset. In order of preference:

1. In a cluster with a healthy quorum, replace the member: ``etcdctl member
   remove <id>``, move its data directory aside, ``etcdctl member add``,
   and start it with ``--initial-cluster-state existing``; it receives
   everything from the leader. Nothing is lost.
2. A single member: restore the newest ``etcdctl snapshot save`` file with
   ``petcd snapshot restore``; writes after the snapshot are lost.
3. As a last resort, ``petcd wal repair --data-dir DIR`` (:func:`repair`)
   cuts the WAL at the damaged record and keeps everything before it. The
   damaged segment and every later one are moved, not deleted, into
   ``<wal dir>.broken-<UTC time>``. It is lossy: entries from the damage
   on are dropped (they may have been acknowledged; in a cluster the other
   members hold the committed ones and send them back), and so is any
   term/vote recorded there, so a repaired member may cast a second vote in
   a term it already voted in: only repair a member of a cluster when its
   peers are up and past that term. The command refuses (and puts the
   files back) when the backend already applied entries beyond the cut,
   since the member could never catch up with its own database.

Write failures
--------------
A failed write, fsync or segment creation (disk full, I/O error, read-only
file system) raises ``WalWriteError`` naming the file, the OS error and the
free space left. It is final: the file may hold part of the frame and,
after a failed fsync, the page cache may claim data the disk does not hold,
so every later write raises again and the server stops (fail-stop). The
next open decides what of the failed write survived by the rule above.

Threading: every public method takes the WAL's lock, so ``save`` running in
a worker thread and ``save_snapshot``/``release_lock_to`` on the event loop
do not interleave.
"""

from __future__ import annotations

import errno
import fcntl
import gc
import logging
import os
import re
import shutil
import struct
import threading
import time
import zlib
from dataclasses import dataclass, field

from petcd import stats
from petcd.raft.types import ConfState, Entry, EntryType, HardState
from petcd.storage.errors import (
    WalClosedError,
    WalCorruptError,
    WalError,
    WalExistsError,
    WalLockedError,
    WalNotFoundError,
    WalSnapshotMismatchError,
    WalWriteError,
)
from petcd.storage.fsutil import PRIVATE_DIR_MODE, fsync_dir, make_private_dirs

log = logging.getLogger("petcd.storage.wal")

MAGIC = b"\xc3\x9bWL"
_HDR12 = struct.Struct("<4sII")  # magic, payload length, payload crc
_HCRC = struct.Struct("<I")
_HDR = struct.Struct("<4sIII")
HEADER_SIZE = _HDR.size

REC_METADATA = 1
REC_ENTRY = 2
REC_STATE = 3
REC_CRC = 4
REC_SNAPSHOT = 5

_REC = struct.Struct("<BI")
_ENTRY_REC = struct.Struct("<BIQQB")  # record header + entry header, packed in one call
_ENTRY = struct.Struct("<QQB")
_STATE_REC = struct.Struct("<BIQQQ")
_STATE = struct.Struct("<QQQ")
_SNAP = struct.Struct("<QQB")
_CRC = struct.Struct("<I")
_ENTRY_TYPES = {int(t): t for t in EntryType}

_SEGMENT_RE = re.compile(r"^([0-9a-f]{16})-([0-9a-f]{16})\.wal$")
LOCK_NAME = "wal.lock"
_ZERO_CHUNK = bytes(1 << 20)

DEFAULT_SEGMENT_SIZE = 64 << 20
# Tests set a small segment size (etcd's tests set wal.SegmentSizeBytes) so
# that segment cuts, and the disk faults they can meet, come within seconds.
SEGMENT_SIZE_ENV = "PETCD_WAL_SEGMENT_BYTES"
_MIN_SEGMENT_SIZE = 64 << 10


def _segment_size_from_env() -> int:
    raw = os.environ.get(SEGMENT_SIZE_ENV)
    if not raw:
        return DEFAULT_SEGMENT_SIZE
    try:
        size = int(raw)
    except ValueError:
        size = 0
    if size < _MIN_SEGMENT_SIZE:
        log.warning("wal: ignoring %s=%r (want an integer >= %d)", SEGMENT_SIZE_ENV, raw, _MIN_SEGMENT_SIZE)
        return DEFAULT_SEGMENT_SIZE
    return size


@dataclass(slots=True)
class WalSnapshot:
    """A snapshot marker: the raft snapshot at (index, term) was saved."""

    index: int = 0
    term: int = 0
    conf_state: ConfState | None = None


@dataclass(slots=True)
class WalContents:
    """What read_all() recovers."""

    metadata: bytes
    hard_state: HardState
    entries: list[Entry]
    snapshot: WalSnapshot = field(default_factory=WalSnapshot)


@dataclass(slots=True)
class _Segment:
    seq: int
    index: int
    path: str


def segment_name(seq: int, index: int) -> str:
    return f"{seq:016x}-{index:016x}.wal"


def _list_segments(dirpath: str) -> list[_Segment]:
    segs = []
    for name in os.listdir(dirpath):
        m = _SEGMENT_RE.match(name)
        if m:
            segs.append(_Segment(int(m.group(1), 16), int(m.group(2), 16), os.path.join(dirpath, name)))
    segs.sort(key=lambda s: s.seq)
    return segs


def _preallocate(fd: int, size: int) -> None:
    try:
        os.posix_fallocate(fd, 0, size)
    except OSError as exc:
        if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
            raise
        if os.fstat(fd).st_size < size:
            os.ftruncate(fd, size)


def _pwrite_all(fd: int, bufs: list[bytes], offset: int) -> None:
    total = sum(len(b) for b in bufs)
    n = os.pwritev(fd, bufs, offset)
    if n < total:  # short writes are rare on regular files; finish with one buffer
        rest = b"".join(bufs)[n:]
        offset += n
        while rest:
            k = os.pwrite(fd, rest, offset)
            rest = rest[k:]
            offset += k


def _frame(payload: bytes) -> tuple[bytes, int]:
    """The frame header for payload, and the payload's crc."""
    pcrc = zlib.crc32(payload)
    hdr = _HDR12.pack(MAGIC, len(payload), pcrc)
    return hdr + _HCRC.pack(zlib.crc32(hdr)), pcrc


def _chain(chain: int, pcrc: int) -> int:
    return zlib.crc32(_CRC.pack(pcrc), chain)


def _lock_dir(dirpath: str) -> int:
    fd = os.open(os.path.join(dirpath, LOCK_NAME), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise WalLockedError(f"wal: {dirpath} is locked by another WAL (this or another process)") from None
    return fd


# --- reading ------------------------------------------------------------------


_PAST_EOF = "frame runs past the end of the file"
_SHORT_HEADER = "incomplete frame header"
_BAD_PAYLOAD = "frame payload crc mismatch"
# Torn writes are assumed to tear at this granularity (disks write whole
# sectors); see _torn_in.
_SECTOR = 512


def _check_frame(data: bytes, mv: memoryview, off: int) -> tuple[int, int, str]:
    """Validate the frame at off: (end, skip_to, problem). problem == "" means
    valid; otherwise skip_to is where a search for later frames may start
    (for a payload crc mismatch: the frame's claimed end)."""
    size = len(data)
    if off + HEADER_SIZE > size:
        return -1, off + 1, _SHORT_HEADER
    magic, length, pcrc, hcrc = _HDR.unpack_from(data, off)
    if magic != MAGIC:
        return -1, off + 1, "bad frame magic"
    if zlib.crc32(mv[off : off + 12]) != hcrc:
        return -1, off + 1, "frame header crc mismatch"
    end = off + HEADER_SIZE + length
    if end > size:
        return -1, end, _PAST_EOF
    if zlib.crc32(mv[off + HEADER_SIZE : end]) != pcrc:
        return -1, end, _BAD_PAYLOAD
    return end, end, ""


def _torn_in(data: bytes, start: int, end: int) -> bool:
    """True when some sector of [start, end) (sector boundaries at multiples
    of _SECTOR in the file, the first and last clipped to the range) holds
    only zeros: a part of the write that never reached the disk. A frame
    whose every sector holds data was written whole, so a bad crc in it is
    damage, not a tear."""
    pos = start
    while pos < end:
        nxt = min(end, (pos // _SECTOR + 1) * _SECTOR)
        if data.count(0, pos, nxt) == nxt - pos:
            return True
        pos = nxt
    return False


def _data_end(data: bytes, start: int) -> int:
    """Offset just after the last non-zero byte at or after start (start if none)."""
    end = len(data)
    step = len(_ZERO_CHUNK)
    while end > start:
        lo = max(start, end - step)
        chunk = data[lo:end]
        if chunk != _ZERO_CHUNK[: end - lo]:
            return lo + len(chunk.rstrip(b"\0"))
        end = lo
    return start


def _valid_frame_after(data: bytes, mv: memoryview, pos: int, limit: int) -> bool:
    while True:
        pos = data.find(MAGIC, pos, limit)
        if pos < 0:
            return False
        end, _, problem = _check_frame(data, mv, pos)
        if not problem:
            return True
        pos += 1


class _Replay:
    """Folds decoded records, in log order, into what read_all returns."""

    def __init__(self, snap: WalSnapshot) -> None:
        self.snap = snap
        self.base = snap.index
        self.entries: list[Entry] = []
        self.state = HardState()
        self.metadata: bytes | None = None
        self.chain: int | None = None

    def frame(self, data: bytes, start: int, end: int, path: str, off: int, first: bool) -> None:
        pos = start
        if first:
            rtype, rlen = _REC.unpack_from(data, pos) if end - pos >= _REC.size else (0, 0)
            if rtype != REC_CRC or rlen != _CRC.size:
                raise WalCorruptError("wal: segment does not start with a crc record", path, off)
            (value,) = _CRC.unpack_from(data, pos + _REC.size)
            if self.chain is None:
                self.chain = value
            elif value != self.chain:
                raise WalCorruptError("wal: crc chain broken (a segment is missing or foreign)", path, off)
            pos += _REC.size + _CRC.size
        entries = self.entries
        base = self.base
        while pos < end:
            if end - pos < _REC.size:
                raise WalCorruptError("wal: truncated record inside a frame", path, off)
            rtype, rlen = _REC.unpack_from(data, pos)
            body = pos + _REC.size
            pos = body + rlen
            if pos > end:
                raise WalCorruptError("wal: record runs past its frame", path, off)
            if rtype == REC_ENTRY:
                term, index, etype = _ENTRY.unpack_from(data, body)
                if index <= base:
                    continue
                at = index - base - 1
                n = len(entries)
                if at < n:
                    del entries[at:]  # a later write of an index overrides it and everything after
                elif at > n:
                    raise WalCorruptError(
                        f"wal: entry {index} follows entry {base + n}; entries are missing", path, off
                    )
                try:
                    et = _ENTRY_TYPES[etype]
                except KeyError:
                    raise WalCorruptError(f"wal: unknown entry type {etype}", path, off) from None
                entries.append(Entry(term, index, et, data[body + _ENTRY.size : pos]))
            elif rtype == REC_STATE:
                self.state = HardState(*_STATE.unpack_from(data, body))
            elif rtype == REC_SNAPSHOT:
                index, term, _ = _SNAP.unpack_from(data, body)
                if index == self.snap.index and self.snap.index != 0 and term != self.snap.term:
                    raise WalSnapshotMismatchError(
                        f"wal: snapshot {index} has term {self.snap.term} but the WAL marker has term {term}"
                    )
            elif rtype == REC_METADATA:
                meta = data[body:pos]
                if self.metadata is None:
                    self.metadata = meta
                elif meta != self.metadata:
                    raise WalCorruptError("wal: segment metadata differs from the first segment's", path, off)
            elif rtype == REC_CRC:
                raise WalCorruptError("wal: crc record in the middle of a segment", path, off)
            else:
                raise WalCorruptError(f"wal: unknown record type {rtype}", path, off)


@dataclass(slots=True)
class _ScanResult:
    end: int  # where the next frame goes
    header_end: int  # end of the segment's first frame
    torn: bool  # bytes after `end` must be discarded


def _scan_segment(seg: _Segment, is_last: bool, replay: _Replay) -> _ScanResult:
    with open(seg.path, "rb") as f:
        data = f.read()
    mv = memoryview(data)
    off = 0
    header_end = 0
    while True:
        end, skip_to, problem = _check_frame(data, mv, off)
        if problem:
            break
        assert replay.chain is not None or off == 0
        replay.frame(data, off + HEADER_SIZE, end, seg.path, off, first=(off == 0))
        replay.chain = _chain(replay.chain or 0, _HDR.unpack_from(data, off)[2])
        if off == 0:
            header_end = end
        off = end
    if off == 0:
        raise WalCorruptError(f"wal: segment has no valid first frame ({problem})", seg.path, 0)
    data_end = _data_end(data, off)
    if data_end == off:
        return _ScanResult(off, header_end, torn=False)
    if _valid_frame_after(data, mv, max(skip_to, off + 1), data_end):
        raise WalCorruptError(f"wal: {problem}, followed by valid records", seg.path, off)
    if not is_last:
        raise WalCorruptError(f"wal: {problem} in a sealed segment", seg.path, off)
    if problem not in (_PAST_EOF, _SHORT_HEADER):
        # The frame (or, when its header is bad, the header) lies wholly in
        # the file: it is a torn write only if a sector of it is still zero.
        span_end = skip_to if problem == _BAD_PAYLOAD else off + HEADER_SIZE
        if not _torn_in(data, off, span_end):
            raise WalCorruptError(
                f"wal: {problem} in the last frame, which was written whole (no unwritten sector)", seg.path, off
            )
    return _ScanResult(off, header_end, torn=True)


# --- the WAL ----------------------------------------------------------------------


class WAL:
    """A segmented, CRC-checked, append-only log; see the module docstring."""

    # 64 MiB, like etcd's; PETCD_WAL_SEGMENT_BYTES overrides it (for tests).
    SEGMENT_SIZE = _segment_size_from_env()

    def __init__(
        self,
        dirpath: str,
        lock_fd: int,
        segments: list[_Segment],
        fd: int,
        offset: int,
        header_end: int,
        chain: int,
        metadata: bytes,
        state: HardState,
        last_index: int,
        contents: WalContents | None,
        unsafe_no_fsync: bool,
        segment_size: int,
    ) -> None:
        """Use create() or open()."""
        self.dir = dirpath
        self._lock_fd = lock_fd
        self._segments = segments
        self._fd = fd
        self._offset = offset
        self._header_end = header_end
        self._chain = chain
        self._metadata = metadata
        self._state = state
        self._last_index = last_index
        self._contents = contents
        self._sync = not unsafe_no_fsync
        self._segment_size = segment_size
        self._lock = threading.Lock()
        self._closed = False
        self._failed: BaseException | None = None

    # --- construction -------------------------------------------------------

    @staticmethod
    def exists(dirpath: str) -> bool:
        """True when dirpath holds at least one WAL segment."""
        try:
            return any(_SEGMENT_RE.match(n) for n in os.listdir(dirpath))
        except (FileNotFoundError, NotADirectoryError):
            return False

    @classmethod
    def create(
        cls, dirpath: str, metadata: bytes, *, unsafe_no_fsync: bool = False, segment_size: int = SEGMENT_SIZE
    ) -> WAL:
        """A new WAL in dirpath (which must not hold one), built in a
        temporary directory and renamed into place, so a crash leaves either
        no WAL or a whole one."""
        dirpath = os.path.abspath(dirpath)
        if cls.exists(dirpath):
            raise WalExistsError(f"wal: {dirpath} already holds a WAL")
        if os.path.isdir(dirpath) and os.listdir(dirpath):
            raise WalError(f"wal: {dirpath} is not empty")
        parent = os.path.dirname(dirpath)
        make_private_dirs(parent)
        tmpdir = dirpath + ".tmp"
        shutil.rmtree(tmpdir, ignore_errors=True)
        os.mkdir(tmpdir, PRIVATE_DIR_MODE)
        sync = not unsafe_no_fsync
        lock_fd = _lock_dir(tmpdir)
        try:
            fd, header_end, chain = _write_new_segment(
                os.path.join(tmpdir, segment_name(0, 0)), 0, metadata, HardState(), segment_size, sync
            )
            if sync:
                fsync_dir(tmpdir)
            if os.path.isdir(dirpath):
                os.rmdir(dirpath)  # empty (checked above)
            os.rename(tmpdir, dirpath)
            if sync:
                fsync_dir(parent)
        except BaseException as exc:
            os.close(lock_fd)
            shutil.rmtree(tmpdir, ignore_errors=True)
            if isinstance(exc, OSError):
                raise _write_error("creating the WAL", dirpath, exc) from exc
            raise
        segs = [_Segment(0, 0, os.path.join(dirpath, segment_name(0, 0)))]
        contents = WalContents(metadata, HardState(), [], WalSnapshot())
        return cls(
            dirpath, lock_fd, segs, fd, header_end, header_end, chain, metadata, HardState(), 0, contents,
            unsafe_no_fsync, segment_size,
        )  # fmt: skip

    @classmethod
    def open(
        cls,
        dirpath: str,
        snap: WalSnapshot | None,
        *,
        unsafe_no_fsync: bool = False,
        segment_size: int = SEGMENT_SIZE,
    ) -> WAL:
        """Open the WAL at dirpath for reading from snap (None: from the
        start) and then appending. Reads and verifies every segment from the
        one holding snap.index to the end, repairs a torn tail (see the module
        docstring) and raises WalCorruptError for anything else."""
        dirpath = os.path.abspath(dirpath)
        if not cls.exists(dirpath):
            raise WalNotFoundError(f"wal: no WAL in {dirpath}")
        snap = snap if snap is not None else WalSnapshot()
        lock_fd = _lock_dir(dirpath)
        try:
            return cls._open_locked(dirpath, lock_fd, snap, unsafe_no_fsync, segment_size)
        except BaseException:
            os.close(lock_fd)
            raise

    @classmethod
    def _open_locked(
        cls, dirpath: str, lock_fd: int, snap: WalSnapshot, unsafe_no_fsync: bool, segment_size: int
    ) -> WAL:
        for name in os.listdir(dirpath):
            if name.endswith(".wal.tmp"):  # a segment cut that never completed
                os.unlink(os.path.join(dirpath, name))
        segs = _list_segments(dirpath)
        for a, b in zip(segs, segs[1:], strict=False):
            if b.seq != a.seq + 1:
                raise WalCorruptError(f"wal: segment {a.seq + 1:016x} is missing", b.path)
        # The last segment (in sequence order) whose first index <= snap.index
        # holds every live entry above it (see _cut).
        start = 0
        for i, s in enumerate(segs):
            if s.index <= snap.index:
                start = i
        if segs[start].index > snap.index:
            raise WalError(f"wal: no segment in {dirpath} reaches back to index {snap.index} (released?)")
        segs = segs[start:]
        replay = _Replay(snap)
        result = _ScanResult(0, 0, False)
        # Decoding allocates an Entry per record and none of them can form a
        # cycle: pausing the cyclic GC makes a long replay ~1.5x faster.
        gc_was_enabled = gc.isenabled()
        gc.disable()
        try:
            for i, seg in enumerate(segs):
                result = _scan_segment(seg, i == len(segs) - 1, replay)
        finally:
            if gc_was_enabled:
                gc.enable()
        last = segs[-1]
        fd = os.open(last.path, os.O_RDWR)
        try:
            if result.torn:
                size = os.fstat(fd).st_size
                log.warning(
                    "wal: %s: discarding a torn write at byte %d (%d bytes)", last.path, result.end, size - result.end
                )
                try:
                    os.ftruncate(fd, result.end)
                    _preallocate(fd, max(segment_size, result.end))
                    if not unsafe_no_fsync:
                        os.fsync(fd)
                except OSError as exc:
                    raise _write_error("cutting the torn write off", last.path, exc) from exc
        except BaseException:
            os.close(fd)
            raise
        metadata = replay.metadata if replay.metadata is not None else b""
        contents = WalContents(metadata, replay.state, replay.entries, snap)
        last_index = snap.index + len(replay.entries)
        return cls(
            dirpath, lock_fd, segs, fd, result.end, result.header_end, replay.chain or 0, metadata, replay.state,
            last_index, contents, unsafe_no_fsync, segment_size,
        )  # fmt: skip

    # --- reading ------------------------------------------------------------

    def read_all(self) -> WalContents:
        """The metadata, the last hard state and the entries after the
        snapshot given to open(). Call once; the WAL is then ready to append."""
        with self._lock:
            self._check()
            if self._contents is None:
                raise WalError("wal: read_all() may be called only once")
            contents, self._contents = self._contents, None
            return contents

    # --- writing ------------------------------------------------------------

    def _check(self) -> None:
        if self._closed:
            raise WalClosedError("wal: closed")
        if self._failed is not None:
            raise WalError(f"wal: unusable after an earlier write failure: {self._failed}")

    def save(self, hard_state: HardState | None, entries: list[Entry], sync: bool = True) -> None:
        """Append entries and the hard state in one frame with one fsync.
        Entries whose index is already in the log replace it and everything
        after it. Nothing to write (no entries, hard state None, empty or
        unchanged) is a no-op. ``sync=False`` skips the fsync: raft allows
        it when only the commit index moved (it is recomputed after a crash)."""
        parts: list[bytes] = []
        pack = _ENTRY_REC.pack
        for e in entries:
            parts.append(pack(REC_ENTRY, _ENTRY.size + len(e.data), e.term, e.index, e.type))
            parts.append(e.data)
        with self._lock:
            self._check()
            new_state = None
            if hard_state is not None and not hard_state.is_empty() and hard_state != self._state:
                new_state = HardState(hard_state.term, hard_state.vote, hard_state.commit)
                parts.append(_STATE_REC.pack(REC_STATE, _STATE.size, new_state.term, new_state.vote, new_state.commit))
            if not parts:
                return
            self._append(b"".join(parts), sync=sync or bool(entries))
            if entries:
                self._last_index = entries[-1].index
            if new_state is not None:
                self._state = new_state

    def save_snapshot(self, snap: WalSnapshot) -> None:
        """Append a snapshot marker, fsync'd."""
        cs = snap.conf_state.to_bytes() if snap.conf_state is not None else b""
        body = _SNAP.pack(snap.index, snap.term, 1 if snap.conf_state is not None else 0) + cs
        with self._lock:
            self._check()
            self._append(_REC.pack(REC_SNAPSHOT, len(body)) + body)
            self._last_index = max(self._last_index, snap.index)

    def _append(self, payload: bytes, sync: bool = True) -> None:
        header, pcrc = _frame(payload)
        n = len(header) + len(payload)
        try:
            if self._offset + n > self._segment_size and self._offset > self._header_end:
                self._cut()
            path = self._segments[-1].path
            try:
                _pwrite_all(self._fd, [header, payload], self._offset)
            except OSError as exc:
                raise _write_error("writing", path, exc) from exc
            if self._sync and sync:
                started = time.perf_counter()
                try:
                    os.fdatasync(self._fd)
                except OSError as exc:
                    raise _write_error("fsyncing", path, exc) from exc
                stats.WAL_FSYNC.observe(time.perf_counter() - started)
        except BaseException as exc:
            # The file may now hold part of this frame and the page cache's
            # state after a failed fsync is unknown: refuse further writes.
            self._failed = exc
            raise
        self._offset += n
        self._chain = _chain(self._chain, pcrc)
        stats.WAL.write_bytes += n  # etcd_disk_wal_write_bytes_total

    def _cut(self) -> None:
        """Seal the current segment and continue in a new one, named after
        the next entry index: every live entry above that index is written
        after the cut, which is what open() relies on."""
        seq = self._segments[-1].seq + 1
        index = self._last_index + 1
        path = os.path.join(self.dir, segment_name(seq, index))
        try:
            fd, header_end, chain = _write_new_segment(
                path, self._chain, self._metadata, self._state, self._segment_size, self._sync
            )
        except OSError as exc:
            raise _write_error("creating the segment", path, exc) from exc
        try:
            if self._sync:
                fsync_dir(self.dir)
        except OSError as exc:
            os.close(fd)
            raise _write_error("fsyncing the directory of", path, exc) from exc
        os.close(self._fd)
        self._fd = fd
        self._offset = self._header_end = header_end
        self._chain = chain
        self._segments.append(_Segment(seq, index, path))

    def release_lock_to(self, index: int) -> None:
        """Delete the segments before the one holding index (the last segment
        whose first index <= index); that one and later ones stay."""
        with self._lock:
            self._check()
            keep = 0
            for i, s in enumerate(self._segments):
                if s.index <= index:
                    keep = i
            if keep == 0:
                return
            for _ in range(keep):
                path = self._segments[0].path
                try:
                    os.unlink(path)
                except OSError as exc:
                    raise _write_error("deleting the released segment", path, exc) from exc
                del self._segments[0]  # gone: a failure on a later one leaves the list true
            if self._sync:
                try:
                    fsync_dir(self.dir)
                except OSError as exc:
                    raise _write_error("fsyncing the directory", self.dir, exc) from exc

    def segments(self) -> list[str]:
        """Paths of the live segments, oldest first (for tests and tools)."""
        with self._lock:
            return [s.path for s in self._segments]

    def close(self) -> None:
        """Close the segment and release the directory lock. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            os.close(self._fd)
            os.close(self._lock_fd)

    def __enter__(self) -> WAL:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass(slots=True)
class RepairResult:
    """What :func:`repair` did: the WAL was cut at ``offset`` of ``damaged``;
    the original of that segment and every later segment were moved into
    ``backup_dir`` (``moved``, their original paths); the WAL now ends at
    entry ``last_index`` with hard state ``hard_state``."""

    damaged: str
    offset: int
    problem: str
    backup_dir: str
    moved: list[str]
    last_index: int
    hard_state: HardState


def find_damage(dirpath: str, snap: WalSnapshot | None = None) -> WalCorruptError | None:
    """The corruption WAL.open would refuse, or None when the WAL opens.
    Changes nothing: a torn tail is reported as fine (open repairs it)."""
    dirpath = os.path.abspath(dirpath)
    if not WAL.exists(dirpath):
        raise WalNotFoundError(f"wal: no WAL in {dirpath}")
    lock_fd = _lock_dir(dirpath)
    try:
        segs = _list_segments(dirpath)
        for a, b in zip(segs, segs[1:], strict=False):
            if b.seq != a.seq + 1:
                return WalCorruptError(f"wal: segment {a.seq + 1:016x} is missing", b.path)
        snap = snap if snap is not None else WalSnapshot()
        live = [s for s in segs if s.index <= snap.index]
        first = segs.index(live[-1]) if live else 0
        replay = _Replay(snap)
        try:
            for i, seg in enumerate(segs[first:]):
                _scan_segment(seg, first + i == len(segs) - 1, replay)
        except WalCorruptError as exc:
            return exc
        return None
    finally:
        os.close(lock_fd)


def repair(dirpath: str, snap: WalSnapshot | None = None, *, segment_size: int = 64 << 20) -> RepairResult | None:
    """Cut a corrupt WAL at its first damaged record, keeping everything
    before it. Returns None (and changes nothing) when the WAL is not
    corrupt. LOSSY: the records from the damage on are dropped, entries and
    votes among them; see "Repairing a corrupt WAL" in the module docstring
    for when that is safe. Nothing is deleted: the damaged segment and every
    later one are moved into a sibling directory ``<dir>.broken-<UTC time>``
    (undo: move them back), and the damaged segment is replaced by a copy of
    its bytes before the damage."""
    dirpath = os.path.abspath(dirpath)
    damage = find_damage(dirpath, snap)
    if damage is None:
        return None
    if damage.path is None:
        raise WalError(f"wal: cannot repair: the damage has no location: {damage}")
    lock_fd = _lock_dir(dirpath)
    try:
        segs = _list_segments(dirpath)
        at = next(i for i, s in enumerate(segs) if s.path == damage.path)
        offset = damage.offset or 0
        keep_head = offset > 0
        base = snap.index if snap is not None else 0
        first_live = max([i for i, s in enumerate(segs) if s.index <= base], default=0)
        if not keep_head and at <= first_live:
            raise WalError(
                f"wal: cannot repair {dirpath}: the damage is at the start of its first segment, so no record "
                f"survives a cut ({damage}); restore the member from a snapshot or replace it"
            )
        backup = f"{dirpath}.broken-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}"
        os.mkdir(backup, PRIVATE_DIR_MODE)
        moved = [s.path for s in segs[at:]]
        if keep_head:
            # The kept prefix of the damaged segment, preallocated like any
            # segment, made durable before the original moves out.
            with open(damage.path, "rb") as f:
                head = f.read(offset)
            tmp = damage.path + ".tmp"
            fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                _preallocate(fd, max(segment_size, offset))
                _pwrite_all(fd, [head], 0)
                os.fsync(fd)
            finally:
                os.close(fd)
        for path in moved:
            os.rename(path, os.path.join(backup, os.path.basename(path)))
        fsync_dir(backup)
        if keep_head:
            os.rename(damage.path + ".tmp", damage.path)
        fsync_dir(dirpath)
    finally:
        os.close(lock_fd)
    result = RepairResult(damage.path, offset, str(damage), backup, moved, 0, HardState())
    try:
        w = WAL.open(dirpath, snap, segment_size=segment_size)
    except BaseException:
        undo_repair(result)
        raise
    try:
        contents = w.read_all()
    finally:
        w.close()
    result.last_index = contents.snapshot.index + len(contents.entries)
    result.hard_state = contents.hard_state
    return result


def undo_repair(result: RepairResult) -> None:
    """Put back what repair() moved aside: the WAL is as it was before."""
    for path in result.moved:
        os.replace(os.path.join(result.backup_dir, os.path.basename(path)), path)
    leftover = result.damaged + ".tmp"
    if os.path.exists(leftover):
        os.unlink(leftover)
    fsync_dir(os.path.dirname(result.damaged))
    os.rmdir(result.backup_dir)


def _write_error(what: str, path: str, exc: OSError) -> WalWriteError:
    """The error for a failed write to a WAL file: names the file, the OS
    error and the space left, so the fatal log line says what to fix."""
    try:
        st = os.statvfs(os.path.dirname(path))
        free = f"{st.f_bavail * st.f_frsize} bytes free on its file system"
    except OSError as stat_exc:
        free = f"free space unknown: {stat_exc}"
    reason = exc.strerror or str(exc)
    return WalWriteError(f"wal: {what} {path} failed: [Errno {exc.errno}] {reason} ({free})", path)


def _write_new_segment(
    path: str, chain: int, metadata: bytes, state: HardState, segment_size: int, sync: bool
) -> tuple[int, int, int]:
    """Create a preallocated segment at path holding its first frame (crc
    chain, metadata, hard state), written under a temporary name, fsync'd and
    renamed. Returns (fd open for writing, end of the first frame, chain
    after it)."""
    payload = _REC.pack(REC_CRC, _CRC.size) + _CRC.pack(chain) + _REC.pack(REC_METADATA, len(metadata)) + metadata
    if not state.is_empty():
        payload += _STATE_REC.pack(REC_STATE, _STATE.size, state.term, state.vote, state.commit)
    header, pcrc = _frame(payload)
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        _preallocate(fd, segment_size)
        _pwrite_all(fd, [header, payload], 0)
        if sync:
            os.fsync(fd)
        os.rename(tmp, path)
    except BaseException:
        os.close(fd)
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return fd, len(header) + len(payload), _chain(chain, pcrc)
