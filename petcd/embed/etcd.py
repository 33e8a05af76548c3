"""Etcd: one petcd member (server + gRPC on its client URLs) inside the
caller's asyncio loop; ``serve`` runs one as a program until SIGINT/SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import signal
from urllib.parse import urlsplit

from petcd.api import grpc_server, http1
from petcd.api.http_app import ClientHttp, metrics_only
from petcd.http2.server import ClientPort
from petcd.server.config import ServerConfig
from petcd.server.etcd_server import EtcdServer

log = logging.getLogger("petcd.embed")


class Etcd:
    def __init__(self, cfg: ServerConfig) -> None:
        self.cfg = cfg
        self.server = EtcdServer(cfg)
        self._port: ClientPort | None = None
        self._metrics: list[http1.Http1Server] = []

    async def start(self) -> None:
        # bind first: a port in use fails here, before the data dir is touched
        sockets = grpc_server.bind(self.cfg.listen_client_urls)
        try:
            await self.server.start()
        except BaseException:
            for s in sockets:
                s.close()
            raise
        port = grpc_server.build(self.server, sockets, grpc_server.keepalive_from(self.cfg))
        if self.cfg.listen_metrics_urls:
            # before the client port: a client that sees the member ready finds them too
            app = metrics_only(ClientHttp(self.server, {}, gateway=False))
            for url in self.cfg.listen_metrics_urls:
                parts = urlsplit(url)
                self._metrics.append(await http1.serve(app, parts.hostname or "0.0.0.0", parts.port or 80))
            log.info("serving /metrics and /health on %s", ", ".join(self.cfg.listen_metrics_urls))
        await port.start()
        self._port = port
        log.info("ready to serve client requests on %s", ", ".join(self.cfg.listen_client_urls))

    async def stop(self) -> None:
        for m in self._metrics:
            await m.close()
        self._metrics = []
        if self._port is not None:
            await self._port.stop(grace=1.0)
            self._port = None
        await self.server.stop()


async def _serve(cfg: ServerConfig) -> int:
    etcd = Etcd(cfg)
    await etcd.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    failed = asyncio.create_task(_watch_node(etcd))
    waiter = asyncio.create_task(stop.wait())
    done, _ = await asyncio.wait({failed, waiter}, return_when=asyncio.FIRST_COMPLETED)
    log.info("received stop request, shutting down")
    failed.cancel()
    waiter.cancel()
    await etcd.stop()
    if etcd.server.removed:
        log.warning("the member has been permanently removed from the cluster; exiting")
        return 0
    return 1 if failed in done else 0


async def _watch_node(etcd: Etcd) -> None:
    """Returns when the node loop has failed (a fsync error, say) or this
    member was removed from the cluster."""
    while etcd.server.node.failed is None and not etcd.server.removed:
        await asyncio.sleep(0.2)


def serve(cfg: ServerConfig) -> int:
    """Run one member until SIGINT or SIGTERM; returns the exit code."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        return asyncio.run(_serve(cfg))
    return uvloop.run(_serve(cfg))
