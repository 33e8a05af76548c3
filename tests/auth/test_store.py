"""The auth store on a real backend: etcd 3.4's rules, errors and encoding
(the expected texts and orders were recorded against etcd 3.4.23)."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from petcd.auth import errors as E
from petcd.auth.store import AuthStore, hash_password
from petcd.auth.tokens import AuthInfo, SimpleTokenProvider
from petcd.proto import auth_pb2
from petcd.proto import rpc_pb2 as R
from petcd.storage.backend import Backend
from tests.auth.conftest import TEST_COST, Env

P = auth_pb2.Permission


def grant(env: Env, role: str, key: bytes, end: bytes = b"", typ: Any = P.READWRITE,
          info: AuthInfo | None = None) -> None:
    env.apply("auth_role_grant_permission",
              R.AuthRoleGrantPermissionRequest(name=role, perm=P(permType=typ, key=key, range_end=end)), info)


def perms(env: Env, role: str, info: AuthInfo | None = None) -> list[tuple[int, bytes, bytes]]:
    resp = env.apply("auth_role_get", R.AuthRoleGetRequest(role=role), info)
    return [(p.permType, p.key, p.range_end) for p in resp.perm]  # type: ignore[attr-defined]


def test_new_store_starts_at_revision_one_and_keeps_it(env: Env) -> None:
    assert env.store.revision == 1
    assert not env.store.enabled
    assert env.backend.get("auth", b"authRevision") == b"\x00" * 7 + b"\x01"
    assert env.reopen().revision == 1


def test_enable_needs_root_user_with_root_role(env: Env) -> None:
    with pytest.raises(E.ErrRootUserNotExist) as ei:
        env.apply("auth_enable", R.AuthEnableRequest())
    assert ei.value.grpc_message == "etcdserver: root user does not exist"
    assert ei.value.grpc_code == "FAILED_PRECONDITION"
    env.apply("auth_user_add", R.AuthUserAddRequest(name="root", password="pw"))
    with pytest.raises(E.ErrRootRoleNotExist) as ei2:
        env.apply("auth_enable", R.AuthEnableRequest())
    assert ei2.value.grpc_message == "etcdserver: root user does not have root role"
    # the root role needs no role record
    env.apply("auth_user_grant_role", R.AuthUserGrantRoleRequest(user="root", role="root"))
    assert env.store.role("root") is None
    rev = env.store.revision
    env.apply("auth_enable", R.AuthEnableRequest())
    assert env.store.enabled
    assert env.store.revision == rev  # enable does not move the revision
    assert env.backend.get("auth", b"authEnabled") == b"\x01"


def test_disable_moves_revision_and_drops_tokens(env: Env) -> None:
    root = env.bootstrap()
    rev = env.store.revision
    token_info = env.store.auth_info_from_token
    env.apply("auth_disable", R.AuthDisableRequest(), root)
    assert not env.store.enabled
    assert env.store.revision == rev + 1
    assert env.backend.get("auth", b"authEnabled") == b"\x00"
    assert len(env.store.tokens) == 0  # type: ignore[arg-type]
    with pytest.raises(E.ErrInvalidAuthToken):
        token_info("anything.1")
    # disabling again is a no-op
    env.apply("auth_disable", R.AuthDisableRequest())
    assert env.store.revision == rev + 1


def test_name_checks_and_duplicates(env: Env) -> None:
    with pytest.raises(E.ErrUserEmpty) as ei:
        env.apply("auth_user_add", R.AuthUserAddRequest(name="", password="x"))
    assert (ei.value.grpc_code, ei.value.grpc_message) == ("INVALID_ARGUMENT", "etcdserver: user name is empty")
    with pytest.raises(E.ErrRoleEmpty) as ei2:
        env.apply("auth_role_add", R.AuthRoleAddRequest(name=""))
    assert ei2.value.grpc_message == "etcdserver: role name is empty"
    env.apply("auth_user_add", R.AuthUserAddRequest(name="u", password="x"))
    with pytest.raises(E.ErrUserAlreadyExist) as ei3:
        env.apply("auth_user_add", R.AuthUserAddRequest(name="u", password="y"))
    assert ei3.value.grpc_message == "etcdserver: user name already exists"
    env.apply("auth_role_add", R.AuthRoleAddRequest(name="r"))
    with pytest.raises(E.ErrRoleAlreadyExist) as ei4:
        env.apply("auth_role_add", R.AuthRoleAddRequest(name="r"))
    assert ei4.value.grpc_message == "etcdserver: role name already exists"
    for field, req, err in [
        ("auth_user_grant_role", R.AuthUserGrantRoleRequest(user="nobody", role="r"), E.ErrUserNotFound),
        ("auth_user_grant_role", R.AuthUserGrantRoleRequest(user="u", role="nope"), E.ErrRoleNotFound),
        ("auth_user_revoke_role", R.AuthUserRevokeRoleRequest(name="u", role="r"), E.ErrRoleNotGranted),
        ("auth_user_revoke_role", R.AuthUserRevokeRoleRequest(name="x", role="r"), E.ErrUserNotFound),
        ("auth_user_delete", R.AuthUserDeleteRequest(name="x"), E.ErrUserNotFound),
        ("auth_user_get", R.AuthUserGetRequest(name="x"), E.ErrUserNotFound),
        ("auth_user_change_password", R.AuthUserChangePasswordRequest(name="x", password="p"), E.ErrUserNotFound),
        ("auth_role_get", R.AuthRoleGetRequest(role="x"), E.ErrRoleNotFound),
        ("auth_role_delete", R.AuthRoleDeleteRequest(role="x"), E.ErrRoleNotFound),
        ("auth_role_grant_permission", R.AuthRoleGrantPermissionRequest(name="x", perm=P(key=b"a")),
         E.ErrRoleNotFound),
        ("auth_role_revoke_permission", R.AuthRoleRevokePermissionRequest(role="x", key=b"a"), E.ErrRoleNotFound),
        ("auth_role_revoke_permission", R.AuthRoleRevokePermissionRequest(role="r", key=b"a"),
         E.ErrPermissionNotGranted),
        ("authenticate", None, E.ErrAuthNotEnabled),
    ]:
        rev = env.store.revision
        with pytest.raises(err):
            if req is None:
                env.store.authenticate("u", "x", 1)
            else:
                env.apply(field, req)
        assert env.store.revision == rev, field  # a failed request changes nothing
    assert E.ErrRoleNotGranted().grpc_message == "etcdserver: role is not granted to the user"
    assert E.ErrPermissionNotGranted().grpc_message == "etcdserver: permission is not granted to the role"


def test_every_change_moves_revision_once_and_regrant_is_free(env: Env) -> None:
    steps = [
        ("auth_user_add", R.AuthUserAddRequest(name="u", password="x")),
        ("auth_role_add", R.AuthRoleAddRequest(name="r")),
        ("auth_user_grant_role", R.AuthUserGrantRoleRequest(user="u", role="r")),
        ("auth_role_grant_permission", R.AuthRoleGrantPermissionRequest(name="r", perm=P(key=b"a"))),
        ("auth_role_revoke_permission", R.AuthRoleRevokePermissionRequest(role="r", key=b"a")),
        ("auth_user_change_password", R.AuthUserChangePasswordRequest(name="u", password="y")),
        ("auth_user_revoke_role", R.AuthUserRevokeRoleRequest(name="u", role="r")),
        ("auth_role_delete", R.AuthRoleDeleteRequest(role="r")),
        ("auth_user_delete", R.AuthUserDeleteRequest(name="u")),
    ]
    for field, req in steps:
        rev = env.store.revision
        env.apply(field, req)
        assert env.store.revision == rev + 1, field
    env.apply("auth_user_add", R.AuthUserAddRequest(name="u", password="x"))
    env.apply("auth_role_add", R.AuthRoleAddRequest(name="r"))
    env.apply("auth_user_grant_role", R.AuthUserGrantRoleRequest(user="u", role="r"))
    rev = env.store.revision
    env.apply("auth_user_grant_role", R.AuthUserGrantRoleRequest(user="u", role="r"))
    assert env.store.revision == rev
    # reads never move it
    env.apply("auth_user_list", R.AuthUserListRequest())
    env.apply("auth_role_get", R.AuthRoleGetRequest(role="r"))
    assert env.store.revision == rev


def test_root_is_protected_only_while_enabled(env: Env) -> None:
    root = env.bootstrap()
    for field, req in [
        ("auth_user_delete", R.AuthUserDeleteRequest(name="root")),
        ("auth_user_revoke_role", R.AuthUserRevokeRoleRequest(name="root", role="root")),
        ("auth_role_delete", R.AuthRoleDeleteRequest(role="root")),
    ]:
        with pytest.raises(E.ErrInvalidAuthMgmt) as ei:
            env.apply(field, req, root)
        assert (ei.value.grpc_code, ei.value.grpc_message) == (
            "INVALID_ARGUMENT", "etcdserver: invalid auth management")
    env.apply("auth_disable", R.AuthDisableRequest(), root)
    env.apply("auth_role_add", R.AuthRoleAddRequest(name="root"))
    env.apply("auth_role_delete", R.AuthRoleDeleteRequest(role="root"))
    assert list(env.store.user("root").roles) == []  # type: ignore[union-attr]
    env.apply("auth_user_delete", R.AuthUserDeleteRequest(name="root"))
    assert env.store.user("root") is None


def test_admin_checks_as_etcds_auth_applier(env: Env) -> None:
    root = env.bootstrap()
    env.apply("auth_user_add", R.AuthUserAddRequest(name="u1", password="p1"), root)
    env.apply("auth_role_add", R.AuthRoleAddRequest(name="r1"), root)
    env.apply("auth_role_add", R.AuthRoleAddRequest(name="r2"), root)
    env.apply("auth_user_grant_role", R.AuthUserGrantRoleRequest(user="u1", role="r1"), root)
    u1 = env.login("u1", "p1")
    # no user at all: "user name is empty", even for an enable that would be a no-op
    with pytest.raises(E.ErrUserEmpty):
        env.apply("auth_enable", R.AuthEnableRequest())
    with pytest.raises(E.ErrUserEmpty):
        env.apply("auth_user_add", R.AuthUserAddRequest(name="x", password="x"))
    for field, req in [
        ("auth_user_list", R.AuthUserListRequest()),
        ("auth_role_list", R.AuthRoleListRequest()),
        ("auth_user_add", R.AuthUserAddRequest(name="x", password="x")),
        ("auth_user_get", R.AuthUserGetRequest(name="root")),
        ("auth_user_get", R.AuthUserGetRequest(name="nobody")),
        ("auth_role_get", R.AuthRoleGetRequest(role="r2")),
        ("auth_role_get", R.AuthRoleGetRequest(role="nobody")),
        ("auth_role_get", R.AuthRoleGetRequest(role="root")),
    ]:
        with pytest.raises(E.ErrPermissionDenied):
            env.apply(field, req, u1)
    # one's own user and one's own roles
    assert list(env.apply("auth_user_get", R.AuthUserGetRequest(name="u1"), u1).roles) == ["r1"]  # type: ignore[attr-defined]
    assert perms(env, "r1", u1) == []
    # a user that no longer exists
    with pytest.raises(E.ErrUserNotFound):
        env.apply("auth_user_list", R.AuthUserListRequest(), AuthInfo("ghost", env.store.revision))


def test_permission_checks(env: Env) -> None:
    root = env.bootstrap()
    env.apply("auth_user_add", R.AuthUserAddRequest(name="u", password="p"), root)
    env.apply("auth_role_add", R.AuthRoleAddRequest(name="r"), root)
    env.apply("auth_user_grant_role", R.AuthUserGrantRoleRequest(user="u", role="r"), root)
    grant(env, "r", b"k", typ=P.READ, info=root)                   # a key
    grant(env, "r", b"pre/", b"pre0", typ=P.READWRITE, info=root)  # a prefix
    grant(env, "r", b"m", b"p", typ=P.WRITE, info=root)            # a range
    grant(env, "r", b"x", b"\x00", typ=P.READ, info=root)          # from-key
    u = env.login("u", "p")
    s = env.store
    s.is_range_permitted(u, b"k", b"")
    with pytest.raises(E.ErrPermissionDenied):
        s.is_put_permitted(u, b"k")
    with pytest.raises(E.ErrPermissionDenied):
        s.is_range_permitted(u, b"k", b"l")  # [k, l) holds more than k
    s.is_range_permitted(u, b"k", b"k\x00")
    s.is_put_permitted(u, b"pre/a")
    s.is_range_permitted(u, b"pre/", b"pre0")
    s.is_delete_range_permitted(u, b"pre/a", b"pre/b")
    with pytest.raises(E.ErrPermissionDenied):
        s.is_range_permitted(u, b"pre", b"pre0")
    s.is_put_permitted(u, b"o")
    with pytest.raises(E.ErrPermissionDenied):
        s.is_range_permitted(u, b"o", b"")
    with pytest.raises(E.ErrPermissionDenied):
        s.is_put_permitted(u, b"p")  # range ends are exclusive
    s.is_range_permitted(u, b"zzz", b"")
    s.is_range_permitted(u, b"x", b"\x00")
    with pytest.raises(E.ErrPermissionDenied):
        s.is_range_permitted(u, b"w", b"\x00")
    # root may do anything; no token means "user name is empty"
    with pytest.raises(E.ErrAuthOldRevision):  # root's token was checked before the grants
        s.is_delete_range_permitted(root, b"\x00", b"\x00")
    s.is_delete_range_permitted(AuthInfo("root", s.revision), b"\x00", b"\x00")
    with pytest.raises(E.ErrUserEmpty):
        s.is_range_permitted(None, b"k", b"")
    with pytest.raises(E.ErrUserEmpty):
        s.is_range_permitted(AuthInfo("", 0), b"k", b"")


def test_changes_take_effect_on_the_next_check(env: Env) -> None:
    root = env.bootstrap()
    env.apply("auth_user_add", R.AuthUserAddRequest(name="u", password="p"), root)
    env.apply("auth_role_add", R.AuthRoleAddRequest(name="r"), root)
    env.apply("auth_user_grant_role", R.AuthUserGrantRoleRequest(user="u", role="r"), root)
    grant(env, "r", b"a", b"c", info=root)
    env.store.is_put_permitted(env.login("u", "p"), b"b")  # fills the cache
    env.apply("auth_role_revoke_permission", R.AuthRoleRevokePermissionRequest(role="r", key=b"a", range_end=b"c"),
              root)
    with pytest.raises(E.ErrPermissionDenied):
        env.store.is_put_permitted(env.login("u", "p"), b"b")
    grant(env, "r", b"a", b"c", info=root)
    env.store.is_put_permitted(env.login("u", "p"), b"b")
    env.apply("auth_user_revoke_role", R.AuthUserRevokeRoleRequest(name="u", role="r"), root)
    with pytest.raises(E.ErrPermissionDenied):
        env.store.is_put_permitted(env.login("u", "p"), b"b")
    env.apply("auth_user_grant_role", R.AuthUserGrantRoleRequest(user="u", role="r"), root)
    info = env.login("u", "p")
    env.store.is_put_permitted(info, b"b")
    # deleting the role takes it from its users (re-adding it does not give it back)
    env.apply("auth_role_delete", R.AuthRoleDeleteRequest(role="r"), root)
    env.apply("auth_role_add", R.AuthRoleAddRequest(name="r"), root)
    grant(env, "r", b"a", b"c", info=root)
    assert list(env.store.user("u").roles) == []  # type: ignore[union-attr]
    with pytest.raises(E.ErrPermissionDenied):
        env.store.is_put_permitted(env.login("u", "p"), b"b")


def test_a_request_checked_under_an_old_revision_is_refused(env: Env) -> None:
    root = env.bootstrap()
    env.apply("auth_user_add", R.AuthUserAddRequest(name="u", password="p"), root)
    stale = AuthInfo("root", env.store.revision - 1)
    with pytest.raises(E.ErrAuthOldRevision) as ei:
        env.store.is_put_permitted(stale, b"a")
    assert (ei.value.grpc_code, ei.value.grpc_message) == (
        "INVALID_ARGUMENT", "etcdserver: revision of auth store is old")
    env.store.is_put_permitted(AuthInfo("root", env.store.revision), b"a")


def test_permission_order_and_duplicates_as_etcd(env: Env) -> None:
    # recorded against etcd 3.4.23: a grant looks only at the first
    # permission whose key is >= its key; equal keys keep their order.
    env.apply("auth_role_add", R.AuthRoleAddRequest(name="r1"))
    grant(env, "r1", b"a", b"b", P.READ)
    grant(env, "r1", b"a", b"", P.WRITE)
    grant(env, "r1", b"a", b"\x00", P.READWRITE)
    grant(env, "r1", b"", b"", P.READWRITE)
    assert perms(env, "r1") == [(P.READWRITE, b"", b""), (P.READ, b"a", b"b"), (P.WRITE, b"a", b""),
                                (P.READWRITE, b"a", b"\x00")]
    grant(env, "r1", b"a", b"", P.READ)  # a duplicate of (a, "") at the end
    assert perms(env, "r1")[-1] == (P.READ, b"a", b"")
    assert len(perms(env, "r1")) == 5
    grant(env, "r1", b"a", b"b", P.WRITE)  # same key and end at the search point: type changes in place
    assert perms(env, "r1")[1] == (P.WRITE, b"a", b"b")
    env.apply("auth_role_revoke_permission", R.AuthRoleRevokePermissionRequest(role="r1", key=b"a"))
    assert perms(env, "r1") == [(P.READWRITE, b"", b""), (P.WRITE, b"a", b"b"), (P.READWRITE, b"a", b"\x00")]


def test_lists_and_roles_in_byte_order(env: Env) -> None:
    names = ["b", "a", "ä", "Z"]
    for name in names:
        env.apply("auth_user_add", R.AuthUserAddRequest(name=name, password="x"))
        env.apply("auth_role_add", R.AuthRoleAddRequest(name=name))
    for name in names:
        env.apply("auth_user_grant_role", R.AuthUserGrantRoleRequest(user="a", role=name))
    assert list(env.apply("auth_user_list", R.AuthUserListRequest()).users) == ["Z", "a", "b", "ä"]  # type: ignore[attr-defined]
    assert list(env.apply("auth_role_list", R.AuthRoleListRequest()).roles) == ["Z", "a", "b", "ä"]  # type: ignore[attr-defined]
    assert list(env.apply("auth_user_get", R.AuthUserGetRequest(name="a")).roles) == ["Z", "a", "b", "ä"]  # type: ignore[attr-defined]


def test_everything_survives_a_reopen_in_etcds_encoding(env: Env) -> None:
    root = env.bootstrap()
    env.apply("auth_user_add", R.AuthUserAddRequest(name="np", options=auth_pb2.UserAddOptions(no_password=True)),
              root)
    env.apply("auth_role_add", R.AuthRoleAddRequest(name="r1"), root)
    grant(env, "r1", b"a", b"b", P.READ, root)
    env.apply("auth_user_grant_role", R.AuthUserGrantRoleRequest(user="np", role="r1"), root)
    rev = env.store.revision
    # the bytes etcd 3.4 writes: the options message is always there
    raw_root = env.backend.get("authUsers", b"root")
    assert raw_root is not None and raw_root.startswith(b"\x0a\x04root\x12\x3c$2a$04$")
    assert raw_root.endswith(b"\x1a\x04root\x22\x00")
    raw_np = env.backend.get("authUsers", b"np")
    assert raw_np == b"\x0a\x02np\x1a\x02r1\x22\x02\x08\x01"
    assert env.backend.get("authRoles", b"r1") == b"\x0a\x02r1\x12\x06\x12\x01a\x1a\x01b"
    s = env.reopen()
    assert s.enabled and s.revision == rev
    assert [(p.key, p.range_end) for p in s.role("r1").keyPermission] == [(b"a", b"b")]  # type: ignore[union-attr]
    assert s.user("np").options.no_password  # type: ignore[union-attr]
    # tokens are memory only: a restarted member knows none
    with pytest.raises(E.ErrInvalidAuthToken):
        s.auth_info_from_token("whatever.1")
    s.check_password("root", "rootpw")
    s.is_range_permitted(AuthInfo("np", s.revision), b"a", b"")


def test_recover_from_another_backend(env: Env, tmp_path_factory: pytest.TempPathFactory) -> None:
    other = Backend(str(tmp_path_factory.mktemp("other") / "db"), unsafe_no_fsync=True)
    try:
        src = AuthStore(other, SimpleTokenProvider(), bcrypt_cost=TEST_COST)
        src.apply("auth_user_add", R.AuthUserAddRequest(name="root", password="x"), None)
        src.apply("auth_user_grant_role", R.AuthUserGrantRoleRequest(user="root", role="root"), None)
        src.apply("auth_enable", R.AuthEnableRequest(), None)
        env.apply("auth_user_add", R.AuthUserAddRequest(name="old", password="x"))
        env.store.recover(other)
        assert env.store.enabled and env.store.revision == src.revision
        assert env.store.user("old") is None and env.store.user("root") is not None
    finally:
        other.close()


def test_passwords(env: Env) -> None:
    root = env.bootstrap()
    with pytest.raises(E.ErrAuthFailed) as ei:
        env.store.check_password("root", "wrong")
    assert ei.value.grpc_message == "etcdserver: authentication failed, invalid user ID or password"
    with pytest.raises(E.ErrAuthFailed):
        env.store.check_password("nobody", "x")
    with pytest.raises(E.ErrAuthFailed):
        env.store.check_password("", "")
    env.apply("auth_user_add", R.AuthUserAddRequest(name="np", options=auth_pb2.UserAddOptions(no_password=True)),
              root)
    with pytest.raises(E.ErrNoPasswordUser) as ei2:
        env.store.check_password("np", "")
    # etcd 3.4 maps nothing: clients see UNKNOWN with the auth text
    assert ei2.value.grpc_code is None
    assert str(ei2.value) == "auth: authentication failed, password was given for no password user"
    with pytest.raises(E.ErrAuthFailed):
        env.store.authenticate("np", "x", 5)
    # bcrypt reads 72 bytes (etcd 3.4: a longer password matches on those)
    env.apply("auth_user_add", R.AuthUserAddRequest(name="long", password="x" * 100), root)
    env.store.check_password("long", "x" * 72)
    env.store.check_password("long", "x" * 80)
    with pytest.raises(E.ErrAuthFailed):
        env.store.check_password("long", "x" * 71)
    # the api hashes before raft; apply stores that hash
    hashed = env.store.hash_password("secret")
    env.apply("auth_user_add", R.AuthUserAddRequest(name="h", hashedPassword=hashed), root)
    assert env.store.user("h").password == base64.b64decode(hashed)  # type: ignore[union-attr]
    assert env.store.check_password("h", "secret") == env.store.revision
    env.apply("auth_user_change_password",
              R.AuthUserChangePasswordRequest(name="h", hashedPassword=env.store.hash_password("new")), root)
    env.store.check_password("h", "new")
    with pytest.raises(E.ErrAuthFailed):
        env.store.check_password("h", "secret")
    # the empty password is a password
    env.apply("auth_user_add", R.AuthUserAddRequest(name="ep", password=""), root)
    env.login("ep", "")
    env.apply("auth_disable", R.AuthDisableRequest(), root)
    with pytest.raises(E.ErrAuthNotEnabled):
        env.store.check_password("root", "rootpw")


def test_default_cost_is_etcds(tmp_path_factory: pytest.TempPathFactory) -> None:
    assert hash_password("x").startswith(b"$2a$10$")
    be = Backend(str(tmp_path_factory.mktemp("cost") / "db"), unsafe_no_fsync=True)
    try:
        assert AuthStore(be, SimpleTokenProvider(), bcrypt_cost=3).bcrypt_cost == 10  # out of range: default
        assert AuthStore(be, SimpleTokenProvider(), bcrypt_cost=5).bcrypt_cost == 5
    finally:
        be.close()


def test_tokens_follow_users(env: Env) -> None:
    root = env.bootstrap()
    env.apply("auth_user_add", R.AuthUserAddRequest(name="u", password="p"), root)
    prefix = env.store.gen_token_prefix()
    env.index += 1
    token = env.store.apply("authenticate", _auth_req("u", prefix), None, env.index).token
    assert token == f"{prefix}.{env.index}"
    assert env.store.auth_info_from_token(token) == AuthInfo("u", env.store.revision)
    env.apply("auth_user_change_password", R.AuthUserChangePasswordRequest(name="u", password="q"), root)
    with pytest.raises(E.ErrInvalidAuthToken) as ei:
        env.store.auth_info_from_token(token)
    assert (ei.value.grpc_code, ei.value.grpc_message) == ("UNAUTHENTICATED", "etcdserver: invalid auth token")
    info = env.login("u", "q")
    env.apply("auth_user_delete", R.AuthUserDeleteRequest(name="u"), root)
    with pytest.raises(E.ErrInvalidAuthToken):
        env.store.auth_info_from_token(f"x.{info.revision}")
    # a JWT-style info for a deleted user: permission denied (etcd)
    with pytest.raises(E.ErrPermissionDenied):
        env.store.is_put_permitted(AuthInfo("u", env.store.revision), b"a")


def _auth_req(name: str, prefix: str) -> object:
    from petcd.proto import raft_internal_pb2
    return raft_internal_pb2.InternalAuthenticateRequest(name=name, simple_token=prefix)
