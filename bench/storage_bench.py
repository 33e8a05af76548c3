"""Storage micro-benchmarks: WAL save rate against raw write+fdatasync,
backend put/get rates, MVCC put/range rates, and for --keys keys with
256-byte values the resident memory per key beyond the value and the time a
restart takes to rebuild the index. Never pass/fail; each rate runs for
about ``--seconds`` seconds.

    python3 bench/storage_bench.py [--dir DIR] [--seconds S] [--keys 1000000]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from petcd.mvcc.kvstore import KVStore
from petcd.proto import rpc_pb2
from petcd.raft.types import Entry, HardState
from petcd.server import txn
from petcd.storage.backend import Backend
from petcd.storage.wal import WAL

ENTRY_SIZE = 256


def _timed(seconds: float, step: Callable[[], int]) -> tuple[int, float]:
    """Run step until seconds have passed; (units done, elapsed)."""
    done = 0
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        done += step()
        now = time.perf_counter()
        if now >= deadline:
            return done, now - start


def bench_wal(base: str, batch: int, seconds: float) -> tuple[float, float, float]:
    """(WAL entries/s, raw entries/s for the same bytes, WAL saves/s).

    The two run in alternating slices, so drift in a shared disk's speed
    hits both alike."""
    d = os.path.join(base, f"wal-{batch}")
    w = WAL.create(d, b"bench")
    # Entries are built once and re-indexed before each save, so the figure
    # is the WAL's own cost, not the caller's Entry construction.
    entries = [Entry(1, 0, data=os.urandom(ENTRY_SIZE)) for _ in range(batch)]
    state = {"next": 1}

    def save() -> int:
        i = state["next"]
        for k, e in enumerate(entries):
            e.index = i + k
        w.save(HardState(1, 1, i - 1), entries)
        state["next"] = i + batch
        return batch

    # The same bytes per write as a WAL frame holding `batch` entries and a hard state.
    frame_bytes = 16 + batch * (22 + ENTRY_SIZE) + 29
    path = os.path.join(base, f"raw-{batch}")
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
    os.posix_fallocate(fd, 0, WAL.SEGMENT_SIZE)  # the same preallocation the WAL uses
    buf = os.urandom(frame_bytes)

    def raw() -> int:
        os.write(fd, buf)
        os.fdatasync(fd)
        return batch

    n_wal = n_raw = 0
    t_wal = t_raw = 0.0
    slices = 6
    for _ in range(slices):
        n, t = _timed(seconds / slices / 2, save)
        n_wal, t_wal = n_wal + n, t_wal + t
        n, t = _timed(seconds / slices / 2, raw)
        n_raw, t_raw = n_raw + n, t_raw + t
    w.close()
    shutil.rmtree(d)
    os.close(fd)
    os.unlink(path)
    return n_wal / t_wal, n_raw / t_raw, n_wal / batch / t_wal


def bench_backend(base: str, seconds: float) -> tuple[float, float]:
    """(puts/s with a commit every 10k writes, gets/s)."""
    b = Backend(os.path.join(base, "db"))
    value = os.urandom(ENTRY_SIZE)
    state = {"i": 0}

    def put() -> int:
        i = state["i"]
        for j in range(i, i + 1000):
            b.put("key", j.to_bytes(8, "big"), value)
        b.commit_if_due()
        state["i"] = i + 1000
        return 1000

    n_put, t_put = _timed(seconds, put)
    b.commit()
    total = state["i"]

    def get() -> int:
        for j in range(0, total, max(1, total // 1000)):
            b.get("key", j.to_bytes(8, "big"))
        return len(range(0, total, max(1, total // 1000)))

    n_get, t_get = _timed(seconds, get)
    b.close()
    return n_put / t_put, n_get / t_get


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def bench_mvcc(base: str, seconds: float) -> tuple[float, float]:
    """In-process MVCC puts/s (over 10k keys) and single-key ranges/s."""
    be = Backend(os.path.join(base, "mvcc.db"), unsafe_no_fsync=True)
    kv = KVStore(be)
    value = b"v" * ENTRY_SIZE
    n = 0

    def put() -> int:
        nonlocal n
        n += 1
        txn.put(kv, rpc_pb2.PutRequest(key=b"k%05d" % (n % 10_000), value=value), None)
        be.commit_if_due()
        return 1

    puts, t1 = _timed(seconds, put)

    def get() -> int:
        nonlocal n
        n += 7
        txn.range_(kv, rpc_pb2.RangeRequest(key=b"k%05d" % (n % 10_000)))
        return 1

    gets, t2 = _timed(seconds, get)
    be.close()
    return puts / t1, gets / t2


def bench_keys(base: str, keys: int) -> tuple[float, float, float]:
    """(RSS bytes per key beyond its value, restart seconds, load seconds)."""
    path = os.path.join(base, "keys.db")
    value = b"v" * ENTRY_SIZE
    be = Backend(path, unsafe_no_fsync=True)
    kv = KVStore(be)
    t0 = time.perf_counter()
    for i in range(keys):
        txn.put(kv, rpc_pb2.PutRequest(key=b"key/%09d" % i, value=value), None)
        if i % 10_000 == 0:
            be.commit_if_due()
    be.close()
    load = time.perf_counter() - t0
    del kv, be
    before = _rss()
    t0 = time.perf_counter()
    be = Backend(path, unsafe_no_fsync=True)
    kv = KVStore(be)
    restart = time.perf_counter() - t0
    per_key = (_rss() - before) / keys - ENTRY_SIZE
    assert kv.rev == keys + 1
    be.close()
    return per_key, restart, load


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", default=None, help="directory on the disk to measure (default: a temp dir)")
    ap.add_argument("--seconds", type=float, default=1.5, help="seconds per measurement")
    ap.add_argument("--keys", type=int, default=1_000_000, help="keys for the memory and restart figures")
    args = ap.parse_args()
    base = tempfile.mkdtemp(prefix="petcd-bench-", dir=args.dir)
    try:
        print(f"storage bench in {base}, {ENTRY_SIZE}-byte entries, {args.seconds:g}s per figure")
        print(f"{'batch':>6} {'WAL entries/s':>14} {'raw entries/s':>14} {'ratio':>6} {'WAL fsyncs/s':>13}")
        for batch in (1, 16, 256):
            wal, raw, saves = bench_wal(base, batch, args.seconds)
            print(f"{batch:>6} {wal:>14,.0f} {raw:>14,.0f} {wal / raw:>6.2f} {saves:>13,.0f}")
        puts, gets = bench_backend(base, args.seconds)
        print(f"backend: {puts:,.0f} puts/s (batched: a commit per 0.1 s or 10k writes), {gets:,.0f} gets/s")
        mputs, mranges = bench_mvcc(base, args.seconds)
        print(f"mvcc: {mputs:,.0f} puts/s, {mranges:,.0f} single-key ranges/s (in process)")
        per_key, restart, load = bench_keys(base, args.keys)
        print(f"{args.keys:,} keys of {ENTRY_SIZE} bytes: loaded in {load:.1f}s; restart rebuilt the index in "
              f"{restart:.1f}s; RSS {per_key:,.0f} bytes per key beyond the value")
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
