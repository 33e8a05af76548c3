"""etcd's gRPC services plus grpc.health.v1 on petcd's own HTTP/2 front end
(petcd/http2): a dispatch table from method path to request type, call kind
and handler, built from the services' descriptors."""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.message import DecodeError, Message
from google.protobuf.message_factory import GetMessageClass
from grpc_health.v1 import health_pb2

from petcd.api import metrics, validation
from petcd.api.auth_service import AuthService
from petcd.api.cluster_service import ClusterService
from petcd.api.election_service import ElectionService
from petcd.api.http1 import Http1Protocol
from petcd.api.http_app import ClientHttp
from petcd.api.kv_service import KVService
from petcd.api.lease_service import LeaseService
from petcd.api.lock_service import LockService
from petcd.api.maintenance_service import MaintenanceService
from petcd.api.watch_service import WatchService
from petcd.http2 import server as http2
from petcd.http2.grpc import RpcError, StatusCode
from petcd.proto import rpc_pb2, v3election_pb2, v3lock_pb2
from petcd.server import txn_ops
from petcd.server.decoding import TooDeep, parse_deep
from petcd.server.etcd_server import EtcdServer
from petcd.server.tls import TLS_HANDSHAKE_TIMEOUT, tls_from_config
from petcd.server.urls import parse_url

# etcd lets gRPC frames exceed --max-request-bytes by this much, so that the
# server, not the transport, refuses a request that is merely too large.
GRPC_OVERHEAD_BYTES = 512 * 1024


def bind(listen_urls: Iterable[str]) -> list[socket.socket]:
    """Listen on every client URL, or raise BindError having bound none;
    done before the member touches its data dir."""
    return http2.bind(listen_urls)


def build(server: EtcdServer, sockets: list[socket.socket], keepalive: http2.Keepalive | None = None) -> http2.ClientPort:
    """The client port over bound sockets, with every service registered."""
    port = http2.ClientPort(
        sockets,
        max_recv=server.cfg.max_request_bytes + GRPC_OVERHEAD_BYTES,
        keepalive=keepalive or http2.Keepalive(),
        tls_contexts=_tls_contexts(server, sockets),
        tls_handshake_timeout=TLS_HANDSHAKE_TIMEOUT,
    )
    services = rpc_pb2.DESCRIPTOR.services_by_name
    extensive = server.cfg.metrics == "extensive"
    add_service(port, services["KV"], KVService(server), extensive)
    add_service(port, services["Maintenance"], MaintenanceService(server), extensive)
    add_service(port, services["Cluster"], ClusterService(server), extensive)
    add_service(port, services["Lease"], LeaseService(server), extensive)
    add_service(port, services["Watch"], WatchService(server), extensive)
    add_service(port, services["Auth"], AuthService(server), extensive)
    add_service(port, health_pb2.DESCRIPTOR.services_by_name["Health"], HealthService(), extensive)
    add_service(port, v3lock_pb2.DESCRIPTOR.services_by_name["Lock"], LockService(server), extensive)
    add_service(port, v3election_pb2.DESCRIPTOR.services_by_name["Election"], ElectionService(server), extensive)
    # HTTP/1.1 connections: the JSON gateway (calling the handlers just
    # registered), /health, /version, /metrics
    app = ClientHttp(server, {path.decode(): m.handler for path, m in port.methods.items()},
                     gateway=server.cfg.enable_grpc_gateway)
    port.http1 = lambda p: Http1Protocol(app, p.connection_closed)
    return port


def _tls_contexts(server: EtcdServer, sockets: list[socket.socket]) -> list[Callable[[], ssl.SSLContext] | None]:
    """Per socket (bound from --listen-client-urls, in order): TLS for the https ones
    (--cert-file & co., or --auto-tls); TLSConfigError if the files cannot be used."""
    urls = server.cfg.listen_client_urls
    if len(urls) != len(sockets) or not any(parse_url(u).tls for u in urls):
        return []
    tls = tls_from_config(server.cfg, peer=False)
    if tls is None:  # config validation refuses this first; say it in etcd's words anyway
        bad = next(u for u in urls if parse_url(u).tls)
        raise ValueError(f"TLS key/cert (--cert-file, --key-file) must be provided for client url {bad} with HTTPS scheme")
    return [tls.listener_context if parse_url(u).tls else None for u in urls]


