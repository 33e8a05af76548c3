"""Auth on the Lock and Election services, against real etcd: etcd runs them
through its own KV, Lease and Watch as the caller, so the caller's token (or
none) and its permissions on the lock/election keys decide, with the KV's
errors (passed on as UNKNOWN, as etcd's in-process client hands them over)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest

from petcd.proto import (
    auth_pb2,
    rpc_pb2,
    rpc_pb2_grpc,
    v3election_pb2,
    v3election_pb2_grpc,
    v3lock_pb2,
    v3lock_pb2_grpc,
)
from petcd.testing.harness import Server, etcd_server, petcd_server, require_binary

R = rpc_pb2
P = auth_pb2.Permission
E = v3election_pb2
L = v3lock_pb2

pytestmark = pytest.mark.timeout(600)


def setup(m: Server) -> dict[str, list[tuple[str, str]]]:
    """root; alice readwrite on a/; bob read-only on b/; auth on. The tokens by user ("" has none)."""
    auth = rpc_pb2_grpc.AuthStub(m.channel())
    auth.UserAdd(R.AuthUserAddRequest(name="root", password="rootpw"), timeout=20)
    auth.UserGrantRole(R.AuthUserGrantRoleRequest(user="root", role="root"), timeout=20)
    for user, role, perm in (("alice", "ra", P(permType=P.READWRITE, key=b"a/", range_end=b"a0")),
                             ("bob", "rb", P(permType=P.READ, key=b"b/", range_end=b"b0"))):
        auth.RoleAdd(R.AuthRoleAddRequest(name=role), timeout=20)
        auth.RoleGrantPermission(R.AuthRoleGrantPermissionRequest(name=role, perm=perm), timeout=20)
        auth.UserAdd(R.AuthUserAddRequest(name=user, password="pw"), timeout=20)
        auth.UserGrantRole(R.AuthUserGrantRoleRequest(user=user, role=role), timeout=20)
    auth.AuthEnable(R.AuthEnableRequest(), timeout=20)
    out: dict[str, list[tuple[str, str]]] = {"": []}
    for user, pw in (("alice", "pw"), ("bob", "pw"), ("root", "rootpw")):
        token = auth.Authenticate(R.AuthenticateRequest(name=user, password=pw), timeout=20).token
        out[user] = [("token", token)]
    return out


def outcome(call: Callable[[], object]) -> str:
    try:
        result = call()
    except grpc.RpcError as exc:
        return f"{exc.code().name}: {exc.details()}"
    if isinstance(result, E.LeaderResponse):
        return f"ok {result.kv.value!r}"
    if isinstance(result, str):
        return result
    return "ok"


def run(m: Server) -> list[str]:
    tokens = setup(m)
    ch = m.channel()
    lock, elect, lease = v3lock_pb2_grpc.LockStub(ch), v3election_pb2_grpc.ElectionStub(ch), rpc_pb2_grpc.LeaseStub(ch)
    root = tokens["root"]

    def grant() -> int:
        return int(lease.LeaseGrant(R.LeaseGrantRequest(TTL=60), metadata=root, timeout=20).ID)

    out: list[str] = []
    held: dict[str, bytes] = {}

    def do_lock(user: str, name: bytes) -> object:
        resp = lock.Lock(L.LockRequest(name=name, lease=grant()), metadata=tokens[user], timeout=20)
        held[user] = resp.key
        return resp

    for user, name in (("alice", b"a/l"), ("alice", b"x"), ("", b"a/l2"), ("bob", b"b/l"), ("root", b"x")):
        out.append(f"lock {user} {name!r}: " + outcome(lambda: do_lock(user, name)))  # noqa: B023
    for user, key in (("bob", held["alice"]), ("", held["alice"]), ("alice", held["alice"]), ("alice", held["root"])):
        out.append(f"unlock {user}: " + outcome(lambda: lock.Unlock(L.UnlockRequest(key=key),  # noqa: B023
                                                                    metadata=tokens[user], timeout=20)))  # noqa: B023

    leaders: dict[str, E.LeaderKey] = {}

    def campaign(user: str, name: bytes) -> object:
        resp = elect.Campaign(E.CampaignRequest(name=name, lease=grant(), value=b"v1"), metadata=tokens[user],
                              timeout=20)
        leaders[user] = resp.leader
        return resp

    for user, name in (("alice", b"a/e"), ("alice", b"x"), ("", b"a/e2"), ("bob", b"b/e")):
        out.append(f"campaign {user} {name!r}: " + outcome(lambda: campaign(user, name)))  # noqa: B023
    ld = leaders["alice"]
    for user in ("bob", "", "alice"):
        out.append(f"proclaim {user}: " + outcome(lambda: elect.Proclaim(  # noqa: B023
            E.ProclaimRequest(leader=ld, value=b"v2"), metadata=tokens[user], timeout=20)))  # noqa: B023
    for user, name in (("alice", b"a/e"), ("bob", b"a/e"), ("", b"a/e"), ("bob", b"b/e"), ("alice", b"x")):
        out.append(f"leader {user} {name!r}: " + outcome(lambda: elect.Leader(  # noqa: B023
            E.LeaderRequest(name=name), metadata=tokens[user], timeout=20)))  # noqa: B023
    for user, name in (("bob", b"a/e"), ("", b"a/e"), ("alice", b"a/e")):
        def observe_first() -> object:
            stream = elect.Observe(E.LeaderRequest(name=name), metadata=tokens[user], timeout=20)  # noqa: B023
            try:
                return next(stream, "ended without a message")
            finally:
                stream.cancel()
        out.append(f"observe {user} {name!r}: " + outcome(observe_first))
    for user in ("bob", "", "alice"):
        out.append(f"resign {user}: " + outcome(lambda: elect.Resign(  # noqa: B023
            E.ResignRequest(leader=ld), metadata=tokens[user], timeout=20)))  # noqa: B023
    return out


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[tuple[Server, Server]]:
    require_binary("etcd")
    (tmp_path / "e").mkdir()
    (tmp_path / "p").mkdir()
    e = etcd_server(tmp_path / "e", ["--bcrypt-cost", "4"]).start()
    try:
        p = petcd_server(tmp_path / "p", extra=["--bcrypt-cost", "4"]).start()
        try:
            yield e, p
        finally:
            p.stop()
    finally:
        e.stop()


def test_lock_and_election_under_auth_match_etcd(pair: tuple[Server, Server]) -> None:
    e, p = pair
    want = run(e)
    got = run(p)
    assert got == want, "\n".join(f"{'==' if g == w else '!='} etcd: {w}\n   petcd: {g}" for w, g in zip(want, got, strict=True))
    # the oracle's answers are what this test is about: some allowed, some denied
    assert any(": ok" in w for w in want) and any("permission denied" in w for w in want)
