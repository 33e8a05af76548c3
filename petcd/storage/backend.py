"""The backend: one LMDB file holding etcd's buckets (named LMDB databases).

What it is for: everything the state machine keeps (mvcc revisions, leases,
auth, members, alarms, the applied raft index) lives here, written in *batch
transactions*: the applier's writes go into one long LMDB write transaction
that is committed every ``batch_interval`` seconds or ``batch_limit`` writes
(etcd's backend batch). The WAL, not this file, is the durability point of a
write; after a crash the server replays WAL entries above
:meth:`Backend.consistent_index`, which is written in the same transaction as
the data it describes, so the two can never disagree.

Guarantees:

- Reads (``get``/``items``/``range``) see the open batch's uncommitted writes.
- A batch is never lost to a full memory map and ``lmdb.MapFullError`` never
  reaches the caller: the map is doubled ahead of need at the start of every
  batch, and if one batch still outgrows it, the batch's operations (kept in
  a Python list until commit) are replayed into a fresh transaction on a
  doubled map.
- Iterators are safe across interleaved writes, commits and map growth:
  they read in chunks and re-seek after the last key they returned, so they
  never hold an LMDB cursor across a ``yield``.
- ``snapshot()`` may run in a worker thread while the loop thread keeps
  writing: it uses LMDB's compacting copy, which reads through a read-only
  transaction and never waits for the writer lock.
- A failed commit (disk full, I/O error, read-only file system) raises
  :class:`BackendFileError` naming the file, the OS error and the free space
  left, and is final: every later operation raises it again (fail-stop, as
  etcd exits on a failed commit; the WAL, which holds every acknowledged
  write, replays what the backend lost on the next start). Nothing is
  retried: after a failed fsync the page cache may claim data the disk does
  not hold.
- A truncated file is refused on open with :class:`BackendFileError`
  instead of dying of SIGBUS on the first read of a missing page: the size
  is checked against the last page the newest committed LMDB meta page
  uses (LMDB may leave pages allocated and freed in one transaction
  unwritten past the end, so when the file is shorter than the last page
  number, the committed trees are walked to find the last page actually
  used), before the file is mapped. ``commit_if_due`` checks that the file
  has not shrunk (LMDB never shrinks it), so a file truncated under a live
  member is reported by name before (usually) a read touches the missing
  pages.

Defragmenting without stopping the owner: ``start_defrag`` opens a read
transaction on the committed state and from then on logs every write (the
open batch's too); the returned :class:`DefragCopy` makes the compacting
copy from that reader and fsyncs it in a worker thread while the owning
thread goes on writing, reading and committing; ``finish_defrag`` swaps the
copy in and replays the logged writes onto it as the open batch (each write
sets its keys whatever they held before, so those the copy already has
replay harmlessly). The owning thread's share is the swap: closing and
reopening the environment and the replay, milliseconds; freeing the old
file's blocks and the directory fsync are left to a worker thread.

Threading: every method except ``snapshot()``, ``DefragCopy.run()``,
``DefragCopy.release_old()`` and ``wait_env_free()`` (and the returned
:class:`BackendSnapshot`) must be called from one thread, the one that owns
the batch write transaction (LMDB write transactions are bound to a thread).
A map growth that coincides with a running copy (snapshot or defrag) waits
for the copy to finish (the map cannot be replaced under a reader); a defrag
grows the map ahead of its copy so that the owner does not wait, and its
swap is refused (``finish_defrag`` returns False) rather than waited for
while a snapshot copy runs.

The batch commit (with LMDB's fsync) stays on the owning thread: LMDB's
writer lock is a mutex that only the thread that took it may release, and
a commit without fsync followed by a sync elsewhere leaves a window in which
a power loss can leave a meta page pointing at pages never written.

Limits inherited from LMDB: keys are 1..511 bytes (values are unbounded).
"""

from __future__ import annotations

import bisect
import logging
import os
import struct
import tempfile
import threading
import time
import zlib
from collections.abc import Iterable, Iterator
from itertools import islice
from operator import itemgetter
from typing import Any

import lmdb

from petcd import stats
from petcd.storage.errors import BackendClosedError, BackendError, BackendFileError, UnknownBucketError
from petcd.storage.fsutil import fsync_dir, make_private_dirs

log = logging.getLogger("petcd.storage.backend")

# etcd's buckets, in etcd's names.
BUCKETS: tuple[str, ...] = (
    "key",
    "meta",
    "lease",
    "auth",
    "authUsers",
    "authRoles",
    "members",
    "members_removed",
    "cluster",
    "alarm",
)
META_BUCKET = "meta"
CONSISTENT_INDEX_KEY = b"consistent_index"
_CI = struct.Struct(">QQ")

