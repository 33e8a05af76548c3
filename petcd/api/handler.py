"""What every unary etcd RPC handler does around its body: map errors to
gRPC statuses (petcd/api/errors.py) and fill the response header as etcd
does (cluster and member id, raft term, and the current revision unless the
state machine set one)."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

from petcd.api.errors import abort_with
from petcd.http2.server import CallContext
from petcd.proto import rpc_pb2
from petcd.server.etcd_server import EtcdServer


class _HasHeader(Protocol):
    @property
    def header(self) -> rpc_pb2.ResponseHeader: ...


class Service(Protocol):
    s: EtcdServer


Resp = TypeVar("Resp", bound=_HasHeader)
Handler = Callable[[Any, Any, CallContext], Awaitable[Resp]]


def fill_header(server: EtcdServer, h: rpc_pb2.ResponseHeader) -> None:
    h.cluster_id = server.cluster_id
    h.member_id = server.member_id
    h.raft_term = server.term
    if h.revision == 0:
        h.revision = server.kv.rev


def unary(fn: Handler[Resp]) -> Handler[Resp]:
    @functools.wraps(fn)
    async def wrapper(self: Service, request: Any, context: CallContext) -> Resp:
        try:
            resp = await fn(self, request, context)
        except Exception as exc:
            await abort_with(context, exc)
        fill_header(self.s, resp.header)
        return resp

    return wrapper
