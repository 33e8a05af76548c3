"""The gRPC server on the client URLs: etcd's services plus grpc.health.v1."""

from __future__ import annotations

from urllib.parse import urlsplit

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from petcd.api.cluster_service import ClusterService
from petcd.api.kv_service import KVService
from petcd.api.lease_service import LeaseService
from petcd.api.maintenance_service import MaintenanceService
from petcd.api.watch_service import WatchService
from petcd.proto import rpc_pb2_grpc
from petcd.server.etcd_server import EtcdServer

# etcd lets gRPC frames exceed --max-request-bytes by this much, so that the
# server, not the transport, refuses a request that is merely too large.
GRPC_OVERHEAD_BYTES = 512 * 1024


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
            ("grpc.so_reuseport", 0),
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.http2.min_ping_interval_without_data_ms", 5000),
        ]
    )
    rpc_pb2_grpc.add_KVServicer_to_server(KVService(server), g)
    rpc_pb2_grpc.add_MaintenanceServicer_to_server(MaintenanceService(server), g)
    rpc_pb2_grpc.add_ClusterServicer_to_server(ClusterService(server), g)
    rpc_pb2_grpc.add_LeaseServicer_to_server(LeaseService(server), g)
    rpc_pb2_grpc.add_WatchServicer_to_server(WatchService(server), g)
    hs = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(hs, g)
    for url in listen_urls:
        addr = listen_address(url)
        if g.add_insecure_port(addr) == 0:
            raise OSError(f"cannot listen on {url}")
    return g, hs


async def set_serving(hs: health.aio.HealthServicer) -> None:
    await hs.set("", health_pb2.HealthCheckResponse.SERVING)
