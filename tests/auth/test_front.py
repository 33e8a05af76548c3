"""The api side of auth: token resolution (waiting for the issuing index),
the Authenticate loop, and hashing before raft."""

from __future__ import annotations

import asyncio
import base64

import bcrypt
import pytest

from petcd.auth import errors as E
from petcd.auth.front import AuthFront
from petcd.auth.tokens import AuthInfo
from petcd.proto import auth_pb2, raft_internal_pb2
from petcd.proto import rpc_pb2 as R
from tests.auth.conftest import Env


def make_front(env: Env) -> tuple[AuthFront, list[int]]:
    waited: list[int] = []

    async def wait_applied(index: int) -> None:
        waited.append(index)
        env.index = max(env.index, index)

    return AuthFront(lambda: env.store, lambda: env.index, wait_applied), waited


def test_token_from_a_later_index_waits_for_it(env: Env) -> None:
    env.bootstrap()
    front, waited = make_front(env)
    try:
        prefix = env.store.gen_token_prefix()
        token = env.store.authenticate("root", prefix, env.index + 50).token
        info = asyncio.run(front.auth_info(token))
        assert info == AuthInfo("root", env.store.revision)
        assert waited == [env.index]
        waited.clear()
        assert asyncio.run(front.auth_info(token)) is not None
        assert waited == []  # applied by now
        assert asyncio.run(front.auth_info(None)) is None
        with pytest.raises(E.ErrInvalidAuthToken):
            asyncio.run(front.auth_info("nonsense"))
        assert front.auth_info_from_cn("alice") == AuthInfo("alice", env.store.revision)
        assert front.auth_info_from_cn("") is None
    finally:
        front.close()


def test_authenticate_retries_when_the_store_moved(env: Env) -> None:
    env.bootstrap()
    front, _ = make_front(env)
    proposed: list[raft_internal_pb2.InternalAuthenticateRequest] = []

    async def propose(req: raft_internal_pb2.InternalAuthenticateRequest) -> R.AuthenticateResponse:
        proposed.append(req)
        if len(proposed) == 1:  # an auth change lands between check and token
            env.apply("auth_role_add", R.AuthRoleAddRequest(name=f"r{len(proposed)}"),
                      AuthInfo("root", env.store.revision))
        env.index += 1
        return env.store.apply("authenticate", req, None, env.index)  # type: ignore[no-any-return]

    try:
        resp = asyncio.run(front.authenticate(R.AuthenticateRequest(name="root", password="rootpw"), propose))
        assert len(proposed) == 2
        assert all(p.password == "" and p.name == "root" and len(p.simple_token) == 16 for p in proposed)
        assert resp.token.endswith(f".{env.index}")
        with pytest.raises(E.ErrAuthFailed):
            asyncio.run(front.authenticate(R.AuthenticateRequest(name="root", password="bad"), propose))
        assert len(proposed) == 2  # a wrong password never reaches raft
    finally:
        front.close()


def test_passwords_are_hashed_before_raft(env: Env) -> None:
    front, _ = make_front(env)
    try:
        add = asyncio.run(front.prepare_user_add(R.AuthUserAddRequest(name="u", password="secret")))
        assert add.password == "" and add.name == "u"
        assert bcrypt.checkpw(b"secret", base64.b64decode(add.hashedPassword))
        nopw = asyncio.run(front.prepare_user_add(R.AuthUserAddRequest(
            name="n", password="x", options=auth_pb2.UserAddOptions(no_password=True))))
        assert nopw.hashedPassword == "" and nopw.password == "" and nopw.options.no_password
        # a client's own hashedPassword is ignored, as etcd 3.4 ignores it
        forged = asyncio.run(front.prepare_user_add(R.AuthUserAddRequest(name="f", hashedPassword="AAAA")))
        assert forged.hashedPassword != "AAAA"
        chg = asyncio.run(front.prepare_change_password(R.AuthUserChangePasswordRequest(name="u", password="n")))
        assert chg.password == "" and bcrypt.checkpw(b"n", base64.b64decode(chg.hashedPassword))
        root = asyncio.run(front.prepare_user_add(R.AuthUserAddRequest(name="root", password="secret")))
        env.apply("auth_user_add", root)
        env.apply("auth_user_grant_role", R.AuthUserGrantRoleRequest(user="root", role="root"))
        env.apply("auth_enable", R.AuthEnableRequest())
        env.store.check_password("root", "secret")
    finally:
        front.close()