# Room for buckets added later without a format change.
_MAX_DBS = 32
# Grow the map (doubling) at batch start once the high-water mark passes this
# fraction of it; a batch that still outgrows the map is replayed.
_GROW_AT = 0.75
# Far beyond any sane etcd quota (etcd suggests <= 8 GiB); only a guard
# against doubling forever when something else is wrong.
_MAX_MAP_SIZE = 1 << 42
# Iterators read this many items per chunk, first small (a range that the
# caller abandons after one item stays cheap), then larger.
_FIRST_CHUNK = 64
_MAX_CHUNK = 4096

# LMDB's on-disk layout (64-bit, little-endian), as far as the truncation
# check reads it. Pages 0 and 1 are meta pages; the one with the higher txnid
# is the newest committed state. A meta page holds, from the page start: the
# magic (u32) at 16; the free-list db record at 40 (its first u32 is the page
# size) and the main db record at 88, 48 bytes each with the root page (u64)
# at byte 40 of the record; the last page number allocated (u64) at 136; the
# txnid (u64) at 144. Every page starts with a 16-byte header: flags (u16)
# at 10, then the end of the node offset array (u16) at 12, or, on an
# overflow page, its page count (u32) at 12. Node offsets (u16) follow the
# header; a node is lo, hi, flags, key size (u16 each), the key, the data.
_LMDB_MAGIC = 0xBEEFC0DE
_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_NODE = struct.Struct("<HHHH")
_META_PSIZE_OFF = 40
_META_DB_ROOTS = (40 + 40, 88 + 40)
_META_LAST_PG_OFF = 136
_META_TXNID_OFF = 144
_PAGE_HEADER = 16
_P_BRANCH, _P_LEAF, _P_OVERFLOW, _P_LEAF2 = 0x01, 0x02, 0x04, 0x20
_F_BIGDATA, _F_SUBDATA, _F_DUPDATA = 0x01, 0x02, 0x04
_P_INVALID = (1 << 64) - 1

_PUT, _DEL, _DEL_RANGE = 0, 1, 2
_Op = tuple[int, Any, bytes, bytes | None]
_key0 = itemgetter(0)


def _delete_range(txn: lmdb.Transaction[bytes], db: Any, start: bytes, end: bytes) -> int:
    n = 0
    with txn.cursor(db) as cur:
        found = cur.set_range(start) if start else cur.first()
        if not found:
            return 0
        key = cur.key()
        # After delete() the cursor sits on the next item; past the last one
        # it is unpositioned and key() is b"" (LMDB keys are never empty).
        while key and key < end:
            cur.delete()
            n += 1
            key = cur.key()
    return n


def _apply(txn: lmdb.Transaction[bytes], op: _Op) -> int:
    kind, db, a, b = op
    if kind == _PUT:
        assert b is not None
        txn.put(a, b, db=db)
        return 1
    if kind == _DEL:
        return 1 if txn.delete(a, db=db) else 0
    assert b is not None
    return _delete_range(txn, db, a, b)


def _free_space(path: str) -> str:
    """'N bytes free' on path's file system, for error messages."""
    try:
        st = os.statvfs(os.path.dirname(path))
    except OSError as exc:
        return f"free space unknown: {exc}"
    return f"{st.f_bavail * st.f_frsize} bytes free on its file system"


def _newest_meta(fd: int) -> tuple[int, bytes] | None:
    """(page size, newest meta page) of the LMDB file open at fd, or None
    when it is not (recognisably) one or is cut inside its meta pages."""
    first = os.pread(fd, _META_TXNID_OFF + 8, 0)
    if len(first) < _META_TXNID_OFF + 8 or _U32.unpack_from(first, 16)[0] != _LMDB_MAGIC:
        return None
    (psize,) = _U32.unpack_from(first, _META_PSIZE_OFF)
    if psize < 512 or psize & (psize - 1):
        return None
    second = os.pread(fd, _META_TXNID_OFF + 8, psize)
    if len(second) < _META_TXNID_OFF + 8:
        return psize, b""
    if _U32.unpack_from(second, 16)[0] == _LMDB_MAGIC and (
        _U64.unpack_from(second, _META_TXNID_OFF)[0] > _U64.unpack_from(first, _META_TXNID_OFF)[0]
    ):
        return psize, second
    return psize, first


