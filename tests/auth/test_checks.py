"""What each request needs (petcd/auth/checks.py), on a real store; the
expected outcomes were recorded against etcd 3.4.23."""

from __future__ import annotations

import pytest

from petcd.auth import checks
from petcd.auth import errors as E
from petcd.auth.tokens import AuthInfo
from petcd.proto import auth_pb2
from petcd.proto import rpc_pb2 as R
from tests.auth.conftest import Env

P = auth_pb2.Permission


@pytest.fixture
def w(env: Env) -> AuthInfo:
    """User w: readwrite on prefix w/, read on prefix r/."""
    root = env.bootstrap()
    env.apply("auth_role_add", R.AuthRoleAddRequest(name="rw"), root)
    env.apply("auth_role_grant_permission", R.AuthRoleGrantPermissionRequest(
        name="rw", perm=P(permType=P.READWRITE, key=b"w/", range_end=b"w0")), root)
    env.apply("auth_role_grant_permission", R.AuthRoleGrantPermissionRequest(
        name="rw", perm=P(permType=P.READ, key=b"r/", range_end=b"r0")), root)
    env.apply("auth_user_add", R.AuthUserAddRequest(name="w", password="pw"), root)
    env.apply("auth_user_grant_role", R.AuthUserGrantRoleRequest(user="w", role="rw"), root)
    return env.login("w", "pw")


def put_op(key: bytes, **kw: object) -> R.RequestOp:
    return R.RequestOp(request_put=R.PutRequest(key=key, **kw))  # type: ignore[arg-type]


def test_put_and_its_lease(env: Env, w: AuthInfo) -> None:
    s = env.store
    leases = {7: [b"x"], 8: [b"w/a"]}

    def lease_keys(lease: int) -> list[bytes]:
        return leases.get(lease, [])

    checks.check_put(s, w, R.PutRequest(key=b"w/a"), lease_keys)
    with pytest.raises(E.ErrPermissionDenied):
        checks.check_put(s, w, R.PutRequest(key=b"r/a"), lease_keys)
    # a lease that holds a key w may not write
    with pytest.raises(E.ErrPermissionDenied):
        checks.check_put(s, w, R.PutRequest(key=b"w/b", lease=7), lease_keys)
    checks.check_put(s, w, R.PutRequest(key=b"w/b", lease=8), lease_keys)
    checks.check_put(s, w, R.PutRequest(key=b"w/b", lease=99), lease_keys)  # unknown: apply says not found
    checks.check_put(s, w, R.PutRequest(key=b"w/b", prev_kv=True), lease_keys)
    with pytest.raises(E.ErrPermissionDenied):
        checks.check_lease_revoke(s, w, 7, lease_keys)
    checks.check_lease_revoke(s, w, 8, lease_keys)
    with pytest.raises(E.ErrUserEmpty):
        checks.check_lease_revoke(s, None, 7, lease_keys)


def test_delete_range_with_prev_kv_needs_read(env: Env, w: AuthInfo) -> None:
    s = env.store
    env.apply("auth_role_add", R.AuthRoleAddRequest(name="wo"), AuthInfo("root", s.revision))
    env.apply("auth_role_grant_permission", R.AuthRoleGrantPermissionRequest(
        name="wo", perm=P(permType=P.WRITE, key=b"o/", range_end=b"o0")), AuthInfo("root", s.revision))
    env.apply("auth_user_grant_role", R.AuthUserGrantRoleRequest(user="w", role="wo"), AuthInfo("root", s.revision))
    w = AuthInfo("w", s.revision)
    checks.check_delete_range(s, w, R.DeleteRangeRequest(key=b"o/", range_end=b"o0"))
    with pytest.raises(E.ErrPermissionDenied):
        checks.check_delete_range(s, w, R.DeleteRangeRequest(key=b"o/", range_end=b"o0", prev_kv=True))
    with pytest.raises(E.ErrPermissionDenied):
        checks.check_delete_range(s, w, R.DeleteRangeRequest(key=b"r/a"))


def test_txn_checks_compares_and_both_branches(env: Env, w: AuthInfo) -> None:
    s = env.store
    ok = R.TxnRequest(compare=[R.Compare(key=b"r/a", target=R.Compare.VERSION)],
                      success=[put_op(b"w/a")], failure=[R.RequestOp(request_range=R.RangeRequest(key=b"r/b"))])
    checks.check_txn(s, w, ok)
    for bad in [
        R.TxnRequest(compare=[R.Compare(key=b"x", target=R.Compare.VERSION)], success=[put_op(b"w/a")]),
        R.TxnRequest(success=[put_op(b"w/a")], failure=[put_op(b"x")]),
        R.TxnRequest(success=[R.RequestOp(request_range=R.RangeRequest(key=b"x"))]),
        R.TxnRequest(success=[R.RequestOp(request_delete_range=R.DeleteRangeRequest(key=b"r/a"))]),
        # petcd checks nested txns (etcd 3.4 does not: see checks.py)
        R.TxnRequest(success=[R.RequestOp(request_txn=R.TxnRequest(success=[put_op(b"x")]))]),
    ]:
        with pytest.raises(E.ErrPermissionDenied):
            checks.check_txn(s, w, bad)
    # inside a txn a put needs write only (prev_kv is not checked there, as in etcd)
    env.apply("auth_role_add", R.AuthRoleAddRequest(name="wo"), AuthInfo("root", s.revision))
    env.apply("auth_role_grant_permission", R.AuthRoleGrantPermissionRequest(
        name="wo", perm=P(permType=P.WRITE, key=b"o")), AuthInfo("root", s.revision))
    env.apply("auth_user_grant_role", R.AuthUserGrantRoleRequest(user="w", role="wo"), AuthInfo("root", s.revision))
    checks.check_txn(s, AuthInfo("w", s.revision), R.TxnRequest(success=[put_op(b"o", prev_kv=True)]))
    with pytest.raises(E.ErrPermissionDenied):
        checks.check_put(s, AuthInfo("w", s.revision), R.PutRequest(key=b"o", prev_kv=True), lambda _: [])


def test_watch_and_admin(env: Env, w: AuthInfo) -> None:
    s = env.store
    checks.check_watch(s, w, R.WatchCreateRequest(key=b"w/", range_end=b"w0"))
    with pytest.raises(E.ErrPermissionDenied):
        checks.check_watch(s, w, R.WatchCreateRequest(key=b"x"))
    with pytest.raises(E.ErrUserEmpty):
        checks.check_watch(s, None, R.WatchCreateRequest(key=b"x"))
    with pytest.raises(E.ErrPermissionDenied):
        checks.check_admin(s, w)
    with pytest.raises(E.ErrUserEmpty):
        checks.check_admin(s, None)
    checks.check_admin(s, AuthInfo("root", 0))  # admin checks ignore the revision


def test_everything_passes_while_auth_is_off(env: Env) -> None:
    s = env.store
    checks.check_txn(s, None, R.TxnRequest(success=[put_op(b"x")]))
    checks.check_put(s, None, R.PutRequest(key=b"x", lease=1, prev_kv=True), lambda _: [b"y"])
    checks.check_admin(s, None)
    checks.check_watch(s, None, R.WatchCreateRequest(key=b"x"))
