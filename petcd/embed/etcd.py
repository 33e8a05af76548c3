"""Etcd: one petcd member (server + gRPC on its client URLs) inside the
caller's asyncio loop; ``serve`` runs one as a program until SIGINT/SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from typing import Any
from urllib.parse import urlsplit

from petcd.api import grpc_server, http1
from petcd.api.http_app import ClientHttp, metrics_only
from petcd.http2.server import ClientPort
from petcd.server.config import ServerConfig
from petcd.server.etcd_server import EtcdServer
from petcd.storage.etcd_datadir import refuse_etcd_data_dir

log = logging.getLogger("petcd.embed")

# The GIL switch interval of a member's process (Python's default: 5 ms).
# The WAL sync thread needs the GIL back after each fsync to hand the Ready
# back to the loop; while the loop is busy it waits up to this long, and the
# member's next Ready waits with it. Measured on a three-member cluster
# under put load: 10-30% more writes per second than with the default.
SWITCH_INTERVAL = 0.0005


class Etcd:
    def __init__(self, cfg: ServerConfig) -> None:
        self.cfg = cfg
        # an etcd member's data dir is refused before anything touches it
        refuse_etcd_data_dir(cfg.data_dir, cfg.backend_path(), cfg.wal_dir())
        self._server: EtcdServer | None = None
        self._port: ClientPort | None = None
        self._metrics: list[http1.Http1Server] = []

    @property
    def server(self) -> EtcdServer:
        """The member's server, once start() has built it."""
        if self._server is None:
            raise RuntimeError("the member is not started")
        return self._server

    async def start(self) -> None:
        # bind first: a port in use fails here, before the data dir is touched
        sockets = grpc_server.bind(self.cfg.listen_client_urls)
        try:
            self._server = await EtcdServer.create(self.cfg)
            await self._server.start()
        except BaseException:
            for s in sockets:
                s.close()
            raise
        port = grpc_server.build(self._server, sockets, grpc_server.keepalive_from(self.cfg))
        if self.cfg.listen_metrics_urls:
            # before the client port: a client that sees the member ready finds them too
            app = metrics_only(ClientHttp(self._server, {}, gateway=False))
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
        if self._server is not None:
            await self._server.stop()


async def _serve(cfg: ServerConfig) -> int:
    etcd = Etcd(cfg)
    await etcd.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    server_done = etcd.server.done
    waiter: asyncio.Future[Any] = asyncio.ensure_future(stop.wait())
    watched: list[asyncio.Future[Any]] = [server_done, waiter]
    await asyncio.wait(watched, return_when=asyncio.FIRST_COMPLETED)
    waiter.cancel()
    failure = server_done.result() if server_done.done() else None
    if not server_done.done():
        log.info("received stop request, shutting down")
    await etcd.stop()
    if etcd.server.removed:
        log.warning("the member has been permanently removed from the cluster; exiting")
        return 0
    return 1 if failure is not None else 0


def tune_process() -> None:
    """Process-wide settings for a process that runs a member (``serve``
    calls it; a program that embeds a member may too)."""
    sys.setswitchinterval(SWITCH_INTERVAL)


def serve(cfg: ServerConfig) -> int:
    """Run one member until SIGINT or SIGTERM; returns the exit code."""
    tune_process()
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        return asyncio.run(_serve(cfg))
    return uvloop.run(_serve(cfg))
