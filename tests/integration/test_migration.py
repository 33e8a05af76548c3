"""Moving between etcd and petcd with etcd's own tools: a snapshot saved from
one is restored by the other, and the restored member serves the same keys
(value, create/mod revision, version, lease), the same revision, the same
leases, and the same HashKV."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from petcd.proto import rpc_pb2, rpc_pb2_grpc
from petcd.testing.harness import Server, etcd_server, etcdctl, petcd_cluster, petcd_server, require_binary
from tests.restore import restored_server

pytestmark = pytest.mark.timeout(600)

N_KEYS = 10_000


def _fill(s: Server) -> list[int]:
    """10,000 keys with history: batched puts, overwrites, deletes, a
    compaction, leases with attached keys. Returns the lease ids."""
    kv = s.kv()
    lease = rpc_pb2_grpc.LeaseStub(s.channel())
    for start in range(0, N_KEYS, 100):
        ops = [rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=f"key/{i:05d}".encode(), value=b"v%d" % i))
               for i in range(start, start + 100)]
        kv.Txn(rpc_pb2.TxnRequest(success=ops), timeout=30)
    for i in range(0, N_KEYS, 50):
        kv.Put(rpc_pb2.PutRequest(key=f"key/{i:05d}".encode(), value=b"second %d" % i), timeout=30)
    kv.DeleteRange(rpc_pb2.DeleteRangeRequest(key=b"key/0010", range_end=b"key/0012"), timeout=30)
    rev = kv.Range(rpc_pb2.RangeRequest(key=b"key/00000"), timeout=30).header.revision
    kv.Compact(rpc_pb2.CompactionRequest(revision=rev - 5, physical=True), timeout=30)
    ids = []
    for n in range(3):
        g = lease.LeaseGrant(rpc_pb2.LeaseGrantRequest(TTL=3600 + n), timeout=30)
        ids.append(g.ID)
        for j in range(4):
            kv.Put(rpc_pb2.PutRequest(key=f"leased/{n}/{j}".encode(), value=b"x", lease=g.ID), timeout=30)
    for i in range(0, 200, 3):
        kv.Put(rpc_pb2.PutRequest(key=f"key/{i:05d}".encode(), value=b"third"), timeout=30)
    return sorted(ids)


def _state(s: Server) -> tuple[rpc_pb2.RangeResponse, list[tuple[int, int]], rpc_pb2.HashKVResponse]:
    kv = s.kv()
    got = kv.Range(rpc_pb2.RangeRequest(key=b"\0", range_end=b"\0"), timeout=60)
    lease = rpc_pb2_grpc.LeaseStub(s.channel())
    leases = sorted(
        (ll.ID, lease.LeaseTimeToLive(rpc_pb2.LeaseTimeToLiveRequest(ID=ll.ID), timeout=30).grantedTTL)
        for ll in lease.LeaseLeases(rpc_pb2.LeaseLeasesRequest(), timeout=30).leases
    )
    h = s.maintenance().HashKV(rpc_pb2.HashKVRequest(revision=got.header.revision), timeout=60)
    return got, leases, h


def _etcd_status(path: Path) -> dict[str, int]:
    cp = subprocess.run([require_binary("etcdctl"), "snapshot", "status", str(path), "-w", "json"],
                        capture_output=True, text=True, timeout=120, env=dict(os.environ, ETCDCTL_API="3"))
    assert cp.returncode == 0, cp.stderr
    return dict(json.loads(cp.stdout))


def _assert_same(a: tuple[rpc_pb2.RangeResponse, list[tuple[int, int]], rpc_pb2.HashKVResponse],
                 b: tuple[rpc_pb2.RangeResponse, list[tuple[int, int]], rpc_pb2.HashKVResponse]) -> None:
    ra, la, ha = a
    rb, lb, hb = b
    assert ra.header.revision == rb.header.revision
    assert len(ra.kvs) == len(rb.kvs) > N_KEYS - 100
    assert list(ra.kvs) == list(rb.kvs)  # key, value, create/mod revision, version, lease
    assert la == lb and len(la) == 3
    assert (ha.hash, ha.compact_revision) == (hb.hash, hb.compact_revision)


def test_petcd_snapshot_restored_by_etcd(tmp_path: Path) -> None:
    members = petcd_cluster(tmp_path, 2, extra=["--unsafe-no-fsync"])
    try:
        leader = members[0]
        _fill(leader)
        before = _state(leader)
        snap = tmp_path / "from-petcd.db"
        etcdctl(leader.endpoint, "snapshot", "save", str(snap), timeout=300)
        # the other member answers the same
        _assert_same(before, _state(members[1]))
    finally:
        for m in members:
            m.stop()
    st = _etcd_status(snap)
    assert st["revision"] == before[0].header.revision

    server = restored_server("etcd", tmp_path, snap)
    server.start()
    try:
        _assert_same(before, _state(server))
    finally:
        server.stop()


def test_etcd_snapshot_restored_by_petcd(tmp_path: Path) -> None:
    src = etcd_server(tmp_path).start()
    try:
        _fill(src)
        before = _state(src)
        snap = tmp_path / "from-etcd.db"
        etcdctl(src.endpoint, "snapshot", "save", str(snap), timeout=300)
    finally:
        src.stop()
    st = subprocess.run([sys.executable, "-m", "petcd", "snapshot", "status", str(snap), "-w", "json"],
                        capture_output=True, text=True, timeout=120)
    assert st.returncode == 0, st.stderr
    assert json.loads(st.stdout) == _etcd_status(snap)

    dst = restored_server("petcd", tmp_path, snap, extra=["--unsafe-no-fsync"])
    dst.start()
    try:
        _assert_same(before, _state(dst))
        etcdctl(dst.endpoint, "put", "after", "restore")  # and it takes writes
    finally:
        dst.stop()


def test_snapshot_is_a_consistent_cut_while_writes_continue(tmp_path: Path) -> None:
    """Puts keep landing during `etcdctl snapshot save`; the file holds every
    revision up to its newest one, no gap, and its consistent index."""
    import struct
    import threading

    from petcd.storage.bbolt import BoltReader

    s = petcd_server(tmp_path, extra=["--unsafe-no-fsync"]).start()
    try:
        kv = s.kv()
        for lo in range(0, 20_000, 100):  # a db big enough that saving it takes a while
            ops = [rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=b"bulk/%05d" % i, value=os.urandom(200)))
                   for i in range(lo, lo + 100)]
            kv.Txn(rpc_pb2.TxnRequest(success=ops), timeout=30)
        stop = threading.Event()
        done: list[int] = []

        def writer() -> None:
            while not stop.is_set():
                r = kv.Put(rpc_pb2.PutRequest(key=b"live/%d" % len(done), value=b"x"), timeout=30)
                done.append(r.header.revision)

        t = threading.Thread(target=writer)
        t.start()
        try:
            etcdctl(s.endpoint, "snapshot", "save", str(tmp_path / "live.db"), timeout=300)
            during = len(done)
        finally:
            stop.set()
            t.join(timeout=60)
        assert during > 0  # the member kept serving puts while the snapshot was taken
    finally:
        s.stop()
    path = tmp_path / "live.db"
    with BoltReader(str(path), path.stat().st_size - 32) as r:
        assert r.check() == []
        key = r.bucket(b"key")
        meta = r.bucket(b"meta")
        assert key is not None and meta is not None
        mains = sorted({struct.unpack_from(">Q", k)[0] for k, _ in key.items()})
        ci = meta.get(b"consistent_index")
        assert ci is not None and struct.unpack(">Q", ci)[0] > 0
    assert mains == list(range(2, mains[-1] + 1))
    live = mains[-1] - 201  # revisions 2..201 were the bulk txns
    assert 0 <= live <= len(done)


def test_many_snapshots_in_a_row_all_succeed(tmp_path: Path) -> None:
    """Each snapshot is built by a child process of the member: every one of
    many must succeed (spawning it through the event loop's own fork crashed
    the child before its exec now and then)."""
    s = petcd_server(tmp_path, extra=["--unsafe-no-fsync"]).start()
    try:
        s.kv().Put(rpc_pb2.PutRequest(key=b"k", value=b"v"), timeout=30)
        m = s.maintenance()
        failures = []
        for i in range(60):
            try:
                blobs = [r.blob for r in m.Snapshot(rpc_pb2.SnapshotRequest(), timeout=60)]
                assert len(blobs) >= 2 and len(blobs[-1]) == 32
            except Exception as exc:  # collected, to report how many failed
                failures.append(f"{i}: {exc}")
        assert failures == []
    finally:
        s.stop()


def _export_children(db_path: str) -> list[int]:
    pids = []
    for pid in os.listdir("/proc"):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"export-stream" in cmd and db_path.encode() in cmd:
            pids.append(int(pid))
    return pids


@pytest.mark.parametrize("when", ["before-first-blob", "mid-stream"])
def test_a_cancelled_snapshot_leaves_no_child_behind(tmp_path: Path, when: str) -> None:
    """Mid-stream, the child is blocked writing into a pipe nobody reads any
    more: it must still end (its exit used to hang flushing that pipe)."""
    from petcd.testing.harness import wait_for

    s = petcd_server(tmp_path, extra=["--unsafe-no-fsync"]).start()
    try:
        kv = s.kv()
        for lo in range(0, 30_000, 100):  # big enough that the export is still running when cancelled
            ops = [rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=b"c/%05d" % i, value=os.urandom(300)))
                   for i in range(lo, lo + 100)]
            kv.Txn(rpc_pb2.TxnRequest(success=ops), timeout=30)
        db_path = str(s.data_dir / "member" / "snap" / "db")
        call = s.maintenance().Snapshot(rpc_pb2.SnapshotRequest(), timeout=120)
        if when == "mid-stream":
            next(call)
            time.sleep(0.5)  # the child fills the pipe and blocks on it
        else:
            wait_for(lambda: _export_children(db_path), 30, "the export child to start", interval=0.01)
        call.cancel()
        wait_for(lambda: not _export_children(db_path), 30, "the export child to end")
        blobs = [r.blob for r in s.maintenance().Snapshot(rpc_pb2.SnapshotRequest(), timeout=120)]
        assert len(blobs[-1]) == 32  # and the next one works
    finally:
        s.stop()
