"""What every unary etcd RPC handler does around its body: map errors to
gRPC statuses (petcd/api/errors.py) and fill the response header as etcd
does (cluster and member id, raft term, and the current revision unless the
state machine set one; the few calls whose etcd answer lacks the revision
or the whole header have decorators of their own)."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

from petcd.api.errors import abort_with
from petcd.auth.errors import ErrAuthOldRevision, ErrInvalidAuthToken
from petcd.auth.tokens import AuthInfo
from petcd.http2.server import CallContext
from petcd.proto import rpc_pb2
from petcd.server.etcd_server import EtcdServer


class _HasHeader(Protocol):
    @property
    def header(self) -> rpc_pb2.ResponseHeader: ...

    def ClearField(self, field_name: str) -> None: ...  # noqa: N802 - protobuf's name


class Service(Protocol):
    s: EtcdServer


Resp = TypeVar("Resp", bound=_HasHeader)
Handler = Callable[[Any, Any, CallContext], Awaitable[Resp]]


def fill_header(server: EtcdServer, h: rpc_pb2.ResponseHeader, revision: bool = True) -> None:
    h.cluster_id = server.cluster_id
    h.member_id = server.member_id
    h.raft_term = server.term
    if revision and h.revision == 0:
        h.revision = server.kv.rev


def _handler(fn: Handler[Resp], header: Callable[[EtcdServer, Resp], None]) -> Handler[Resp]:
    @functools.wraps(fn)
    async def wrapper(self: Service, request: Any, context: CallContext) -> Resp:
        try:
            resp = await fn(self, request, context)
        except Exception as exc:
            await abort_with(context, exc)
        header(self.s, resp)
        return resp

    return wrapper


def unary(fn: Handler[Resp]) -> Handler[Resp]:
    """A handler whose answer carries the full header."""
    return _handler(fn, lambda server, resp: fill_header(server, resp.header))


def unary_no_revision(fn: Handler[Resp]) -> Handler[Resp]:
    """A handler whose header carries no revision: etcd's Cluster service
    (its members are not mvcc state)."""
    return _handler(fn, lambda server, resp: fill_header(server, resp.header, revision=False))


def unary_no_header(fn: Handler[Resp]) -> Handler[Resp]:
    """A handler that answers with no header at all, as etcd 3.4's Alarm,
    Defragment and MoveLeader do."""
    return _handler(fn, lambda server, resp: resp.ClearField("header"))


async def auth_info(server: EtcdServer, context: CallContext) -> AuthInfo | None:
    """Who the call runs as: the ``token`` metadata (or ``authorization``,
    the gateway's header), resolved by the member's auth front; None
    without one. Raises ErrInvalidAuthToken for a token this member does
    not know (also when waiting for the index that issued it outlasts the
    call's deadline, as etcd answers then)."""
    # straight from the raw headers: this runs for every request
    raw: bytes | None = None
    fallback: bytes | None = None
    for name, value in context.headers:
        if name == b"token":
            raw = value
        elif name == b"authorization":
            fallback = value
    if raw is None:
        raw = fallback
    if raw is None:
        # --client-cert-auth: a verified client certificate names the user
        if context.client_cn and server.cfg.client_cert_auth:
            return server.auth_front.auth_info_from_cn(context.client_cn)
        return None
    token = raw.decode("latin-1")
    front = server.auth_front
    index = front.must_wait(token)
    if index:  # issued by an entry not applied here yet (rare: stay synchronous otherwise)
        remaining = context.time_remaining()
        limit = server.request_timeout if remaining is None else min(remaining, server.request_timeout)
        try:
            await asyncio.wait_for(server.applied_wait.wait(index), limit)
        except TimeoutError:
            raise ErrInvalidAuthToken() from None
    return server.auth.auth_info_from_token(token)


def check_revision(server: EtcdServer, info: AuthInfo | None) -> None:
    """After a read served under ``info``: the auth store must not have
    moved meanwhile (etcd's doSerialize), or the client retries."""
    if info is not None and info.revision != 0 and info.revision != server.auth.revision:
        raise ErrAuthOldRevision()
