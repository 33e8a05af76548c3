"""The auth store against real etcd 3.4: one seeded sequence of user, role,
permission, enable/disable and key operations under several users, applied
to etcd over gRPC and to petcd's AuthStore directly; every result and error
(code and text) must be the same.

petcd's side runs what petcd's server runs for each request: the password
check and Authenticate for a login, ``apply`` with the caller's AuthInfo for
an auth request, and the permission check for a key request (its success
stands for the request's)."""

from __future__ import annotations

import os
import random
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from petcd.auth.errors import AuthError
from petcd.auth.tokens import AuthInfo
from petcd.proto import auth_pb2, rpc_pb2, rpc_pb2_grpc
from petcd.testing.harness import Server, etcd_server
from tests.auth.conftest import Env

R = rpc_pb2
P = auth_pb2.Permission
USERS = ["root", "u1", "u2", "np"]
ROLES = ["root", "r1", "r2"]
KEYS = [b"a", b"a/", b"a/x", b"b", b"b/y", b"c", b"zz"]
Outcome = tuple[str, Any]


@pytest.fixture(scope="module")
def etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    s = etcd_server(tmp_path_factory.mktemp("etcd"), ["--bcrypt-cost", "4"]).start()
    yield s
    s.stop()


def _perm(rng: random.Random) -> auth_pb2.Permission:
    key = rng.choice(KEYS)
    shape = rng.choice(["key", "range", "prefix", "from"])
    end = {"key": b"", "range": rng.choice(KEYS), "prefix": key[:-1] + bytes([key[-1] + 1]), "from": b"\x00"}[shape]
    return P(permType=rng.choice([P.READ, P.WRITE, P.READWRITE]), key=key, range_end=end)


def _request(rng: random.Random) -> tuple[str, Any]:
    u, r = rng.choice(USERS), rng.choice(ROLES)
    choices: list[tuple[str, Callable[[], Any]]] = [
        ("auth_user_add", lambda: R.AuthUserAddRequest(
            name=u, password=f"pw-{u}", options=auth_pb2.UserAddOptions(no_password=(u == "np")))),
        ("auth_user_delete", lambda: R.AuthUserDeleteRequest(name=u)),
        ("auth_user_get", lambda: R.AuthUserGetRequest(name=u)),
        ("auth_user_list", lambda: R.AuthUserListRequest()),
        ("auth_user_grant_role", lambda: R.AuthUserGrantRoleRequest(user=u, role=r)),
        ("auth_user_grant_role", lambda: R.AuthUserGrantRoleRequest(user=u, role=r)),
        ("auth_user_revoke_role", lambda: R.AuthUserRevokeRoleRequest(name=u, role=r)),
        ("auth_user_change_password", lambda: R.AuthUserChangePasswordRequest(name=u, password=f"pw-{u}")),
        ("auth_role_add", lambda: R.AuthRoleAddRequest(name=r)),
        ("auth_role_delete", lambda: R.AuthRoleDeleteRequest(role=r)),
        ("auth_role_get", lambda: R.AuthRoleGetRequest(role=r)),
        ("auth_role_list", lambda: R.AuthRoleListRequest()),
        ("auth_role_grant_permission", lambda: R.AuthRoleGrantPermissionRequest(name=r, perm=_perm(rng))),
        ("auth_role_grant_permission", lambda: R.AuthRoleGrantPermissionRequest(name=r, perm=_perm(rng))),
        ("auth_role_revoke_permission", lambda: _revoke(rng, r)),
        ("auth_enable", lambda: R.AuthEnableRequest()),
        ("auth_disable", lambda: R.AuthDisableRequest()),
        ("put", lambda: R.PutRequest(key=rng.choice(KEYS), value=b"v")),
        ("put", lambda: R.PutRequest(key=rng.choice(KEYS), value=b"v")),
        ("range", lambda: R.RangeRequest(key=rng.choice(KEYS), range_end=rng.choice([b"", b"\x00", *KEYS]))),
        ("range", lambda: R.RangeRequest(key=rng.choice(KEYS), range_end=rng.choice([b"", b"\x00", *KEYS]))),
        ("delete_range", lambda: R.DeleteRangeRequest(key=rng.choice(KEYS), range_end=rng.choice([b"", *KEYS]))),
    ]
    # weights: key requests and grants most, disabling auth rarely
    weights = [3 if f in ("put", "range", "delete_range", "auth_role_grant_permission", "auth_user_grant_role")
               else 0.3 if f == "auth_disable" else 1 for f, _ in choices]
    field, make = rng.choices(choices, weights)[0]
    return field, make()


