"""Users, roles, permissions and the enabled flag travel in a snapshot:
`etcdctl snapshot save` (root only, as in etcd), `petcd snapshot restore`,
and a member started from the restored data dir enforces the same auth."""

from __future__ import annotations

from pathlib import Path

from petcd.testing.harness import etcdctl, petcd_server
from tests.restore import restored_server

ROOT = "--user=root:rootpw"


def test_auth_survives_snapshot_restore(tmp_path: Path) -> None:
    src = petcd_server(tmp_path, name="src", extra=["--bcrypt-cost", "4"]).start()
    db = tmp_path / "backup.db"
    try:
        for args in (["user", "add", "root:rootpw"], ["user", "add", "alice:apw"], ["role", "add", "ra"],
                     ["role", "grant-permission", "ra", "--prefix=true", "readwrite", "a/"],
                     ["user", "grant-role", "alice", "ra"], ["auth", "enable"]):
            etcdctl(src.endpoint, *args)
        etcdctl(src.endpoint, "--user=alice:apw", "put", "a/1", "v")
        # Maintenance.Snapshot needs the root role (etcd: UNKNOWN "auth: permission denied")
        cp = etcdctl(src.endpoint, "--user=alice:apw", "snapshot", "save", str(tmp_path / "no.db"), check=False)
        assert cp.returncode != 0 and "auth: permission denied" in cp.stderr
        etcdctl(src.endpoint, ROOT, "snapshot", "save", str(db))
    finally:
        src.stop()

    dst = restored_server("petcd", tmp_path, db, extra=["--bcrypt-cost", "4"])
    dst.start()
    try:
        assert etcdctl(dst.endpoint, "--user=alice:apw", "get", "a/1", "--print-value-only").stdout == "v\n"
        denied = etcdctl(dst.endpoint, "--user=alice:apw", "put", "b", "v", check=False)
        assert denied.returncode != 0 and "Error: etcdserver: permission denied" in denied.stderr
        anon = etcdctl(dst.endpoint, "get", "a/1", check=False)
        assert "Error: etcdserver: user name is empty" in anon.stderr
        assert etcdctl(dst.endpoint, ROOT, "user", "list").stdout == "alice\nroot\n"
        assert "[a/, a0) (prefix a/)" in etcdctl(dst.endpoint, ROOT, "role", "get", "ra").stdout
    finally:
        dst.stop()
