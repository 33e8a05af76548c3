"""bbolt's file format: our reader and writer against each other, against
files real etcd writes, and real etcd reading files we write; damaged files
are refused with a clear error, never a hang or a crash."""

from __future__ import annotations

import hashlib
import io
import os
import random
import shutil
import struct
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from petcd.proto import kv_pb2, rpc_pb2
from petcd.storage.bbolt import (
    BRANCH_PAGE,
    NO_FREELIST,
    PAGE_HEADER,
    BoltFormatError,
    BoltReader,
    BoltWriter,
    Nested,
    write_file,
)
from petcd.testing.harness import Server, etcd_server, etcdctl, require_binary
from tests.restore import restored_server

pytestmark = pytest.mark.timeout(300)

Buckets = dict[bytes, dict[bytes, bytes]]


def _write(path: Path, data: Buckets, page_size: int = 4096) -> int:
    return write_file(str(path), [(n, sorted(kv.items())) for n, kv in sorted(data.items())], page_size)


def _read_all(path: Path, length: int | None = None) -> Buckets:
    with BoltReader(str(path), length) as r:
        out: Buckets = {}
        for name in r.buckets():
            b = r.bucket(name)
            assert b is not None
            out[name] = dict(b.items())
        return out


def _random_buckets(seed: int, n: int) -> Buckets:
    rnd = random.Random(seed)
    big = {rnd.randbytes(rnd.randint(1, 60)): rnd.randbytes(rnd.choice([0, 1, 50, 700, 5000, 20000]))
           for _ in range(n)}
    return {
        b"alarm": {},  # empty: an inline bucket with no elements
        b"big": big,  # deep tree, overflow pages for the large values
        b"cluster": {b"clusterVersion": b"3.4.0"},  # small: inline
        b"key": {struct.pack(">Q", i) + b"_" + bytes(8): b"v" * (i % 300) for i in range(1, 3000)},
    }


# --- our writer, our reader --------------------------------------------------------


@pytest.mark.parametrize("page_size", [1024, 4096])
def test_round_trip_and_consistency(tmp_path: Path, page_size: int) -> None:
    data = _random_buckets(7, 5000)
    p = tmp_path / "db"
    size = _write(p, data, page_size)
    assert size == p.stat().st_size and size % page_size == 0
    assert _read_all(p) == data
    with BoltReader(str(p)) as r:
        assert r.check() == []
        assert r.meta.page_size == page_size and r.size == size
        # deep enough that branch pages hold branch pages
        node = r._page(r.bucket(b"big")._root)[0]  # type: ignore[union-attr]
        assert node.flags & BRANCH_PAGE


def test_nested_buckets_round_trip(tmp_path: Path) -> None:
    rnd = random.Random(11)
    big = sorted({rnd.randbytes(12): rnd.randbytes(rnd.choice([5, 900, 6000])) for _ in range(800)}.items())
    small = [(b"a", b"1"), (b"b", b"2")]
    with open(tmp_path / "db", "wb") as f:
        w = BoltWriter(f, 1024)
        w.add_bucket(b"outer", [
            (b"big", Nested(big)),  # its own pages, written while outer's leaf is open
            (b"deep", Nested([(b"inner", Nested(small)), (b"x", b"y")], has_buckets=True)),
            (b"plain", b"value"),
            (b"small", Nested(small)),  # inline
        ], has_buckets=True)
        w.finish()
    with BoltReader(str(tmp_path / "db")) as r:
        assert r.check() == []
        outer = r.bucket(b"outer")
        assert outer is not None
        assert list(outer.items()) == [(b"plain", b"value")]
        assert [name for name, _ in outer.buckets()] == [b"big", b"deep", b"small"]
        assert list(r.bucket(b"outer", b"big").items()) == big  # type: ignore[union-attr]
        assert list(r.bucket(b"outer", b"small").items()) == small  # type: ignore[union-attr]
        assert r.bucket(b"outer", b"small")._root == 0  # type: ignore[union-attr]  # inlined
        assert list(r.bucket(b"outer", b"deep", b"inner").items()) == small  # type: ignore[union-attr]
        assert r.bucket(b"outer", b"deep")._root != 0  # type: ignore[union-attr]  # holds a bucket: not inlined


