"""`petcd snapshot status` and `petcd snapshot restore` on real snapshot
files: a backend db copy followed by its SHA-256, as etcdctl saves it."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from petcd.cli.snapshot import (
    SnapshotError,
    SnapshotStatus,
    format_status,
    humanize_bytes,
    restore,
    status,
)
from petcd.proto import kv_pb2
from petcd.server import ids
from petcd.server.membership import Member
from petcd.storage.backend import Backend
from petcd.storage.etcd_format import export_live
from petcd.testing.harness import require_binary

from .conftest import REPO, PetcdProcess, etcdctl, need_server_and_etcdctl, run_petcd


def rev_key(main: int, sub: int = 0) -> bytes:
    return struct.pack(">Q", main) + b"_" + struct.pack(">Q", sub)


def make_db(path: Path, n_keys: int = 20) -> Backend:
    """A backend as a running member leaves it: revisions 2..n+1 in the key
    bucket, an old member and a removed member, an applied index."""
    be = Backend(str(path), unsafe_no_fsync=True)
    for i in range(n_keys):
        kv = kv_pb2.KeyValue(key=f"k{i:03d}".encode(), value=b"v" * 100, create_revision=i + 2,
                             mod_revision=i + 2, version=1)
        be.put("key", rev_key(i + 2), kv.SerializeToString())
    be.put("members", b"1234", Member(0x1234, "old", ["http://old:2380"]).to_json())
    be.put("members_removed", b"99", b"removed")
    be.set_consistent_index(1000, 5)
    be.commit()
    return be


def save_snapshot(be: Backend, dest: Path, *, trailer: bool = True) -> bytes:
    """What `etcdctl snapshot save` writes: the streamed db, then its sha256."""
    snap = be.snapshot()
    try:
        chunks = []
        while chunk := snap.read(1 << 16):
            chunks.append(chunk)
    finally:
        snap.close()
    db = b"".join(chunks)
    dest.write_bytes(db + (hashlib.sha256(db).digest() if trailer else b""))
    return db


def etcd_hash_of_export(db_path: str, tmp: Path) -> int:
    """The hash real etcdctl reports for the bbolt file petcd exports from
    the (closed) backend at db_path."""
    with open(tmp / "export.bbolt", "w+b") as out:
        export_live(db_path, out.fileno())
    cp = subprocess.run([require_binary("etcdctl"), "snapshot", "status", str(tmp / "export.bbolt"), "-w", "json"],
                        capture_output=True, text=True, timeout=60, env=dict(os.environ, ETCDCTL_API="3"))
    assert cp.returncode == 0, cp.stderr
    return int(json.loads(cp.stdout)["hash"])


@pytest.fixture
def snapshot_file(tmp_path: Path) -> tuple[Path, bytes, int]:
    """A petcd (LMDB) db file with its sha256 trailer, and the hash etcd
    gives the same data in its own format."""
    be = make_db(tmp_path / "src" / "db")
    try:
        db = save_snapshot(be, tmp_path / "snap.db")
    finally:
        be.close()
    return tmp_path / "snap.db", db, etcd_hash_of_export(be.path, tmp_path)


# ---- status -----------------------------------------------------------------------


def test_status_reports_hash_revision_keys_and_size(snapshot_file: tuple[Path, bytes, int]) -> None:
    path, db, h = snapshot_file
    before = path.read_bytes()
    st = status(str(path))
    # 20 revisions + 1 member + 1 removed member + the consistent index (no
    # term: etcd 3.4 keeps none) + the cluster version: the pairs of the
    # bbolt file petcd exports
    assert st == SnapshotStatus(hash=h, revision=21, total_key=24, total_size=len(db))
    assert path.read_bytes() == before


def test_status_output_formats() -> None:
    st = SnapshotStatus(hash=0xFE01CF57, revision=10, total_key=7, total_size=2105344)
    assert format_status(st, "simple") == "fe01cf57, 10, 7, 2.1 MB"
    assert json.loads(format_status(st, "json")) == {"hash": 0xFE01CF57, "revision": 10, "totalKey": 7,
                                                     "totalSize": 2105344}
    assert format_status(st, "table") == (
        "+----------+----------+------------+------------+\n"
        "|   HASH   | REVISION | TOTAL KEYS | TOTAL SIZE |\n"
        "+----------+----------+------------+------------+\n"
        "| fe01cf57 |       10 |          7 | 2.1 MB     |\n"
        "+----------+----------+------------+------------+"
    )


def test_humanize_bytes_as_etcdctl() -> None:
    assert [humanize_bytes(n) for n in (0, 9, 10, 999, 1000, 20480, 2105344, 3 * 10**9)] == [
        "0 B", "9 B", "10 B", "999 B", "1.0 kB", "20 kB", "2.1 MB", "3.0 GB"]


def test_status_command_json(snapshot_file: tuple[Path, bytes, int]) -> None:
    path, db, h = snapshot_file
    r = subprocess.run([sys.executable, "-m", "petcd", "snapshot", "status", str(path), "-w", "json"],
                       capture_output=True, text=True, timeout=60, cwd=REPO)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {"hash": h, "revision": 21, "totalKey": 24, "totalSize": len(db)}


# ---- restore ----------------------------------------------------------------------

CLUSTER = "a=http://10.0.0.1:2380,b=http://10.0.0.2:2380,b=http://10.0.0.22:2380,c=http://10.0.0.3:2380"
B_URLS = ["http://10.0.0.22:2380", "http://10.0.0.2:2380"]


def test_restore_builds_a_member_data_dir(snapshot_file: tuple[Path, bytes, int], tmp_path: Path) -> None:
    from petcd.server.raft_storage import RaftStorage

    path, _, _ = snapshot_file
    data_dir = tmp_path / "b.petcd"
    res = restore(str(path), str(data_dir), name="b", initial_cluster=CLUSTER, initial_cluster_token="tok",
                  initial_advertise_peer_urls=B_URLS)
    want = {
        ids.member_id(["http://10.0.0.1:2380"], "tok"): ("a", ["http://10.0.0.1:2380"]),
        ids.member_id(B_URLS, "tok"): ("b", sorted(B_URLS)),
        ids.member_id(["http://10.0.0.3:2380"], "tok"): ("c", ["http://10.0.0.3:2380"]),
    }
    assert res.member_id == ids.member_id(B_URLS, "tok")
    assert res.cluster_id == ids.cluster_id(list(want))
    assert res.index == 3

    be = Backend(str(data_dir / "member" / "snap" / "db"), unsafe_no_fsync=True)
    try:
        members = {Member.from_json(v).id: Member.from_json(v) for _, v in be.items("members")}
        assert {i: (m.name, m.peer_urls) for i, m in members.items()} == want
        assert all(k == f"{i:x}".encode() for (k, _), i in zip(be.items("members"), sorted(members), strict=True))
        assert list(be.items("members_removed")) == []
        assert be.consistent_index() == (3, 1)
        assert len(list(be.items("key"))) == 20  # the data came along
    finally:
        be.close()

    storage, rec = RaftStorage.open(str(data_dir / "member" / "wal"), str(data_dir / "member" / "snap"))
    try:
        assert (rec.identity.member_id, rec.identity.cluster_id) == (res.member_id, res.cluster_id)
        assert (rec.hard_state.term, rec.hard_state.commit) == (1, 3)
        assert rec.snapshot is not None
        md = rec.snapshot.metadata
        assert (md.index, md.term, list(md.conf_state.voters)) == (3, 1, sorted(want))
    finally:
        storage.close()


def test_restore_refuses_a_corrupt_snapshot(snapshot_file: tuple[Path, bytes, int], tmp_path: Path) -> None:
    path, db, _ = snapshot_file
    raw = bytearray(path.read_bytes())
    raw[len(db) // 2] ^= 0x01
    path.write_bytes(bytes(raw))
    with pytest.raises(SnapshotError, match="snapshot file integrity check failed: expected sha256"):
        restore(str(path), str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def test_restore_refuses_a_data_dir_in_use(snapshot_file: tuple[Path, bytes, int], tmp_path: Path) -> None:
    path, _, _ = snapshot_file
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "something").write_text("x")
    with pytest.raises(SnapshotError) as e:
        restore(str(path), str(tmp_path / "used"))
    assert str(e.value) == f'data-dir "{tmp_path / "used"}" exists'
    assert os.listdir(tmp_path / "used") == ["something"]


def test_restore_without_trailer_needs_skip_hash_check(tmp_path: Path) -> None:
    be = make_db(tmp_path / "src" / "db")
    try:
        save_snapshot(be, tmp_path / "copied.db", trailer=False)
    finally:
        be.close()
    with pytest.raises(SnapshotError, match="snapshot missing hash but --skip-hash-check=false"):
        restore(str(tmp_path / "copied.db"), str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()
    r = subprocess.run([sys.executable, "-m", "petcd", "snapshot", "restore", str(tmp_path / "copied.db"),
                        "--skip-hash-check", "--data-dir", str(tmp_path / "out")],
                       capture_output=True, text=True, timeout=60, cwd=REPO)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "out" / "member" / "snap" / "db").is_file()
    assert (tmp_path / "out" / "member" / "wal").is_dir()


def test_restore_checks_the_cluster_flags(snapshot_file: tuple[Path, bytes, int], tmp_path: Path) -> None:
    path, _, _ = snapshot_file
    with pytest.raises(SnapshotError, match="couldn't find local name 'x'"):
        restore(str(path), str(tmp_path / "out"), name="x", initial_cluster="y=http://localhost:2380")
    assert not (tmp_path / "out").exists()


def test_restore_command_errors_exit_1(tmp_path: Path) -> None:
    r = subprocess.run([sys.executable, "-m", "petcd", "snapshot", "restore", str(tmp_path / "missing.db"),
                        "--data-dir", str(tmp_path / "out")],
                       capture_output=True, text=True, timeout=60, cwd=REPO)
    assert r.returncode == 1
    assert "cannot open snapshot file" in r.stderr


def test_etcdctl_snapshot_save_then_restore_then_serve(tmp_path: Path, processes: list[PetcdProcess]) -> None:
    """The round trip users make: etcdctl saves a snapshot from a running
    member, `petcd snapshot restore` builds a new data dir, and a member
    started on it serves the same keys under the new cluster's ids."""
    need_server_and_etcdctl()
    a = PetcdProcess(tmp_path, "a", tmp_path / "a.petcd", "--unsafe-no-fsync")
    processes.append(a)
    a.wait_ready()
    for i in range(5):
        r = etcdctl(a.client, "put", f"key{i}", f"value{i}")
        assert r.returncode == 0, r.stderr
    saved = etcdctl(a.client, "snapshot", "save", str(tmp_path / "backup.db"))
    assert saved.returncode == 0, saved.stderr + saved.stdout
    assert a.stop() == 0, a.log()
    st = json.loads(run_petcd("snapshot", "status", str(tmp_path / "backup.db"), "-w", "json").stdout)
    assert st["revision"] == 6

    r = run_petcd("snapshot", "restore", str(tmp_path / "backup.db"), "--data-dir", str(tmp_path / "r.petcd"),
                  "--name", "r", "--initial-cluster", "r=http://127.0.0.1:1", "--initial-cluster-token", "new",
                  "--initial-advertise-peer-urls", "http://127.0.0.1:1")
    assert r.returncode == 0, r.stderr
    b = PetcdProcess(tmp_path, "r", tmp_path / "r.petcd", "--unsafe-no-fsync",
                     "--initial-advertise-peer-urls", "http://127.0.0.1:1", "--initial-cluster", "r=http://127.0.0.1:1")
    processes.append(b)
    b.wait_ready()
    g = etcdctl(b.client, "get", "key", "--prefix", "-w", "json")
    assert g.returncode == 0, g.stderr
    doc = json.loads(g.stdout)
    assert [base64.b64decode(kv["value"]) for kv in doc["kvs"]] == [f"value{i}".encode() for i in range(5)]
    assert doc["header"]["revision"] == 6
    rid = ids.member_id(["http://127.0.0.1:1"], "new")
    assert (doc["header"]["member_id"], doc["header"]["cluster_id"]) == (rid, ids.cluster_id([rid]))
    w = etcdctl(b.client, "put", "after", "restore")
    assert w.returncode == 0, w.stderr + b.log()
    assert b.stop() == 0, b.log()


