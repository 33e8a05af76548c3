"""petcd's backend in etcd's file format, and back.

What it is for: a snapshot that leaves the cluster (``etcdctl snapshot
save``) is the bbolt file etcd itself would have written, so etcd's tools
read it and etcd restores it; and petcd restores or migrates etcd's bbolt
files. petcd's buckets already hold etcd's encodings (revision keys and
KeyValue values, leasepb leases, member JSON, AlarmMember keys, compaction
revisions), with one difference that is converted here:

- etcd keeps the applied raft index under ``consistent_index`` as an 8-byte
  big-endian integer (and, since 3.5, the term under ``term``); petcd keeps
  both in one 16-byte value. An export carries the index alone, as etcd 3.4
  writes it (``etcdctl snapshot status`` counts the keys); an import takes
  a 3.5 file's term when there is one.

A snapshot also carries etcd's ``cluster/clusterVersion`` when the backend
has none (one from before petcd recorded it), as every etcd 3.4 data file
does.

The export runs in a separate process (``python -m petcd.storage.etcd_format
export-stream DB_PATH``) so that building a large file never competes with
the member's event loop for the interpreter lock; it reads the member's live
backend file through LMDB's multi-process readers (one consistent read
transaction, no copy, the writer never waits) and writes the bbolt file down
a pipe as it builds it (a dry run first lays it out, so the meta pages can
lead): no temporary file, and the member streams while the child builds.
The child runs at CPU niceness 19 in the idle I/O class (lower_priority):
on a 2-core box it otherwise takes CPU from the member's request path and
the member's put p99 during a 1 GB save went to 3.5-4x its idle p99.
"""

from __future__ import annotations

import ctypes
import os
import platform
import signal
import struct
import sys
from collections.abc import Iterable, Iterator
from typing import Any, BinaryIO

import lmdb

from petcd.storage.backend import BUCKETS, CONSISTENT_INDEX_KEY, META_BUCKET, Backend
from petcd.storage.bbolt import BoltReader, BoltWriter
from petcd.version import CLUSTER_VERSION

TERM_KEY = b"term"
CLUSTER_BUCKET = "cluster"
CLUSTER_VERSION_KEY = b"clusterVersion"
_U64 = struct.Struct(">Q")
_CI = struct.Struct(">QQ")
_MAX_DBS = 32
# Address space, not memory: the backend's own ceiling (backend._MAX_MAP_SIZE).
_LIVE_MAP_SIZE = 1 << 42
# Restore commits the imported backend every this many writes, so the open
# batch (kept in memory until commit) stays small.
_IMPORT_BATCH = 20_000

ItemSource = Iterable[tuple[bytes, bytes]]


def _to_etcd_bucket(name: str, items: ItemSource) -> ItemSource:
    """A petcd bucket's items as etcd stores them (sorted, as bbolt needs)."""
    if name == META_BUCKET:
        out = {}
        for k, v in items:
            if k == CONSISTENT_INDEX_KEY and len(v) == _CI.size:
                out[k] = _U64.pack(_CI.unpack(v)[0])  # etcd 3.4 keeps no term
            else:
                out[k] = v
        return sorted(out.items())
    if name == CLUSTER_BUCKET:
        got = dict(items)
        got.setdefault(CLUSTER_VERSION_KEY, CLUSTER_VERSION.encode())
        return sorted(got.items())
    return items


def etcd_buckets(items_of: Any) -> Iterator[tuple[bytes, ItemSource]]:
    """(bucket name, items) of etcd's buckets in bbolt's (byte) order, from
    ``items_of(name)`` giving a petcd bucket's items in key order."""
    for name in sorted(BUCKETS, key=str.encode):
        yield name.encode(), _to_etcd_bucket(name, items_of(name))


def _items_of(env: lmdb.Environment, txn: lmdb.Transaction[bytes]) -> Any:
    def items_of(name: str) -> Iterator[tuple[bytes, bytes]]:
        try:
            db = env.open_db(name.encode(), txn=txn, create=False)
        except lmdb.NotFoundError:
            return iter(())
        return txn.cursor(db).iternext()

    return items_of


def export_lmdb(env: lmdb.Environment, out: BinaryIO) -> int:
    """Write the LMDB backend file's buckets to out (seekable) as a bbolt
    file, inside one read transaction (a consistent view); returns the bbolt
    size."""
    writer = BoltWriter(out)
    with env.begin() as txn:
        for name, items in etcd_buckets(_items_of(env, txn)):
            writer.add_bucket(name, items)
    return writer.finish()


SIZE_HEADER = struct.Struct(">Q")


def export_stream(env: lmdb.Environment, out: BinaryIO) -> int:
    """Write the backend's buckets to out, which need not seek (a pipe): the
    bbolt file's size (8 bytes, big-endian), then the file, front to back.
    Two passes inside one read transaction: a dry run lays the file out (so
    its meta pages can go first), then the same input is written; returns
    the bbolt size."""
    with env.begin() as txn:
        dry = BoltWriter(None)
        for name, items in etcd_buckets(_items_of(env, txn)):
            dry.add_bucket(name, items)
        size = dry.finish()
        assert dry.layout is not None
        out.write(SIZE_HEADER.pack(size))
        writer = BoltWriter(out, layout=dry.layout)
        for name, items in etcd_buckets(_items_of(env, txn)):
            writer.add_bucket(name, items)
        writer.finish()
    return size