def _last_used_page(fd: int, psize: int, meta: bytes, size: int) -> int:
    """The highest page number the committed trees of meta use (branch, leaf
    and overflow pages of the free-list db, the main db and every named db),
    read with pread. A page at or past the end of the file counts as used
    without being read (the caller reports truncation)."""
    stack = [r for r in (_U64.unpack_from(meta, off)[0] for off in _META_DB_ROOTS) if r != _P_INVALID]
    last = 1
    budget = _U64.unpack_from(meta, _META_LAST_PG_OFF)[0] + 1  # a damaged tree cannot loop forever
    while stack and budget > 0:
        budget -= 1
        pgno = stack.pop()
        last = max(last, pgno)
        if (pgno + 1) * psize > size:
            continue
        page = os.pread(fd, psize, pgno * psize)
        (flags,) = _U16.unpack_from(page, 10)
        if flags & _P_OVERFLOW:
            last = max(last, pgno + _U32.unpack_from(page, 12)[0] - 1)
            continue
        if flags & _P_LEAF2 or not flags & (_P_BRANCH | _P_LEAF):
            continue
        nkeys = (_U16.unpack_from(page, 12)[0] - _PAGE_HEADER) >> 1
        for i in range(max(0, min(nkeys, (psize - _PAGE_HEADER) // 2))):
            (at,) = _U16.unpack_from(page, _PAGE_HEADER + 2 * i)
            if at + _NODE.size > psize:
                continue
            lo, hi, nflags, ksize = _NODE.unpack_from(page, at)
            if flags & _P_BRANCH:
                stack.append(lo | hi << 16 | nflags << 32)
                continue
            data = at + _NODE.size + ksize
            if nflags & _F_BIGDATA and data + 8 <= psize:
                stack.append(_U64.unpack_from(page, data)[0])
            elif nflags & _F_SUBDATA and not nflags & _F_DUPDATA and data + 48 <= psize:
                root = _U64.unpack_from(page, data + 40)[0]
                if root != _P_INVALID:
                    stack.append(root)
    return last


def _truncation(path: str) -> str | None:
    """Why the LMDB file at path is truncated, or None when it is not (or is
    missing, empty, or not an LMDB file: LMDB creates or rejects those)."""
    try:
        size = os.stat(path).st_size
    except FileNotFoundError:
        return None
    if size == 0:
        return None
    with open(path, "rb") as f:
        found = _newest_meta(f.fileno())
        if found is None:
            return None
        psize, meta = found
        if not meta:
            return f"it has {size} bytes, less than its two {psize}-byte meta pages"
        last_pg = _U64.unpack_from(meta, _META_LAST_PG_OFF)[0]
        if size >= (last_pg + 1) * psize:
            return None  # the quick answer: every page ever allocated is there
        # LMDB may leave pages that were allocated and freed in one
        # transaction unwritten past the end of the file; only a page the
        # committed trees use is missing data.
        used = _last_used_page(f.fileno(), psize, meta, size)
    if size >= (used + 1) * psize:
        return None
    return (
        f"it has {size} bytes but its last committed transaction uses page {used} "
        f"({(used + 1) * psize} bytes, pages of {psize})"
    )


def check_file_size(path: str) -> None:
    """Raise BackendFileError when the LMDB file at path is shorter than the
    pages its newest committed transaction uses (it was truncated: mapping
    it would die of SIGBUS on the first read of a missing page)."""
    try:
        why = _truncation(path)
    except OSError as exc:
        raise BackendFileError(f"backend: cannot read {path}: {exc}", path) from exc
    if why is not None:
        raise BackendFileError(
            f"backend: {path} is truncated: {why}; restore the member from a snapshot "
            "(`petcd snapshot restore`) or remove it from the cluster and add it back",
            path,
        )


class BackendSnapshot:
    """A consistent copy of the committed backend, read once front to back.

    The copy is an unlinked temporary file: it disappears when ``close()``
    closes it, or when the process dies, so nothing is left behind.
    ``read`` may be called from any thread (one at a time).
    """

    def __init__(self, fd: int, size: int, started: float) -> None:
        self._fd = fd
        self.size = size
        self._offset = 0
        # perf_counter() when the copy began: etcd_disk_backend_snapshot_duration_seconds
        # times a snapshot from then to its close (its whole transfer)
        self._started = started

    def read(self, n: int) -> bytes:
        """Up to n bytes; b"" at the end."""
        if self._fd < 0:
            raise BackendClosedError("backend snapshot is closed")
        want = min(n, self.size - self._offset)
        if want <= 0:
            return b""
        data = os.pread(self._fd, want, self._offset)
        self._offset += len(data)
        return data

    def close(self) -> None:
        """Release the copy; the first close times the snapshot."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
            stats.BACKEND_SNAPSHOT.observe(time.perf_counter() - self._started)

    def __enter__(self) -> BackendSnapshot:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class DefragCopy:
    """The copy half of a defrag: ``run()`` writes a compacted copy of the
    state the reader saw into a temporary file and fsyncs it, in a worker
    thread (LMDB's copy releases the GIL). Made by ``Backend.start_defrag``."""

    def __init__(self, backend: Backend, fd: int, tmp: str, reader: lmdb.Transaction[bytes]) -> None:
        self._backend = backend
        self._fd = fd
        self.tmp = tmp
        self._reader: lmdb.Transaction[bytes] | None = reader
        self.done = False
        self.replaced = False
        self.old_fd = -1  # the replaced file, until release_old

    def run(self) -> None:
        """Write and fsync the copy. Holds the backend's environment lock (a
        map growth waits; the owning thread never grows the map during a
        defrag). A failure raises BackendError; the file in use is untouched."""
        b = self._backend
        try:
            with b._env_lock:
                if b._closed or self._reader is None:
                    raise BackendClosedError("backend is closed")
                b._env.copyfd(self._fd, compact=True, txn=self._reader)
            os.fsync(self._fd)
        except (lmdb.Error, OSError) as exc:
            raise BackendError(
                f"backend: defragmenting {b.path} failed writing the copy {self.tmp}: {exc} ({_free_space(b.path)})"
            ) from exc
        self.done = True

    def close_reader(self) -> None:
        """End the copy's read transaction (it pins the pages it sees)."""
        reader, self._reader = self._reader, None
        if reader is not None:
            try:
                reader.abort()
            except lmdb.Error:
                pass  # the environment was closed under it: nothing left to release

    def release_old(self) -> None:
        """Close the replaced file, freeing its blocks (slow for a big file:
        call from a worker thread)."""
        if self.old_fd >= 0:
            os.close(self.old_fd)
            self.old_fd = -1

    def cleanup(self) -> None:
        """Close the copy's descriptor; remove the file unless it replaced the backend."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        if not self.replaced:
            try:
                os.unlink(self.tmp)
            except FileNotFoundError:
                pass


class Backend:
    """etcd's backend on LMDB: named buckets in one file, batched writes."""

    def __init__(
        self,
        path: str,
        *,
        batch_interval: float = 0.1,
        batch_limit: int = 10_000,
        unsafe_no_fsync: bool = False,
        initial_map_size: int = 64 << 20,
        buckets: Iterable[str] = BUCKETS,
    ) -> None:
        self.path = os.path.abspath(path)
        self.batch_interval = batch_interval
        self.batch_limit = batch_limit
        self._sync = not unsafe_no_fsync
        self._bucket_names = tuple(dict.fromkeys([*BUCKETS, *buckets]))
        # Held while the environment is copied (snapshot, in a worker thread)
        # and while it is remapped or replaced (growth, defrag, close), so a
        # copy never reads a map that is being torn down.
        self._env_lock = threading.Lock()
        self._txn: lmdb.Transaction[bytes] | None = None
        # The open batch's operations, replayed if its transaction is lost
        # (map full, a failed write); cleared by a successful commit.
        self._ops: list[_Op] = []
        # set_consistent_index's value, not yet written into the batch
        self._pending_ci: bytes | None = None
        self._pending = 0
        self._batch_started = 0.0
        self._closed = False
        # The failed commit that made the backend unusable (see the module doc).
        self._failed: BackendFileError | None = None
        # The file's size after open and after every commit: LMDB never
        # shrinks its file, so a smaller size means someone truncated it.
        self._size_floor = 0
        # The file's size as of the last open or commit, which is when it
        # changes (writemap is off: LMDB writes pages only at commit), so
        # size() answers without a stat (the quota check runs per put).
        self._file_size = 0
        # While a defrag copies: every write since start_defrag (the open
        # batch's included), replayed onto the copy when it is swapped in.
        self._defrag: list[_Op] | None = None
        self._defrag_copy: DefragCopy | None = None
        make_private_dirs(os.path.dirname(self.path))
        self._env = self._open_env(initial_map_size)
        self._dbs = self._open_dbs()
        self._psize = int(self._env.stat()["psize"])

    # --- environment ------------------------------------------------------

    def _open_env(self, map_size: int) -> lmdb.Environment:
        check_file_size(self.path)
        try:
            env = self._lmdb_open(map_size)
        except lmdb.Error as exc:
            raise BackendError(f"backend: cannot open {self.path}: {exc}") from exc
        # Clear reader slots left by dead processes (a killed `snapshot save`).
        env.reader_check()
        self._size_floor = self._file_size = os.stat(self.path).st_size
        return env

    def _lmdb_open(self, map_size: int) -> lmdb.Environment:
        return lmdb.open(
            self.path,
            map_size=map_size,
            subdir=False,
            metasync=self._sync,
            sync=self._sync,
            map_async=False,
            writemap=False,
            lock=True,
            max_dbs=_MAX_DBS,
            mode=0o600,
        )

    def _open_dbs(self) -> dict[str, Any]:
        return {name: self._env.open_db(name.encode()) for name in self._bucket_names}

    def _db(self, bucket: str) -> Any:
        try:
            return self._dbs[bucket]
        except KeyError:
            raise UnknownBucketError(f"backend: unknown bucket {bucket!r}") from None

    def _set_mapsize(self, new_size: int) -> None:
        if new_size > _MAX_MAP_SIZE:
            raise BackendError(f"backend: map size would exceed {_MAX_MAP_SIZE} bytes")
        with self._env_lock:
            self._env.set_mapsize(new_size)
        log.info("backend %s: memory map grown to %d bytes", self.path, new_size)

    def _grow_if_needed(self) -> None:
        """Double the map until the high-water mark is under _GROW_AT of it.
        Not during a defrag: start_defrag grew it for the copy's duration, and
        the copy holds the environment lock."""
        if self._defrag is not None:
            return
        info = self._env.info()
        used = (int(info["last_pgno"]) + 1) * self._psize
        size = new = int(info["map_size"])
        while used > new * _GROW_AT:
            new *= 2
        if new != size:
            self._set_mapsize(new)

    def _double(self) -> None:
        self._set_mapsize(int(self._env.info()["map_size"]) * 2)

    # --- the batch transaction --------------------------------------------

    def _begin(self) -> lmdb.Transaction[bytes]:
        """Open the batch transaction, replaying operations of a batch whose
        transaction was lost."""
        if self._closed:
            raise BackendClosedError("backend is closed")
        if self._failed is not None:
            raise self._failed
        self._grow_if_needed()
        while True:
            txn = self._env.begin(write=True)
            try:
                for op in self._ops:
                    _apply(txn, op)
            except lmdb.MapFullError:
                txn.abort()
                self._double()
                continue
            except lmdb.Error as exc:
                txn.abort()
                raise BackendError(f"backend: replaying the open batch failed: {exc}") from exc
            except BaseException:
                txn.abort()
                raise
            self._txn = txn
            return txn

    def _run(self, op: _Op) -> int:
        """Apply one write to the batch, surviving a full map."""
        txn = self._txn or self._begin()
        while True:
            try:
                result = _apply(txn, op)
                break
            except lmdb.MapFullError:
                # LMDB has poisoned the transaction: drop it, grow, replay.
                self._txn = None
                txn.abort()
                self._double()
                txn = self._begin()
            except lmdb.BadValsizeError as exc:
                # Rejected before any change: the transaction is intact.
                raise BackendError(f"backend: LMDB refuses a {len(op[2])}-byte key (1..511 bytes)") from exc
            except lmdb.Error as exc:
                # Anything else may have poisoned the transaction; the batch's
                # earlier operations are replayed on the next access.
                self._txn = None
                txn.abort()
                raise BackendError(f"backend: write failed: {exc}") from exc
        if not self._ops:
            self._batch_started = time.monotonic()
        self._ops.append(op)
        if self._defrag is not None:
            self._defrag.append(op)
        self._pending += result if op[0] == _DEL_RANGE else 1
        return result

    def _end_read_only(self) -> None:
        txn = self._txn
        if txn is not None and not self._ops:
            self._txn = None
            txn.abort()

    # --- writes -------------------------------------------------------------

    def put(self, bucket: str, key: bytes, value: bytes) -> None:
        """Write key=value into the batch."""
        self._run((_PUT, self._db(bucket), key, value))

    def delete(self, bucket: str, key: bytes) -> None:
        """Delete key (absent is fine) in the batch."""
        self._run((_DEL, self._db(bucket), key, None))

    def delete_range(self, bucket: str, start: bytes, end: bytes) -> int:
        """Delete keys in [start, end); returns how many were deleted."""
        return self._run((_DEL_RANGE, self._db(bucket), start, end))

    def set_consistent_index(self, index: int, term: int) -> None:
        """Record the applied raft (index, term), in the batch that holds the
        data it describes. Kept in memory and written once, when the batch
        commits or something reads the meta bucket: the applier sets it
        after every entry, and only the last one of a batch matters."""
        self._pending_ci = _CI.pack(index, term)

    def _flush_consistent_index(self) -> None:
        pending = self._pending_ci
        if pending is not None:
            self._pending_ci = None
            self._run((_PUT, self._dbs[META_BUCKET], CONSISTENT_INDEX_KEY, pending))

    # --- reads --------------------------------------------------------------

    def get(self, bucket: str, key: bytes) -> bytes | None:
        if self._pending_ci is not None and bucket == META_BUCKET:
            self._flush_consistent_index()
        txn = self._txn or self._begin()
        try:
            value: bytes | None = txn.get(key, db=self._db(bucket))
        except lmdb.BadValsizeError:
            return None  # an empty or over-long key can never have been stored
        return value

    def items(self, bucket: str) -> Iterator[tuple[bytes, bytes]]:
        """Every (key, value) of the bucket, in key order."""
        self._db(bucket)  # an unknown bucket fails here, not at the first next()
        return self._iter(bucket, b"", None)

    def range(self, bucket: str, start: bytes, end: bytes | None) -> Iterator[tuple[bytes, bytes]]:
        """(key, value) pairs with start <= key < end (end None: to the last key), in key order."""
        self._db(bucket)
        return self._iter(bucket, start, end)

    def _iter(self, bucket: str, start: bytes, end: bytes | None) -> Iterator[tuple[bytes, bytes]]:
        if self._pending_ci is not None and bucket == META_BUCKET:
            self._flush_consistent_index()
        key = start
        after = False  # True once `key` was already returned and must be skipped
        chunk_size = _FIRST_CHUNK
        while True:
            txn = self._txn or self._begin()
            # the handle is looked up per chunk: a defrag reopens the environment
            with txn.cursor(self._dbs[bucket]) as cur:
                found = cur.set_range(key) if key else cur.first()
                if not found:
                    return
                chunk: list[tuple[bytes, bytes]] = list(islice(cur.iternext(), chunk_size))
            exhausted = len(chunk) < chunk_size
            if after and chunk[0][0] == key:
                del chunk[0]
            if end is not None:
                cut = bisect.bisect_left(chunk, end, key=_key0)
                if cut < len(chunk):
                    yield from chunk[:cut]
                    return
            if not chunk:
                return
            key = chunk[-1][0]
            after = True
            yield from chunk
            if exhausted:
                return
            chunk_size = min(chunk_size * 4, _MAX_CHUNK)

    def consistent_index(self) -> tuple[int, int]:
        """The applied raft (index, term); (0, 0) on a new backend."""
        raw = self.get(META_BUCKET, CONSISTENT_INDEX_KEY)
        if raw is None:
            return 0, 0
        index, term = _CI.unpack(raw)
        return index, term

    def hash(self) -> int:
        """crc32 over every bucket's name and (key, value) pairs, buckets in
        name order, including the open batch's writes."""
        h = 0
        for name in sorted(self._dbs):
            h = zlib.crc32(name.encode(), h)
            for k, v in self.items(name):
                h = zlib.crc32(_CI.pack(len(k), len(v)), h)
                h = zlib.crc32(k, h)
                h = zlib.crc32(v, h)
        return h

    # --- commit -------------------------------------------------------------

    @property
    def failed(self) -> BackendFileError | None:
        """The error of the failed commit that made the backend unusable."""
        return self._failed

    def _fail(self, what: str, exc: BaseException) -> BackendFileError:
        err = BackendFileError(f"backend: {what} {self.path} failed: {exc} ({_free_space(self.path)})", self.path)
        err.__cause__ = exc
        self._failed = err
        return err

    def commit(self) -> None:
        """Commit the batch now (fsync'd unless unsafe_no_fsync). A failure
        raises BackendFileError and leaves the backend unusable."""
        if self._failed is not None:
            raise self._failed
        self._flush_consistent_index()
        txn = self._txn
        if not self._ops:
            self._end_read_only()
            return
        if txn is None:
            txn = self._begin()  # a write failed and dropped the transaction: replay
        started = time.perf_counter()
        while True:
            self._txn = None
            try:
                txn.commit()
                break
            except lmdb.MapFullError:
                # Commit can need pages (the free list); the txn is gone.
                self._double()
                txn = self._begin()
            except lmdb.Error as exc:
                raise self._fail("committing to", exc) from exc
        stats.BACKEND_COMMIT.observe(time.perf_counter() - started)
        self._ops = []
        self._pending = 0
        self._cover_last_page()

    def _cover_last_page(self) -> None:
        """Extend the file (sparse) to cover LMDB's last allocated page, so
        the next open's truncation check takes its quick path: LMDB does not
        write pages that were allocated and freed in one transaction, and
        leaves the file short of them. Free pages are never read, so zeros
        there change nothing. Not fsync'd: after a crash the open-time walk
        of the trees gives the same answer, only slower."""
        need = (int(self._env.info()["last_pgno"]) + 1) * self._psize
        size = os.stat(self.path).st_size
        if size < need:
            try:
                os.truncate(self.path, need)
                size = need
            except OSError as exc:  # a full disk: the walk at the next open copes
                log.warning("backend %s: cannot extend to %d bytes: %s", self.path, need, exc)
        self._size_floor = max(self._size_floor, size)
        self._file_size = size

    def _check_not_truncated(self) -> None:
        try:
            size = os.stat(self.path).st_size
        except OSError as exc:
            raise self._fail("checking", exc) from exc
        if size < self._size_floor:
            err = BackendFileError(
                f"backend: {self.path} was truncated under the running member: it has {size} bytes, "
                f"{self._size_floor} after the last commit; reading a missing page would kill the process "
                "(SIGBUS): stopping",
                self.path,
            )
            self._failed = err
            raise err

    def commit_if_due(self) -> None:
        """Commit when the batch is batch_interval old or holds batch_limit
        writes. Also checks that the file was not truncated under the live
        map (BackendFileError, final like a failed commit)."""
        if self._failed is not None:
            raise self._failed
        self._check_not_truncated()
        self._flush_consistent_index()
        if not self._ops:
            # Only reads: release the writer lock while idle.
            self._end_read_only()
            return
        if self._pending >= self.batch_limit or time.monotonic() - self._batch_started >= self.batch_interval:
            self.commit()

    # --- sizes, maintenance -------------------------------------------------

    def size(self) -> int:
        """Bytes on disk of the db file as of the last open, commit or
        defrag: the only times it changes (LMDB writes its pages at commit).
        Kept, not stat'ed: the quota check asks on every write, like etcd's
        backend size, which also moves only when a batch commits."""
        return self._file_size

    def size_in_use(self) -> int:
        """Bytes of the pages the data actually occupies: the two meta pages
        and every bucket's B+tree pages (free pages excluded), as seen by the
        open batch. size() - size_in_use() is roughly what defrag() gains."""
        txn = self._txn or self._begin()
        pages = 2
        for db in (None, *self._dbs.values()):
            st = txn.stat(db) if db is not None else txn.stat()
            pages += int(st["branch_pages"]) + int(st["leaf_pages"]) + int(st["overflow_pages"])
        return pages * self._psize

    @property
    def defragmenting(self) -> bool:
        """Whether a defrag is between ``start_defrag`` and its finish or abort."""
        return self._defrag is not None

    def start_defrag(self) -> DefragCopy:
        """Begin a defrag that leaves the owning thread free (call on it).

        The copy is made from a read transaction on the state committed now;
        every write from here on (and the open batch's) is also logged, so
        ``finish_defrag`` can replay onto the copy what the copy missed. Run
        the returned copy's ``run()`` in a worker thread, then call
        ``finish_defrag`` on the owning thread (or ``abort_defrag``). Writes,
        reads and commits go on normally meanwhile; the map is grown first so
        that it need not grow under the copy."""
        if self._closed:
            raise BackendClosedError("backend is closed")
        if self._failed is not None:
            raise self._failed
        if self._defrag is not None:
            raise BackendError(f"backend: {self.path} is already being defragmented")
        self._end_read_only()
        info = self._env.info()
        used = (int(info["last_pgno"]) + 1) * self._psize
        # Room for the copy's duration: the reader pins every page it sees,
        # so writes during the copy only add pages.
        want = 2 * used + (256 << 20)
        if want > int(info["map_size"]):
            if self._txn is not None:
                self.commit()  # the map cannot change under an open write transaction
            self._set_mapsize(want)
        dirname = os.path.dirname(self.path)
        try:
            fd, tmp = tempfile.mkstemp(prefix=os.path.basename(self.path) + ".defrag-", suffix=".tmp", dir=dirname)
        except OSError as exc:
            raise BackendError(f"backend: defragmenting {self.path}: cannot create the copy: {exc}") from exc
        try:
            reader = self._env.begin(write=False)
        except BaseException:
            os.close(fd)
            os.unlink(tmp)
            raise
        copy = DefragCopy(self, fd, tmp, reader)
        self._defrag = list(self._ops)  # the open batch is not in the committed state the copy sees
        self._defrag_copy = copy
        return copy

    def finish_defrag(self, copy: DefragCopy) -> bool:
        """Swap the finished copy in (on the owning thread): close the file,
        rename the copy over it, reopen, and replay the writes logged since
        ``start_defrag`` as the open batch (committed by the next commit).
        Returns False, changing nothing, while a snapshot copy holds the
        environment (call again once ``wait_env_free`` returns). The rename
        is durable only after ``fsync_dir`` of the directory (a worker
        thread's job: until then a crash leaves the old file, which is as new).
        """
        if self._defrag_copy is not copy or not copy.done:
            raise BackendError(f"backend: defrag of {self.path}: the copy is not finished")
        if not self._env_lock.acquire(blocking=False):
            return False
        log_ops = self._defrag or []
        try:
            if self._txn is not None:
                self._txn.abort()  # its operations are in the log
                self._txn = None
            map_size = int(self._env.info()["map_size"])
            bucket_of = {id(handle): name for name, handle in self._dbs.items()}
            copy.close_reader()
            self._env.close()
            try:
                # Held open so the old file's blocks are freed when this
                # descriptor closes (``release_old``, in a worker thread: it
                # takes about 0.1 s per 0.5 GB), not inside the rename.
                copy.old_fd = os.open(self.path, os.O_RDONLY)
                os.replace(copy.tmp, self.path)
                copy.replaced = True
            finally:
                self._env = self._open_env(map_size)
                self._dbs = self._open_dbs()
        finally:
            self._env_lock.release()
            self._defrag = None
            self._defrag_copy = None
            copy.cleanup()
        # The copy holds the state committed at start_defrag; everything since
        # (committed or not) becomes the open batch, replayed by _begin. Each
        # operation sets its keys regardless of their prior state, so writes
        # the copy already has replay harmlessly.
        # the logged operations name the old environment's handles
        self._ops = [(kind, self._dbs[bucket_of[id(db)]], a, b) for kind, db, a, b in log_ops]
        self._pending = len(log_ops)
        self._batch_started = time.monotonic()
        if log_ops:
            self._begin()
        return True

    def wait_env_free(self) -> None:
        """Block until no snapshot copy holds the environment (in a worker thread)."""
        with self._env_lock:
            pass

    def abort_defrag(self, copy: DefragCopy) -> None:
        """Give up a defrag (on the owning thread): the file in use is
        untouched, the copy removed."""
        if self._defrag_copy is copy:
            self._defrag = None
            self._defrag_copy = None
        copy.close_reader()
        copy.cleanup()
        copy.release_old()

    def defrag(self) -> None:
        """Commit, then replace the file by a compacted copy of itself and
        reopen it; the data is identical afterwards. Blocks its caller for
        the whole copy: a server defragments with ``start_defrag``, a worker
        thread and ``finish_defrag`` instead. Timed when it completes
        (etcd_disk_backend_defrag_duration_seconds)."""
        started = time.perf_counter()
        self.commit()
        copy = self.start_defrag()
        try:
            copy.run()
            while not self.finish_defrag(copy):
                self.wait_env_free()
        except BaseException:
            self.abort_defrag(copy)
            raise
        finally:
            copy.release_old()
        self.commit()
        fsync_dir(os.path.dirname(self.path))
        stats.DEFRAG.observe(time.perf_counter() - started)

    def snapshot(self) -> BackendSnapshot:
        """A consistent copy of the committed state (call after commit()).

        Safe to call from a worker thread while the owning thread writes. The
        copy is compacted, and is itself a valid backend file. Timed from
        here to its close (etcd_disk_backend_snapshot_duration_seconds).
        """
        if self._closed:
            raise BackendClosedError("backend is closed")
        started = time.perf_counter()
        dirname = os.path.dirname(self.path)
        try:
            fd, tmp = tempfile.mkstemp(prefix=os.path.basename(self.path) + ".snapshot-", suffix=".tmp", dir=dirname)
        except OSError as exc:
            raise BackendError(f"backend: snapshot of {self.path}: cannot create the copy: {exc}") from exc
        try:
            # Unlinked at once: the copy lives exactly as long as the descriptor.
            os.unlink(tmp)
            with self._env_lock:
                if self._closed:
                    raise BackendClosedError("backend is closed")
                self._env.copyfd(fd, compact=True)
            size = os.fstat(fd).st_size
        except (lmdb.Error, OSError) as exc:
            os.close(fd)
            raise BackendError(
                f"backend: snapshot of {self.path} failed writing a copy in {dirname}: {exc} "
                f"({_free_space(self.path)})"
            ) from exc
        except BaseException:
            os.close(fd)
            raise
        return BackendSnapshot(fd, size, started)

    def close(self) -> None:
        """Commit the batch, then close the file. Idempotent. A backend whose
        commit failed is closed without committing (and without raising
        again: the failure was raised when it happened)."""
        if self._closed:
            return
        try:
            if self._failed is None:
                self.commit()
        finally:
            if self._txn is not None:
                self._txn.abort()
                self._txn = None
            with self._env_lock:
                self._closed = True
                if self._defrag_copy is not None:
                    self._defrag_copy.close_reader()
                self._env.close()

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
