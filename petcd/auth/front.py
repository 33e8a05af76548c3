"""The client port's side of auth: who a request runs as, and the auth
requests' work that happens before raft.

What it is for: the api layer owns one :class:`AuthFront` per member. For
every request it calls :meth:`AuthFront.auth_info` with the ``token``
metadata (gRPC) or the ``Authorization`` header (the gateway); for
Authenticate, UserAdd and UserChangePassword it calls the methods below,
which do the slow bcrypt work off the event loop and hand the server a
request ready to propose.

Behaviour (etcd 3.4):

- A simple token names the raft index that issued it. A member that has
  not applied that index yet waits for it (``wait_applied``; the caller's
  deadline bounds the wait, as etcd waits on the request's context), then
  looks the token up. Unknown tokens are "invalid auth token".
- No token: with ``--client-cert-auth`` the client certificate's common
  name is the user (:meth:`AuthFront.auth_info_from_cn`), else no user.
- Authenticate: the password is checked against the current store, a
  token prefix drawn, and the request proposed without the password (so
  the WAL never holds it); if the auth revision moved between the check
  and the token, the check is made again (etcd's loop).
- UserAdd / UserChangePassword: the password is hashed here and proposed
  as ``hashedPassword`` (empty ``password``), so every member stores the
  same hash and apply never runs bcrypt.

Guarantees: bcrypt runs on a small dedicated thread pool (``bcrypt_workers``
threads), so a flood of Authenticate calls queues there and never stalls
the event loop or the default executor.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor

from petcd.auth.store import AuthStore
from petcd.auth.tokens import AuthInfo, SimpleTokenProvider, simple_token_index
from petcd.proto import raft_internal_pb2, rpc_pb2

ProposeAuthenticate = Callable[[raft_internal_pb2.InternalAuthenticateRequest],
                               Awaitable[rpc_pb2.AuthenticateResponse]]


class AuthFront:
    """Token resolution and pre-raft auth work for one member."""

    def __init__(self, store: Callable[[], AuthStore], applied_index: Callable[[], int],
                 wait_applied: Callable[[int], Awaitable[None]], *, bcrypt_workers: int = 2) -> None:
        # the member's current store: a snapshot install replaces it
        self._store = store
        self._applied_index = applied_index
        self._wait_applied = wait_applied
        self._pool = ThreadPoolExecutor(max_workers=bcrypt_workers, thread_name_prefix="petcd-bcrypt")

    @property
    def store(self) -> AuthStore:
        return self._store()

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    def must_wait(self, token: str) -> int:
        """The raft index to wait for before ``token`` can be looked up (a
        simple token issued by an entry this member has not applied yet),
        or 0. Lets the caller stay synchronous on the common path."""
        if isinstance(self.store.tokens, SimpleTokenProvider):
            index = simple_token_index(token)
            if index is not None and index > self._applied_index():
                return index
        return 0

    async def auth_info(self, token: str | None) -> AuthInfo | None:
        """The user a request runs as: None without a token; raises
        ErrInvalidAuthToken for a token this member does not know."""
        if token is None:
            return None
        index = self.must_wait(token)
        if index:
            await self._wait_applied(index)
        return self.store.auth_info_from_token(token)

    def auth_info_from_cn(self, common_name: str) -> AuthInfo | None:
        """``--client-cert-auth`` without a token: the certificate's CN."""
        if not common_name:
            return None
        return AuthInfo(common_name, self.store.revision)

    async def _in_pool(self, fn: Callable[..., object], *args: object) -> object:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    async def authenticate(self, req: rpc_pb2.AuthenticateRequest,
                           propose: ProposeAuthenticate) -> rpc_pb2.AuthenticateResponse:
        """etcd's Authenticate: check, propose, re-check if the store moved."""
        while True:
            checked = await self._in_pool(self.store.check_password, req.name, req.password)
            internal = raft_internal_pb2.InternalAuthenticateRequest(
                name=req.name, simple_token=self.store.gen_token_prefix())
            resp = await propose(internal)
            if checked == self.store.revision:
                return resp

    async def prepare_user_add(self, req: rpc_pb2.AuthUserAddRequest) -> rpc_pb2.AuthUserAddRequest:
        """The UserAdd to propose: the password hashed (unless no_password
        or the name is empty, which apply refuses anyway)."""
        out = rpc_pb2.AuthUserAddRequest()
        out.CopyFrom(req)
        out.hashedPassword = ""
        if req.name and not (req.HasField("options") and req.options.no_password):
            out.hashedPassword = str(await self._in_pool(self.store.hash_password, req.password))
        out.password = ""
        return out

    async def prepare_change_password(
        self, req: rpc_pb2.AuthUserChangePasswordRequest
    ) -> rpc_pb2.AuthUserChangePasswordRequest:
        """The UserChangePassword to propose, its password hashed."""
        hashed = str(await self._in_pool(self.store.hash_password, req.password))
        return rpc_pb2.AuthUserChangePasswordRequest(name=req.name, hashedPassword=hashed)
