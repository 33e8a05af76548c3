"""`petcd migrate --data-dir D` on a data dir real etcd left: a backup copy
identical to the original, then petcd started on D serves etcd's keys,
revision, leases and HashKV under the same member and cluster ids."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from petcd.proto import rpc_pb2, rpc_pb2_grpc
from petcd.testing.harness import Server, etcd_server, etcdctl, petcd_server

from .test_etcd_data_dir import _tree

pytestmark = pytest.mark.timeout(300)


def _state(s: Server) -> tuple[object, ...]:
    """What must survive the migration: keys, revision, cluster id, leases,
    HashKV and the member ids."""
    kv = s.kv()
    got = kv.Range(rpc_pb2.RangeRequest(key=b"\0", range_end=b"\0"), timeout=60)
    lease = rpc_pb2_grpc.LeaseStub(s.channel())
    leases = sorted(ll.ID for ll in lease.LeaseLeases(rpc_pb2.LeaseLeasesRequest(), timeout=30).leases)
    h = s.maintenance().HashKV(rpc_pb2.HashKVRequest(revision=got.header.revision), timeout=60)
    members = rpc_pb2_grpc.ClusterStub(s.channel()).MemberList(rpc_pb2.MemberListRequest(), timeout=30)
    return (list(got.kvs), got.header.revision, got.header.cluster_id, leases, h.hash, h.compact_revision,
            sorted(m.ID for m in members.members))


def test_migrate_an_etcd_data_dir_in_place(tmp_path: Path) -> None:
    src = etcd_server(tmp_path, extra=["--snapshot-count", "50"]).start()
    try:
        kv = src.kv()
        for i in range(300):
            kv.Put(rpc_pb2.PutRequest(key=f"k/{i % 120:03d}".encode(), value=b"v%d" % i), timeout=30)
        kv.DeleteRange(rpc_pb2.DeleteRangeRequest(key=b"k/010", range_end=b"k/020"), timeout=30)
        kv.Compact(rpc_pb2.CompactionRequest(revision=200, physical=True), timeout=30)
        lease_id = int(etcdctl(src.endpoint, "lease", "grant", "3600").stdout.split()[1], 16)
        kv.Put(rpc_pb2.PutRequest(key=b"leased", value=b"l", lease=lease_id), timeout=30)
        before = _state(src)
    finally:
        src.stop()
    data_dir = src.data_dir
    original = _tree(data_dir)

    cp = subprocess.run([sys.executable, "-m", "petcd", "migrate", "--data-dir", str(data_dir)],
                        capture_output=True, text=True, timeout=120)
    assert cp.returncode == 0, cp.stderr
    assert "migrated" in cp.stdout
    backup = Path(str(data_dir) + ".etcd-backup")
    assert {k: v[3] for k, v in _tree(backup).items()} == {k: v[3] for k, v in original.items()}

    # migrating twice is refused: it is petcd's dir now (and the backup exists)
    again = subprocess.run([sys.executable, "-m", "petcd", "migrate", "--data-dir", str(data_dir)],
                           capture_output=True, text=True, timeout=120)
    assert again.returncode == 1 and "Error:" in again.stderr

    dst = petcd_server(tmp_path, name="default", data_dir=data_dir, extra=["--unsafe-no-fsync"]).start()
    try:
        after = _state(dst)
        assert after == before
        etcdctl(dst.endpoint, "put", "after", "migration")  # and it takes writes
    finally:
        dst.stop()


def test_migrate_refuses_a_running_etcd(tmp_path: Path) -> None:
    src = etcd_server(tmp_path).start()
    try:
        etcdctl(src.endpoint, "put", "k", "v")
        before = _tree(src.data_dir)
        cp = subprocess.run([sys.executable, "-m", "petcd", "migrate", "--data-dir", str(src.data_dir)],
                            capture_output=True, text=True, timeout=120)
        assert cp.returncode == 1
        assert "etcd is still running" in cp.stderr
        assert not Path(str(src.data_dir) + ".etcd-backup").exists()
        assert {k: v[3] for k, v in _tree(src.data_dir).items()} == {k: v[3] for k, v in before.items()}
    finally:
        src.stop()