class _Pipe(io.RawIOBase):
    """A sink that cannot seek, like the pipe a snapshot goes down."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []

    def writable(self) -> bool:
        return True

    def write(self, b: Any) -> int:
        self.chunks.append(bytes(b))
        return len(b)


def test_streamed_file_equals_the_seekable_one(tmp_path: Path) -> None:
    data = _random_buckets(5, 3000)

    def buckets() -> list[tuple[bytes, list[tuple[bytes, bytes]]]]:
        return [(n, sorted(kv.items())) for n, kv in sorted(data.items())]

    size = write_file(str(tmp_path / "seekable"), buckets())
    dry = BoltWriter(None)
    for name, items in buckets():
        dry.add_bucket(name, items)
    assert dry.finish() == size and dry.layout is not None
    pipe = _Pipe()
    w = BoltWriter(pipe, layout=dry.layout)  # type: ignore[arg-type]
    for name, items in buckets():
        w.add_bucket(name, items)
    assert w.finish() == size
    assert b"".join(pipe.chunks) == (tmp_path / "seekable").read_bytes()
    # a stream whose input is not what the dry run saw is caught
    w = BoltWriter(_Pipe(), layout=dry.layout)  # type: ignore[arg-type]
    w.add_bucket(b"other", [(b"k", b"v")])
    with pytest.raises(AssertionError, match="planned"):
        w.finish()


def test_writer_refuses_unordered_keys(tmp_path: Path) -> None:
    with open(tmp_path / "db", "wb") as f:
        w = BoltWriter(f)
        with pytest.raises(ValueError, match="ascending"):
            w.add_bucket(b"b", [(b"2", b""), (b"1", b"")])
        w.add_bucket(b"c", [])
        with pytest.raises(ValueError, match="ascending"):
            w.add_bucket(b"a", [])


# --- damaged files ------------------------------------------------------------------


@pytest.fixture
def small_db(tmp_path: Path) -> Path:
    p = tmp_path / "db"
    _write(p, _random_buckets(3, 400))
    return p


def _flip(path: Path, offset: int) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ 0x5A]))


def test_one_bad_meta_page_falls_back_to_the_other(small_db: Path) -> None:
    want = _read_all(small_db)
    _flip(small_db, 4096 + 40)  # inside meta page 1's fields
    assert _read_all(small_db) == want


def test_both_meta_pages_bad_is_refused(small_db: Path) -> None:
    _flip(small_db, 16 + 20)
    _flip(small_db, 4096 + 16 + 20)
    with pytest.raises(BoltFormatError, match="checksum mismatch"):
        BoltReader(str(small_db))


def test_truncated_file_is_refused(small_db: Path) -> None:
    size = small_db.stat().st_size
    with pytest.raises(BoltFormatError, match="truncated"):
        BoltReader(str(small_db), size - 4096)


def test_not_bbolt_is_refused(tmp_path: Path) -> None:
    p = tmp_path / "x"
    p.write_bytes(b"hello" * 2000)
    with pytest.raises(BoltFormatError, match="not a bbolt file"):
        BoltReader(str(p))


def _first_branch_page(r: BoltReader) -> int:
    pgid = 2
    while pgid < r.meta.pgid:
        _, flags, count, overflow = PAGE_HEADER.unpack_from(r._mm, pgid * r.page_size)
        if flags & BRANCH_PAGE and count >= 2:
            return pgid
        pgid += overflow + 1
    raise AssertionError("no branch page")


def test_page_pointing_past_the_end_is_refused(small_db: Path) -> None:
    with BoltReader(str(small_db)) as r:
        pg = _first_branch_page(r)
        end = r.meta.pgid
    with open(small_db, "r+b") as f:  # the first child of the branch page -> far past the end
        f.seek(pg * 4096 + 16 + 8)
        f.write(struct.pack("<Q", end + 1000))
    with BoltReader(str(small_db)) as r:
        with pytest.raises(BoltFormatError, match="outside the file"):
            list(r.bucket(b"big").items())  # type: ignore[union-attr]
        assert any("outside the file" in e for e in r.check())


def test_loop_in_the_page_tree_is_refused(small_db: Path) -> None:
    with BoltReader(str(small_db)) as r:
        pg = _first_branch_page(r)
    with open(small_db, "r+b") as f:  # the branch's second child -> the branch itself
        f.seek(pg * 4096 + 16 + 16 + 8)
        f.write(struct.pack("<Q", pg))
    with BoltReader(str(small_db)) as r:
        with pytest.raises(BoltFormatError, match="referenced twice"):
            list(r.bucket(b"big").items())  # type: ignore[union-attr]
        assert r.check()


# --- real etcd ----------------------------------------------------------------------


def _decode_latest(buckets: Buckets) -> tuple[dict[bytes, kv_pb2.KeyValue], int]:
    """The live keys (latest revision, tombstones applied) and the newest
    main revision of an etcd key bucket."""
    live: dict[bytes, kv_pb2.KeyValue] = {}
    rev = 0
    for k, v in sorted(buckets[b"key"].items()):
        kv = kv_pb2.KeyValue.FromString(v)
        rev = struct.unpack_from(">Q", k)[0]
        if len(k) == 18 and k[17:] == b"t":
            live.pop(kv.key, None)
        else:
            live[kv.key] = kv
    return live, rev


def _range_all(s: Server) -> rpc_pb2.RangeResponse:
    return s.kv().Range(rpc_pb2.RangeRequest(key=b"\0", range_end=b"\0"), timeout=30)


def _fill(s: Server) -> None:
    """History: puts, overwrites, deletes, a compaction, a lease with keys."""
    kv = s.kv()
    for i in range(600):
        kv.Put(rpc_pb2.PutRequest(key=f"k/{i % 200:04d}".encode(), value=os.urandom(i % 40)), timeout=30)
    for i in range(0, 200, 7):
        kv.DeleteRange(rpc_pb2.DeleteRangeRequest(key=f"k/{i:04d}".encode()), timeout=30)
    kv.Compact(rpc_pb2.CompactionRequest(revision=300, physical=True), timeout=30)
    lease_id = int(etcdctl(s.endpoint, "lease", "grant", "3000").stdout.split()[1], 16)
    for i in range(5):
        kv.Put(rpc_pb2.PutRequest(key=f"leased/{i}".encode(), value=b"l", lease=lease_id), timeout=30)
    kv.Put(rpc_pb2.PutRequest(key=b"big", value=os.urandom(30000)), timeout=30)


@pytest.fixture(scope="module")
def etcd_snapshot(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, rpc_pb2.RangeResponse]]:
    """A snapshot file real etcd saved, and what etcd served when it saved it."""
    tmp = tmp_path_factory.mktemp("etcd-snap")
    s = etcd_server(tmp).start()
    try:
        _fill(s)
        served = _range_all(s)
        path = tmp / "etcd.snap"
        etcdctl(s.endpoint, "snapshot", "save", str(path))
    finally:
        s.stop()
    yield path, served


def test_reads_what_etcd_saved(etcd_snapshot: tuple[Path, rpc_pb2.RangeResponse]) -> None:
    path, served = etcd_snapshot
    size = path.stat().st_size
    data = path.read_bytes()
    assert hashlib.sha256(data[:-32]).digest() == data[-32:]
    with BoltReader(str(path), size - 32) as r:
        assert r.check() == []
    buckets = _read_all(path, size - 32)
    assert {b"key", b"meta", b"lease", b"members", b"cluster"} <= set(buckets)
    live, rev = _decode_latest(buckets)
    assert rev == served.header.revision
    assert sorted(live) == [kv.key for kv in served.kvs]
    for want in served.kvs:
        assert live[want.key] == want  # value, create/mod revision, version, lease
    assert len(buckets[b"lease"]) == 1
    assert struct.unpack(">Q", buckets[b"meta"][b"finishedCompactRev"][:8])[0] == 300


def _status(path: Path) -> str:
    cp = subprocess.run([require_binary("etcdctl"), "snapshot", "status", str(path), "-w", "json"],
                        capture_output=True, text=True, timeout=60, env=dict(os.environ, ETCDCTL_API="3"))
    assert cp.returncode == 0, cp.stderr
    return cp.stdout


def test_etcd_reads_and_restores_what_we_write(
    tmp_path: Path, etcd_snapshot: tuple[Path, rpc_pb2.RangeResponse]
) -> None:
    path, served = etcd_snapshot
    buckets = _read_all(path, path.stat().st_size - 32)
    ours = tmp_path / "ours.db"
    _write(ours, buckets)
    body = ours.read_bytes()
    snap = tmp_path / "ours.snap"
    snap.write_bytes(body + hashlib.sha256(body).digest())
    # etcd's hash over every bucket is the same as for its own file
    import json

    theirs_st, ours_st = json.loads(_status(path)), json.loads(_status(snap))
    assert (ours_st["hash"], ours_st["revision"], ours_st["totalKey"]) == (
        theirs_st["hash"], theirs_st["revision"], theirs_st["totalKey"])

    server = restored_server("etcd", tmp_path, snap)
    server.start()
    try:
        got = _range_all(server)
        assert list(got.kvs) == list(served.kvs)
        assert got.header.revision == served.header.revision
        leases = etcdctl(server.endpoint, "lease", "list").stdout
        assert "found 1 leases" in leases
    finally:
        server.stop()


def test_fuzzed_etcd_snapshots_never_hang_or_crash(
    tmp_path: Path, etcd_snapshot: tuple[Path, rpc_pb2.RangeResponse]
) -> None:
    """A seeded fuzzer: random byte flips in a real etcd snapshot are read
    back or refused with BoltFormatError, each within a bounded time."""
    src, _ = etcd_snapshot
    length = src.stat().st_size - 32
    pristine = src.read_bytes()[:length]
    rnd = random.Random(20261201)
    refused = 0
    for i in range(150):
        buf = bytearray(pristine)
        for _ in range(rnd.choice([1, 3, 20])):
            off = rnd.randrange(length) if rnd.random() < 0.5 else rnd.randrange(min(length, 3 * 4096))
            buf[off] ^= 1 << rnd.randrange(8)
        p = tmp_path / f"fuzz{i}.db"
        p.write_bytes(bytes(buf))
        started = time.monotonic()
        try:
            with BoltReader(str(p)) as r:
                r.check()
                for name in r.buckets():
                    b = r.bucket(name)
                    if b is not None:
                        for _ in b.entries():
                            pass
        except BoltFormatError:
            refused += 1
        assert time.monotonic() - started < 10
        p.unlink()
    assert refused > 0
    shutil.rmtree(tmp_path, ignore_errors=True)


def test_no_freelist_files_are_read(etcd_snapshot: tuple[Path, rpc_pb2.RangeResponse]) -> None:
    # etcd 3.4 keeps no freelist in the file (bbolt's NoFreelistSync)
    path, _ = etcd_snapshot
    with BoltReader(str(path), path.stat().st_size - 32) as r:
        assert r.meta.freelist == NO_FREELIST and r.freelist() == []