def _revoke(rng: random.Random, role: str) -> rpc_pb2.AuthRoleRevokePermissionRequest:
    p = _perm(rng)
    return R.AuthRoleRevokePermissionRequest(role=role, key=p.key, range_end=p.range_end)


class EtcdSide:
    def __init__(self, server: Server) -> None:
        ch = server.channel()
        self.auth = rpc_pb2_grpc.AuthStub(ch)
        self.kv = rpc_pb2_grpc.KVStub(ch)

    def login(self, user: str | None) -> tuple[Outcome | None, list[tuple[str, str]] | None]:
        if user is None:
            return None, None
        try:
            token = self.auth.Authenticate(R.AuthenticateRequest(name=user, password=f"pw-{user}"), timeout=10).token
        except grpc.RpcError as exc:
            return ("error", (exc.code().name, exc.details())), None
        return None, [("token", token)]

    def run(self, field: str, req: Any, md: list[tuple[str, str]] | None) -> Outcome:
        method = {
            "auth_user_add": self.auth.UserAdd, "auth_user_delete": self.auth.UserDelete,
            "auth_user_get": self.auth.UserGet, "auth_user_list": self.auth.UserList,
            "auth_user_grant_role": self.auth.UserGrantRole, "auth_user_revoke_role": self.auth.UserRevokeRole,
            "auth_user_change_password": self.auth.UserChangePassword, "auth_role_add": self.auth.RoleAdd,
            "auth_role_delete": self.auth.RoleDelete, "auth_role_get": self.auth.RoleGet,
            "auth_role_list": self.auth.RoleList, "auth_role_grant_permission": self.auth.RoleGrantPermission,
            "auth_role_revoke_permission": self.auth.RoleRevokePermission, "auth_enable": self.auth.AuthEnable,
            "auth_disable": self.auth.AuthDisable, "put": self.kv.Put, "range": self.kv.Range,
            "delete_range": self.kv.DeleteRange,
        }[field]
        try:
            resp = method(req, metadata=md, timeout=10)
        except grpc.RpcError as exc:
            return "error", (exc.code().name, exc.details())
        return "ok", _result(field, resp)


def _result(field: str, resp: Any) -> Any:
    if field in ("auth_user_get",):
        return list(resp.roles)
    if field == "auth_role_list":
        return list(resp.roles)
    if field == "auth_user_list":
        return list(resp.users)
    if field == "auth_role_get":
        return [(p.permType, p.key, p.range_end) for p in resp.perm]
    return None


def _status(exc: AuthError) -> tuple[str, str]:
    if exc.grpc_code is None or exc.grpc_message is None:
        return "UNKNOWN", str(exc)
    return exc.grpc_code, exc.grpc_message


class PetcdSide:
    def __init__(self, env: Env) -> None:
        self.env = env

    def login(self, user: str | None) -> tuple[Outcome | None, AuthInfo | None]:
        if user is None:
            return None, None
        try:
            return None, self.env.login(user, f"pw-{user}")
        except AuthError as exc:
            return ("error", _status(exc)), None

    def run(self, field: str, req: Any, info: AuthInfo | None) -> Outcome:
        s = self.env.store
        # a token names the store's revision at the time it is looked up
        if info is not None:
            info = AuthInfo(info.username, s.revision)
        try:
            if field == "put":
                s.is_put_permitted(info, req.key)
                return "ok", None
            if field == "range":
                s.is_range_permitted(info, req.key, req.range_end)
                return "ok", None
            if field == "delete_range":
                s.is_delete_range_permitted(info, req.key, req.range_end)
                return "ok", None
            return "ok", _result(field, self.env.apply(field, req, info))
        except AuthError as exc:
            return "error", _status(exc)


