"""Fixtures for the auth tests: an AuthStore on a real Backend in tmp_path."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from petcd.auth.store import AuthStore
from petcd.auth.tokens import AuthInfo, SimpleTokenProvider
from petcd.proto import raft_internal_pb2 as RI
from petcd.proto import rpc_pb2 as R
from petcd.storage.backend import Backend

# The lowest cost bcrypt allows: the tests hash many passwords.
TEST_COST = 4


class Clock:
    """A hand-driven monotonic clock for token TTLs."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Env:
    """A store on a real backend file; reopen() closes and reloads both."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.clock = Clock()
        self.backend = Backend(str(path / "db"), unsafe_no_fsync=True)
        self.store = self._open()
        self.index = 100

    def _open(self) -> AuthStore:
        return AuthStore(self.backend, SimpleTokenProvider(300, self.clock), bcrypt_cost=TEST_COST)

    def reopen(self) -> AuthStore:
        self.backend.commit()
        self.backend.close()
        self.backend = Backend(str(self.path / "db"), unsafe_no_fsync=True)
        self.store = self._open()
        return self.store

    def apply(self, field: str, req: object, info: AuthInfo | None = None) -> object:
        self.index += 1
        return self.store.apply(field, req, info, self.index)

    def bootstrap(self) -> AuthInfo:
        """root with role root, auth enabled; root's AuthInfo."""
        self.apply("auth_user_add", R.AuthUserAddRequest(name="root", password="rootpw"))
        self.apply("auth_user_grant_role", R.AuthUserGrantRoleRequest(user="root", role="root"))
        self.apply("auth_enable", R.AuthEnableRequest())
        return self.login("root", "rootpw")

    def login(self, name: str, password: str) -> AuthInfo:
        self.store.check_password(name, password)
        prefix = self.store.gen_token_prefix()
        resp = self.apply("authenticate", RI.InternalAuthenticateRequest(name=name, simple_token=prefix))
        return self.store.auth_info_from_token(resp.token)  # type: ignore[attr-defined]


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    e = Env(tmp_path)
    yield e
    e.backend.close()
