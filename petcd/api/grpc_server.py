"""The gRPC server on the client URLs: etcd's services plus grpc.health.v1."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any
from urllib.parse import urlsplit

import grpc
from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.message import DecodeError, Message
from google.protobuf.message_factory import GetMessageClass
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from petcd.api import validation
from petcd.api.cluster_service import ClusterService
from petcd.api.kv_service import KVService
from petcd.api.lease_service import LeaseService
from petcd.api.maintenance_service import MaintenanceService
from petcd.api.watch_service import WatchService
from petcd.proto import rpc_pb2
from petcd.server import txn_ops
from petcd.server.decoding import TooDeep, parse_deep
from petcd.server.etcd_server import EtcdServer

# etcd lets gRPC frames exceed --max-request-bytes by this much, so that the
# server, not the transport, refuses a request that is merely too large.
GRPC_OVERHEAD_BYTES = 512 * 1024

# Calls that may wait for the event loop to take them (see build()): far
# above any burst a client sends at once (etcd serves 5,000 of 5,000), and
# still a bound. A waiting call costs a few KB of core memory.
MAX_PENDING_REQUESTS = 100_000


def listen_address(url: str) -> str:
    """host:port for grpc from an etcd listen URL (http://127.0.0.1:2379)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "unix", "unixs", "https", ""):
        raise ValueError(f"unsupported listen URL scheme {parts.scheme!r} in {url!r}")
    host = parts.hostname or "0.0.0.0"
    if ":" in host:
        host = f"[{host}]"
    return f"{host}:{parts.port or 2379}"


def build(server: EtcdServer, listen_urls: list[str]) -> tuple[grpc.aio.Server, health.aio.HealthServicer]:
    max_recv = server.cfg.max_request_bytes + GRPC_OVERHEAD_BYTES
    g = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", max_recv),
            ("grpc.max_send_message_length", 2**31 - 1),
            ("grpc.max_concurrent_streams", 2**31 - 1),
            # grpc core refuses (CANCELLED) calls that arrive while more than
            # max_pending_requests (default 1,000; every call above the hard
            # limit, default 3,000) wait for the server to pick them up; a
            # Python server falls that far behind in any burst. etcd serves
            # such bursts: queue them instead and serve them in turn.
            ("grpc.server.max_pending_requests", MAX_PENDING_REQUESTS),
            ("grpc.server.max_pending_requests_hard_limit", MAX_PENDING_REQUESTS),
            ("grpc.so_reuseport", 0),
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.http2.min_ping_interval_without_data_ms", 5000),
        ]
    )
    services = rpc_pb2.DESCRIPTOR.services_by_name
    add_service(g, services["KV"], KVService(server))
    add_service(g, services["Maintenance"], MaintenanceService(server))
    add_service(g, services["Cluster"], ClusterService(server))
    add_service(g, services["Lease"], LeaseService(server))
    add_service(g, services["Watch"], WatchService(server))
    hs = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(hs, g)
    for url in listen_urls:
        addr = listen_address(url)
        if g.add_insecure_port(addr) == 0:
            raise OSError(f"cannot listen on {url}")
    return g, hs


def add_service(g: grpc.aio.Server, service: ServiceDescriptor, servicer: object) -> None:
    """Register servicer's methods for service. Requests are decoded here,
    not by grpc, so that a malformed one gets etcd's answer (INTERNAL,
    "grpc: error unmarshalling request: ...") instead of grpc's UNKNOWN."""
    handlers: dict[str, grpc.RpcMethodHandler] = {}
    for m in service.methods:
        impl = getattr(servicer, m.name, None)
        if impl is None:
            continue
        decode = _decoder(GetMessageClass(m.input_type))
        encode = GetMessageClass(m.output_type).SerializeToString
        if m.client_streaming:
            behaviour = _decoding_stream(impl, decode)
            make = grpc.stream_stream_rpc_method_handler if m.server_streaming else grpc.stream_unary_rpc_method_handler
        elif m.server_streaming:
            behaviour = _decoding_unary_stream(impl, decode)
            make = grpc.unary_stream_rpc_method_handler
        else:
            behaviour = _decoding_unary(impl, decode)
            make = grpc.unary_unary_rpc_method_handler
        handlers[m.name] = make(behaviour, response_serializer=encode)
    g.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service.full_name, handlers),))


class _BadRequest(Exception):
    def __init__(self, message: str, code: grpc.StatusCode = grpc.StatusCode.INTERNAL) -> None:
        super().__init__(message)
        self.code = code


def _decoder(cls: type[Message]) -> Callable[[bytes], Message]:
    def decode(raw: bytes) -> Message:
        # deeper than protobuf's own limit: etcd applies txns nested that deep
        try:
            return parse_deep(cls, raw, txn_ops.MAX_MESSAGE_DEPTH)
        except TooDeep:
            raise _BadRequest(validation.ErrTxnTooDeep.message, grpc.StatusCode.INVALID_ARGUMENT) from None
        except DecodeError as exc:
            raise _BadRequest(f"grpc: error unmarshalling request: {exc}") from None

    return decode


def _decoding_unary(impl: Any, decode: Callable[[bytes], Message]) -> Any:
    async def behaviour(raw: bytes, context: grpc.aio.ServicerContext) -> Any:
        try:
            request = decode(raw)
        except _BadRequest as exc:
            await context.abort(exc.code, str(exc))
        return await impl(request, context)

    return behaviour


def _decoding_unary_stream(impl: Any, decode: Callable[[bytes], Message]) -> Any:
    async def behaviour(raw: bytes, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        try:
            request = decode(raw)
        except _BadRequest as exc:
            await context.abort(exc.code, str(exc))
        async for item in impl(request, context):
            yield item

    return behaviour


def _decoding_stream(impl: Any, decode: Callable[[bytes], Message]) -> Any:
    """For bidi streams (Watch, LeaseKeepAlive), whose impls are async generators."""

    async def behaviour(requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        async def decoded() -> AsyncIterator[Message]:
            async for raw in requests:
                try:
                    yield decode(raw)
                except _BadRequest as exc:
                    await context.abort(exc.code, str(exc))

        async for item in impl(decoded(), context):
            yield item

    return behaviour


async def set_serving(hs: health.aio.HealthServicer) -> None:
    await hs.set("", health_pb2.HealthCheckResponse.SERVING)
