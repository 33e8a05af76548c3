"""Fixtures: petcd serving the JSON gateway, and real etcd 3.4 (the oracle).

``petcd_gw`` is a real petcd process whose client port serves HTTP/1.1
next to gRPC (petcd/http2's listener hands HTTP/1.1 connections to the
gateway). ``InProcessGateway`` is the same application on a listener of its
own next to an in-process member, for a server without that listener."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from petcd.api import http1
from petcd.api.cluster_service import ClusterService
from petcd.api.election_service import ElectionService
from petcd.api.gateway import handlers_of
from petcd.api.http_app import ClientHttp
from petcd.api.kv_service import KVService
from petcd.api.lease_service import LeaseService
from petcd.api.lock_service import LockService
from petcd.api.maintenance_service import MaintenanceService
from petcd.api.watch_service import WatchService
from petcd.embed import Etcd
from petcd.server.config import ServerConfig
from petcd.testing.harness import Server, etcd_server, free_port, petcd_server, wait_for


class InProcessGateway:
    """A petcd member and its gateway listener on a loop in a thread."""

    def __init__(self, tmp: Path) -> None:
        client, peer = free_port(), free_port()
        self.http_port = 0  # the OS picks it when the listener binds
        self.cfg = ServerConfig(
            name="default", data_dir=str(tmp / "gw.petcd"),
            listen_client_urls=[f"http://127.0.0.1:{client}"], advertise_client_urls=[f"http://127.0.0.1:{client}"],
            listen_peer_urls=[f"http://127.0.0.1:{peer}"], initial_advertise_peer_urls=[f"http://127.0.0.1:{peer}"],
            initial_cluster=f"default=http://127.0.0.1:{peer}",
        )
        self.url = ""
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.etcd = Etcd(self.cfg)
        self.listener: http1.Http1Server | None = None
        self.app: ClientHttp | None = None

    def start(self) -> InProcessGateway:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(60)
        wait_for(lambda: self.etcd.server.leader != 0, 30, "the member to elect itself")
        return self

    async def _start(self) -> None:
        await self.etcd.start()
        s = self.etcd.server
        handlers = handlers_of([KVService(s), LeaseService(s), ClusterService(s), MaintenanceService(s), WatchService(s),
                                LockService(s), ElectionService(s)])
        self.app = ClientHttp(s, handlers)
        self.listener = await http1.serve(self.app, "127.0.0.1", 0)
        assert self.listener.server is not None
        self.http_port = int(self.listener.server.sockets[0].getsockname()[1])
        self.url = f"http://127.0.0.1:{self.http_port}"

    def stop(self) -> None:
        async def stop() -> None:
            if self.listener is not None:
                await self.listener.close()
            await self.etcd.stop()

        try:
            asyncio.run_coroutine_threadsafe(stop(), self.loop).result(60)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(30)


@pytest.fixture(scope="module")
def module_tmp() -> Iterator[Path]:
    # Not pytest's tmp_path_factory: every pytest session (other suites on
    # the same machine too) prunes all but the three newest basetemp dirs,
    # under a test that runs long enough (Patroni's).
    d = Path(tempfile.mkdtemp(prefix="petcd-gateway-"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


def client_port_speaks_http1() -> bool:
    """Whether this tree's petcd has the client port's own front end (looked
    up in the tree: an editable install elsewhere may provide the module)."""
    import petcd

    return (Path(petcd.__file__).parent / "http2" / "server.py").exists()


@pytest.fixture(scope="module")
def petcd_gw(module_tmp: Path) -> Iterator[str]:
    """The URL of a petcd member's client port (gRPC and HTTP/1.1)."""
    if client_port_speaks_http1():
        s = petcd_server(module_tmp).start()
        yield s.client_url
        s.stop()
        return
    g = InProcessGateway(module_tmp).start()
    yield g.url
    g.stop()


@pytest.fixture(scope="module")
def etcd(module_tmp: Path) -> Iterator[Server]:
    s = etcd_server(module_tmp).start()
    yield s
    s.stop()