def open_live_reader(path: str) -> lmdb.Environment:
    """A read-only view of a backend file that another process (the member)
    keeps writing: LMDB's lock file gives this process's read transaction a
    consistent committed snapshot and never makes the writer wait. The map
    is sized far beyond the file so commits made after this open (a larger
    file) never make a read transaction fail to start; only pages of the
    transaction's own snapshot are ever touched."""
    return lmdb.open(path, subdir=False, readonly=True, lock=True, max_dbs=_MAX_DBS, map_size=_LIVE_MAP_SIZE)


def export_live(path: str, out_fd: int) -> int:
    """Convert the live backend at path (see open_live_reader) into a bbolt
    file written to out_fd (from its start); returns the bbolt size."""
    env = open_live_reader(path)
    try:
        with os.fdopen(os.dup(out_fd), "w+b", buffering=1 << 20) as out:
            out.seek(0)
            return export_lmdb(env, out)
    finally:
        env.close()


def import_bbolt(reader: BoltReader, backend: Backend) -> int:
    """Copy an etcd bbolt file's buckets into an (empty) petcd backend and
    commit; returns how many pairs were copied. Buckets petcd does not keep
    are skipped."""
    present = set(reader.buckets())
    n = 0
    for name in BUCKETS:
        if name.encode() not in present:
            continue
        bucket = reader.bucket(name.encode())
        assert bucket is not None
        items: ItemSource = bucket.items()
        if name == META_BUCKET:
            meta = dict(items)
            ci = meta.pop(CONSISTENT_INDEX_KEY, None)
            term = meta.pop(TERM_KEY, None)
            if ci is not None and len(ci) >= 8:
                index = _U64.unpack_from(ci)[0]
                t = _U64.unpack_from(term)[0] if term is not None and len(term) >= 8 else 0
                meta[CONSISTENT_INDEX_KEY] = _CI.pack(index, t)
            items = sorted(meta.items())
        for k, v in items:
            backend.put(name, k, v)
            n += 1
            if n % _IMPORT_BATCH == 0:
                backend.commit()
    backend.commit()
    return n


# ioprio_set(2): the syscall's number per machine (no libc wrapper exists), and
# the "idle" I/O class, served only when no other process wants the disk.
_IOPRIO_SET = {"x86_64": 251, "aarch64": 30, "i686": 289, "armv7l": 314}
_IOPRIO_WHO_PROCESS = 1
_IOPRIO_CLASS_IDLE = 3
_IOPRIO_CLASS_SHIFT = 13
# CPU niceness of the export child: it yields a shared core to the member (a
# put's path) almost entirely, and still runs at full speed on an idle core.
EXPORT_NICE = 19


def lower_priority() -> bool:
    """Put this process below the member in both CPU and disk priority: the
    member's puts (and its WAL fsyncs) come first on a busy box and the
    snapshot takes what is left. Returns whether the idle I/O class was
    set (it is best effort: an unknown machine or a refusal leaves the
    default class, which is still correct, only less polite)."""
    os.nice(EXPORT_NICE - os.nice(0))
    nr = _IOPRIO_SET.get(platform.machine())
    if nr is None:
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
    except OSError:
        return False
    return libc.syscall(nr, _IOPRIO_WHO_PROCESS, 0, _IOPRIO_CLASS_IDLE << _IOPRIO_CLASS_SHIFT) == 0


def _on_sigterm(signum: int, frame: object) -> None:
    """The member gave up on the snapshot: unwind, so the read transaction
    ends and its reader slot in the lock file is released. stdout now goes
    to /dev/null first, so the unwinding flush of the pipe nobody reads any
    more cannot block the exit."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.close(devnull)
    sys.exit(128 + signum)


def main(argv: list[str]) -> int:
    """``export-stream DB_PATH``: a member's backend, read while it runs,
    written to stdout as export_stream writes it (the member streams it on);
    ``export-live DB_PATH OUT_FD``: written to the file OUT_FD, its size
    printed."""
    signal.signal(signal.SIGTERM, _on_sigterm)
    if len(argv) == 2 and argv[0] == "export-stream":
        lower_priority()
        env = open_live_reader(argv[1])
        try:
            with os.fdopen(1, "wb", buffering=1 << 20, closefd=False) as out:
                export_stream(env, out)
        except BrokenPipeError:  # the member stopped reading: it has given up
            return 1
        finally:
            env.close()
        return 0
    if len(argv) == 3 and argv[0] == "export-live":
        print(export_live(argv[1], int(argv[2])))
        return 0
    print("usage: python -m petcd.storage.etcd_format export-stream DB_PATH | export-live DB_PATH OUT_FD",
          file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