# ---- bbolt (etcd format) snapshots: refusals say which check failed ------------------


@pytest.fixture
def bbolt_snapshot(tmp_path: Path) -> Path:
    """The snapshot etcdctl saves from petcd: the bbolt export and its sha256."""
    make_db(tmp_path / "src" / "db").close()
    with open(tmp_path / "export.bbolt", "w+b") as out:
        export_live(str(tmp_path / "src" / "db"), out.fileno())
    body = (tmp_path / "export.bbolt").read_bytes()
    (tmp_path / "bbolt.snap").write_bytes(body + hashlib.sha256(body).digest())
    return tmp_path / "bbolt.snap"


def test_status_and_restore_of_a_bbolt_snapshot(bbolt_snapshot: Path, tmp_path: Path) -> None:
    st = status(str(bbolt_snapshot))
    assert (st.revision, st.total_key) == (21, 24)
    restore(str(bbolt_snapshot), str(tmp_path / "out"))
    be = Backend(str(tmp_path / "out" / "member" / "snap" / "db"))
    try:
        assert len(list(be.items("key"))) == 20
        assert be.consistent_index() == (1, 1)  # the new log's start, as for any restore
    finally:
        be.close()


def test_bbolt_snapshot_with_a_bad_sha256_is_refused(bbolt_snapshot: Path, tmp_path: Path) -> None:
    raw = bytearray(bbolt_snapshot.read_bytes())
    raw[2 * 4096 + 4000] ^= 0x01  # late in the first data page: bbolt's own checks cannot see it
    bbolt_snapshot.write_bytes(bytes(raw))
    with pytest.raises(SnapshotError, match="integrity check failed: expected sha256"):
        restore(str(bbolt_snapshot), str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def test_truncated_bbolt_snapshot_is_refused_as_truncated(bbolt_snapshot: Path, tmp_path: Path) -> None:
    raw = bbolt_snapshot.read_bytes()
    bbolt_snapshot.write_bytes(raw[: len(raw) // 2 + 1000])
    for call in (lambda: status(str(bbolt_snapshot)), lambda: restore(str(bbolt_snapshot), str(tmp_path / "out"))):
        with pytest.raises(SnapshotError, match="truncated"):
            call()
    assert not (tmp_path / "out").exists()


def test_bbolt_snapshot_with_bad_meta_checksums_is_refused(bbolt_snapshot: Path, tmp_path: Path) -> None:
    raw = bytearray(bbolt_snapshot.read_bytes())
    for page in (0, 1):
        raw[page * 4096 + 16 + 20] ^= 0xFF  # the root page id in both meta pages
    bbolt_snapshot.write_bytes(bytes(raw))
    with pytest.raises(SnapshotError, match="checksum mismatch"):
        restore(str(bbolt_snapshot), str(tmp_path / "out"), skip_hash_check=True)


def test_truncated_lmdb_file_is_refused_as_truncated(snapshot_file: tuple[Path, bytes, int]) -> None:
    path, db, _ = snapshot_file
    path.write_bytes(db[: len(db) - 8192])  # no trailer, two pages short
    with pytest.raises(SnapshotError, match="truncated"):
        status(str(path))


def test_a_file_of_neither_format_is_refused(tmp_path: Path) -> None:
    p = tmp_path / "junk.db"
    p.write_bytes(os.urandom(4096 * 3) + b"\0" * 32)
    r = subprocess.run([sys.executable, "-m", "petcd", "snapshot", "status", str(p)],
                       capture_output=True, text=True, timeout=60, cwd=REPO)
    assert r.returncode == 1
    assert "neither an etcd (bbolt) nor a petcd (LMDB) db file" in r.stderr
