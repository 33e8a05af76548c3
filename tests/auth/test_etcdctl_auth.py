"""`etcdctl auth`, `user` and `role`, and key commands under several users,
against real etcd 3.4 and against petcd: the same command sequence, the
same exit codes, outputs and error lines (etcdctl prints what the server
answered, so this checks the wire as etcdctl sees it)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from petcd.testing.harness import Server, etcd_server, etcdctl

# (user or None, command...): one etcdctl call each
SCRIPT: list[tuple[str | None, list[str]]] = [
    (None, ["auth", "enable"]),  # no root user
    (None, ["user", "add", "root", "--new-user-password=rootpw"]),
    (None, ["user", "grant-role", "root", "root"]),
    (None, ["role", "add", "r1"]),
    (None, ["role", "add", "r1"]),
    (None, ["role", "add", "r2"]),
    (None, ["user", "add", "alice", "--new-user-password=a"]),
    (None, ["user", "add", "bob", "--new-user-password=b"]),
    (None, ["user", "add", "nop", "--no-password"]),
    (None, ["user", "add", "alice", "--new-user-password=x"]),
    (None, ["role", "grant-permission", "r1", "readwrite", "foo"]),
    (None, ["role", "grant-permission", "r1", "--prefix=true", "readwrite", "pre/"]),
    (None, ["role", "grant-permission", "r1", "read", "k1", "k5"]),
    (None, ["role", "grant-permission", "r1", "--from-key", "write", "z"]),
    (None, ["role", "grant-permission", "r2", "read", "foo"]),
    (None, ["role", "grant-permission", "nobody", "read", "foo"]),
    (None, ["role", "get", "r1"]),
    (None, ["role", "get", "root"]),
    (None, ["user", "grant-role", "alice", "r1"]),
    (None, ["user", "grant-role", "alice", "r2"]),
    (None, ["user", "grant-role", "alice", "nope"]),
    (None, ["user", "grant-role", "bob", "r2"]),
    (None, ["user", "get", "alice"]),
    (None, ["user", "get", "alice", "--detail"]),
    (None, ["user", "list"]),
    (None, ["role", "list"]),
    (None, ["put", "foo", "0"]),
    (None, ["auth", "enable"]),
    (None, ["get", "foo"]),
    (None, ["user", "list"]),
    (None, ["auth", "enable"]),
    ("root:rootpw", ["auth", "enable"]),
    ("alice:a", ["put", "foo", "1"]),
    ("alice:a", ["get", "foo"]),
    ("alice:a", ["put", "bar", "1"]),
    ("alice:a", ["put", "pre/x", "2"]),
    ("alice:a", ["get", "pre/", "--prefix"]),
    ("alice:a", ["get", "pre", "--prefix"]),
    ("alice:a", ["get", "k1", "k4"]),
    ("alice:a", ["get", "k1", "k6"]),
    ("alice:a", ["put", "zz", "1"]),
    ("alice:a", ["get", "zz"]),
    ("alice:a", ["del", "foo"]),
    ("alice:a", ["del", "pre/", "--prefix", "--prev-kv"]),
    ("alice:a", ["user", "get", "alice"]),
    ("alice:a", ["user", "get", "bob"]),
    ("alice:a", ["role", "get", "r1"]),
    ("alice:a", ["role", "get", "r9"]),
    ("alice:a", ["user", "list"]),
    ("alice:a", ["compaction", "1"]),
    ("alice:wrong", ["get", "foo"]),
    ("nobody:x", ["get", "foo"]),
    ("nop:x", ["get", "foo"]),
    ("bob:b", ["get", "foo"]),
    ("bob:b", ["put", "foo", "2"]),
    ("bob:b", ["role", "list"]),
    ("root:rootpw", ["user", "delete", "root"]),
    ("root:rootpw", ["role", "delete", "root"]),
    ("root:rootpw", ["user", "revoke-role", "root", "root"]),
    ("root:rootpw", ["role", "revoke-permission", "r1", "foo"]),
    ("root:rootpw", ["role", "revoke-permission", "r1", "foo"]),
    ("alice:a", ["put", "foo", "3"]),
    ("root:rootpw", ["role", "revoke-permission", "r1", "pre/", "--prefix=true"]),
    ("root:rootpw", ["role", "revoke-permission", "r1", "k1", "k5"]),
    ("root:rootpw", ["role", "get", "r1"]),
    ("root:rootpw", ["user", "revoke-role", "alice", "r2"]),
    ("root:rootpw", ["user", "revoke-role", "alice", "r2"]),
    ("root:rootpw", ["role", "delete", "r1"]),
    ("root:rootpw", ["user", "get", "alice"]),
    ("root:rootpw", ["user", "delete", "bob"]),
    ("root:rootpw", ["user", "delete", "bob"]),
    ("root:rootpw", ["get", "", "--from-key", "--keys-only"]),
    ("root:rootpw", ["auth", "disable"]),
    (None, ["auth", "disable"]),
    (None, ["user", "list"]),
    (None, ["role", "list"]),
    (None, ["role", "delete", "root"]),
    (None, ["user", "delete", "root"]),
    (None, ["user", "list"]),
]


def run_script(server: Server) -> list[tuple[int, str, list[str]]]:
    out = []
    for user, cmd in SCRIPT:
        args = ([f"--user={user}"] if user else []) + cmd
        cp = etcdctl(server.endpoint, *args, check=False)
        errors = [line for line in cp.stderr.splitlines() if line.startswith("Error:")]
        out.append((cp.returncode, cp.stdout, errors))
    return out


def _server(tmp: Path) -> Server:
    """The server under test: petcd normally; AUTH_ORACLE_SELF=1 runs etcd
    against itself (checks the script and the comparison)."""
    if os.environ.get("AUTH_ORACLE_SELF") == "1":
        return etcd_server(tmp, ["--bcrypt-cost", "4"])
    from petcd.testing.harness import petcd_server

    return petcd_server(tmp, extra=["--bcrypt-cost", "4"])


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[tuple[Server, Server]]:
    (tmp_path / "e").mkdir()
    (tmp_path / "p").mkdir()
    e = etcd_server(tmp_path / "e", ["--bcrypt-cost", "4"]).start()
    try:
        p = _server(tmp_path / "p").start()
        try:
            yield e, p
        finally:
            p.stop()
    finally:
        e.stop()


def test_etcdctl_auth_commands_match_etcd(pair: tuple[Server, Server]) -> None:
    etcd, petcd = pair
    want = run_script(etcd)
    got = run_script(petcd)
    diffs = [
        f"{i}: {SCRIPT[i]}\n  etcd:  {w}\n  petcd: {g}"
        for i, (w, g) in enumerate(zip(want, got, strict=True)) if w != g
    ]
    assert not diffs, "\n".join(diffs)