def add_service(port: http2.ClientPort, service: ServiceDescriptor, servicer: object, extensive: bool = False) -> None:
    """Register servicer's methods (named as in the .proto) for service.
    Requests are decoded here so that a malformed one gets etcd's answer
    (INTERNAL, "grpc: error unmarshalling request: ...")."""
    for m in service.methods:
        impl = getattr(servicer, m.name, None)
        if impl is None:
            continue
        if m.client_streaming:
            kind = http2.Kind.BIDI
        elif m.server_streaming:
            kind = http2.Kind.SERVER_STREAM
        else:
            kind = http2.Kind.UNARY
        path = f"/{service.full_name}/{m.name}"
        # grpc_server_{started,handled}_total, and grpc_server_handling_seconds if extensive
        impl = metrics.counted(impl, _KIND_LABELS[kind], path, extensive)
        port.add(path, http2.Method(kind, _decoder(GetMessageClass(m.input_type)), _encode, impl))


_KIND_LABELS = {http2.Kind.UNARY: "unary", http2.Kind.SERVER_STREAM: "server_stream", http2.Kind.BIDI: "bidi_stream"}


def _encode(msg: Message | bytes) -> bytes:
    """A response message's bytes; a handler may hand over bytes it encoded
    itself (watch events, encoded once for many watchers)."""
    if isinstance(msg, bytes):
        return msg
    return msg.SerializeToString()


def _decoder(cls: type[Message]) -> Callable[[bytes], Message]:
    def decode(raw: bytes) -> Message:
        # deeper than protobuf's own limit: etcd applies txns nested that deep
        try:
            return parse_deep(cls, raw, txn_ops.MAX_MESSAGE_DEPTH)
        except TooDeep:
            raise RpcError(StatusCode.INVALID_ARGUMENT, validation.ErrTxnTooDeep.message) from None
        except DecodeError as exc:
            raise RpcError(StatusCode.INTERNAL, f"grpc: error unmarshalling request: {exc}") from None

    return decode


class HealthService:
    """grpc.health.v1.Health: the whole server ("") is SERVING while the
    port is up; other service names are unknown, in the words of etcd's
    (grpc-go's) health server."""

    async def Check(
        self, request: health_pb2.HealthCheckRequest, context: http2.CallContext
    ) -> health_pb2.HealthCheckResponse:
        if request.service:
            raise RpcError(StatusCode.NOT_FOUND, "unknown service")
        return health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.SERVING)

    async def Watch(
        self, request: health_pb2.HealthCheckRequest, context: http2.CallContext
    ) -> AsyncIterator[health_pb2.HealthCheckResponse]:
        status = health_pb2.HealthCheckResponse.SERVICE_UNKNOWN if request.service else health_pb2.HealthCheckResponse.SERVING
        yield health_pb2.HealthCheckResponse(status=status)
        await asyncio.Event().wait()  # no changes until the call ends


# grpc-go's enforcement policy when the server sets none
_GRPC_DEFAULT_PING_MIN_TIME = 300.0


def keepalive_from(cfg: Any) -> http2.Keepalive:
    """etcd's --grpc-keepalive-* settings from the config, where present.

    As etcd passes them to grpc-go: a min time of 0 leaves grpc-go's own
    enforcement (5 minutes); an interval or timeout of 0 leaves grpc-go's
    server pings at their defaults (2 hours, 20 seconds)."""
    d = http2.Keepalive()
    min_time = float(getattr(cfg, "grpc_keepalive_min_time_s", d.min_time))
    interval = float(getattr(cfg, "grpc_keepalive_interval_s", d.interval))
    timeout = float(getattr(cfg, "grpc_keepalive_timeout_s", d.timeout))
    if interval <= 0 or timeout <= 0:
        interval, timeout = d.interval, d.timeout
    return http2.Keepalive(min_time=min_time if min_time > 0 else _GRPC_DEFAULT_PING_MIN_TIME, interval=interval, timeout=timeout)