# Seeds 10 and 17 give a role more than 12 permissions with shared keys,
# where Go's unstable sort decides their order (petcd/gosort.py).
SEEDS = [int(x) for x in os.environ.get("AUTH_DIFF_SEEDS", "1,2,10,17").split(",")]


@pytest.mark.parametrize("seed", SEEDS)
def test_same_outcomes_as_etcd(etcd: Server, env: Env, seed: int) -> None:
    rng = random.Random(seed)
    e, p = EtcdSide(etcd), PetcdSide(env)
    # each seed starts from the same state on both sides: auth off, nothing stored
    _reset(e)
    log: list[str] = []
    setup: list[tuple[str, Any]] = [
        *[("auth_user_add", R.AuthUserAddRequest(name=u, password=f"pw-{u}",
                                                 options=auth_pb2.UserAddOptions(no_password=(u == "np"))))
          for u in USERS],
        ("auth_user_grant_role", R.AuthUserGrantRoleRequest(user="root", role="root")),
        ("auth_role_add", R.AuthRoleAddRequest(name="r1")),
        ("auth_role_add", R.AuthRoleAddRequest(name="r2")),
        ("auth_user_grant_role", R.AuthUserGrantRoleRequest(user="u1", role="r1")),
        ("auth_user_grant_role", R.AuthUserGrantRoleRequest(user="u2", role="r2")),
        ("auth_user_grant_role", R.AuthUserGrantRoleRequest(user="np", role="r1")),
        ("auth_enable", R.AuthEnableRequest()),
    ]
    for step in range(400):
        field, req = setup[step] if step < len(setup) else _request(rng)
        actor = rng.choice([None, "root", "root", "u1", "u2", "np"]) if step >= len(setup) else "root"
        if field in ("auth_enable", "auth_disable") and rng.random() < 0.5:
            actor = "root"
        enabled = env.store.enabled
        who = actor if enabled else None  # no token can exist while auth is off
        e_login, md = e.login(who)
        p_login, info = p.login(who)
        assert e_login == p_login, f"step {step}: login {who}: etcd {e_login} petcd {p_login}\n" + "\n".join(log)
        if e_login is not None:
            log.append(f"{step}: login {who} -> {e_login}")
            continue
        got_e = e.run(field, req, md)
        got_p = p.run(field, req, info)
        line = f"{step}: {who} {field} {str(req).strip()!r} -> etcd {got_e}"
        log.append(line)
        assert got_e == got_p, f"step {step}: petcd {got_p}\n{_dump(env, who)}\n" + "\n".join(log[-40:])
    if os.environ.get("AUTH_DIFF_LOG"):
        Path(os.environ["AUTH_DIFF_LOG"]).write_text("\n".join(log))


def _dump(env: Env, user: str | None) -> str:
    u = env.store.user(user or "")
    if u is None:
        return f"user {user}: none"
    out = [f"user {user}: roles {list(u.roles)}"]
    for rn in u.roles:
        r = env.store.role(rn)
        out.append(f"  {rn}: {[(p.permType, p.key, p.range_end) for p in r.keyPermission] if r else None}")
    return "\n".join(out)


def _reset(e: EtcdSide) -> None:
    """Back to an empty auth state on etcd: disable (as root) and delete everything."""
    try:
        tok = e.auth.Authenticate(R.AuthenticateRequest(name="root", password="pw-root"), timeout=10).token
        e.auth.AuthDisable(R.AuthDisableRequest(), metadata=[("token", tok)], timeout=10)
    except grpc.RpcError:
        pass
    for u in e.auth.UserList(R.AuthUserListRequest(), timeout=10).users:
        e.auth.UserDelete(R.AuthUserDeleteRequest(name=u), timeout=10)
    for r in e.auth.RoleList(R.AuthRoleListRequest(), timeout=10).roles:
        e.auth.RoleDelete(R.AuthRoleDeleteRequest(role=r), timeout=10)


