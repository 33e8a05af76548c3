"""Raft snapshot files: save, load the newest good one, purge old ones.

What it is for: a raft snapshot (its metadata: index, term, conf state, and
its data) is written to ``<dir>/%016x-%016x.snap`` (term, index) before the
WAL gets a marker for it, so a marker never points at a missing file.

File format: u32 big-endian crc32 of the body, then the body, which is
``Snapshot.to_bytes()`` (raftpb.Snapshot). A file is written under a
temporary name, fsync'd, renamed, and the directory fsync'd: a crash leaves
either the old set of files or the new one plus, at worst, a stray
``*.snap.tmp`` that ``purge`` removes.

``load`` returns the newest file whose CRC and encoding are good; a bad one
is renamed ``*.snap.broken`` (kept for inspection), logged, and skipped.

All methods take one lock, so a save in a worker thread and a purge on the
event loop do not interleave.
"""

from __future__ import annotations

import logging
import os
import re
import struct
import tempfile
import threading
import time
import zlib

from petcd import stats
from petcd.raft.types import Snapshot
from petcd.storage.errors import SnapError
from petcd.storage.fsutil import fsync_dir, make_private_dirs

log = logging.getLogger("petcd.storage.snap")

_NAME_RE = re.compile(r"^([0-9a-f]{16})-([0-9a-f]{16})\.snap$")
_CRC = struct.Struct(">I")


def _free_space(dirpath: str) -> str:
    try:
        st = os.statvfs(dirpath)
    except OSError as exc:
        return f"free space unknown: {exc}"
    return f"{st.f_bavail * st.f_frsize} bytes free on its file system"


def snap_name(term: int, index: int) -> str:
    return f"{term:016x}-{index:016x}.snap"


class Snapshotter:
    """The raft snapshot files of one member, in one directory."""

    def __init__(self, dirpath: str, keep: int = 5) -> None:
        if keep < 1:
            raise ValueError("keep must be >= 1")
        self.dir = os.path.abspath(dirpath)
        self.keep = keep
        self._lock = threading.Lock()
        make_private_dirs(self.dir)

    def _names(self) -> list[str]:
        """Snapshot file names, newest (highest term, then index) first."""
        names = [n for n in os.listdir(self.dir) if _NAME_RE.match(n)]
        # Fixed-width hex: name order is (term, index) order.
        names.sort(reverse=True)
        return names

    def save_snap(self, snap: Snapshot) -> None:
        """Write snap durably; an empty snapshot (index 0) is ignored. A
        failed write raises SnapError naming the file and the OS error."""
        if snap.is_empty():
            return
        started = time.perf_counter()
        body = snap.to_bytes()
        stats.SNAP_MARSHALLING.observe(time.perf_counter() - started)
        md = snap.metadata
        final = os.path.join(self.dir, snap_name(md.term, md.index))
        with self._lock:
            try:
                self._write(final, body)
            except OSError as exc:
                raise SnapError(f"snap: writing {final} failed: {exc} ({_free_space(self.dir)})") from exc
        stats.SNAP_SAVE.observe(time.perf_counter() - started)

    def _write(self, final: str, body: bytes) -> None:
        fd, tmp = tempfile.mkstemp(prefix=os.path.basename(final) + ".", suffix=".tmp", dir=self.dir)
        try:
            try:
                view = memoryview(_CRC.pack(zlib.crc32(body)) + body)
                # etcd_snap_fsync_duration_seconds times the file's write and
                # fsync together, as etcd does, failed or not
                started = time.perf_counter()
                try:
                    while view:
                        view = view[os.write(fd, view) :]
                    os.fsync(fd)
                finally:
                    stats.SNAP_FSYNC.observe(time.perf_counter() - started)
            finally:
                os.close(fd)
            os.rename(tmp, final)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
        fsync_dir(self.dir)

    def load(self) -> Snapshot | None:
        """The newest readable snapshot, or None when there is none."""
        with self._lock:
            for name in self._names():
                path = os.path.join(self.dir, name)
                try:
                    return self._read(path)
                except SnapError as exc:
                    log.error("snap: %s is unreadable (%s); renaming it to %s.broken", path, exc, name)
                    os.rename(path, path + ".broken")
            return None

    @staticmethod
    def _read(path: str) -> Snapshot:
        with open(path, "rb") as f:
            raw = f.read()
        if len(raw) < _CRC.size:
            raise SnapError("file too short")
        (crc,) = _CRC.unpack_from(raw)
        body = memoryview(raw)[_CRC.size :]
        if zlib.crc32(body) != crc:
            raise SnapError("crc mismatch")
        try:
            snap = Snapshot.from_bytes(bytes(body))
        except Exception as exc:  # protobuf's DecodeError and friends
            raise SnapError(f"undecodable: {exc}") from exc
        m = _NAME_RE.match(os.path.basename(path))
        assert m is not None
        if (snap.metadata.term, snap.metadata.index) != (int(m.group(1), 16), int(m.group(2), 16)):
            raise SnapError("metadata does not match the file name")
        return snap

    def purge(self) -> None:
        """Keep the newest `keep` snapshot files; delete older ones and stray
        temporary files."""
        with self._lock:
            for name in self._names()[self.keep :]:
                os.unlink(os.path.join(self.dir, name))
            for name in os.listdir(self.dir):
                if ".snap." in name and name.endswith(".tmp"):
                    os.unlink(os.path.join(self.dir, name))
