"""An in-process petcd member on free ports, driven over real gRPC sockets."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import grpc
import pytest

from petcd.embed import Etcd
from petcd.proto import rpc_pb2_grpc
from petcd.server.config import ServerConfig
from petcd.testing.harness import free_port

try:
    import uvloop
except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
    uvloop = None  # type: ignore[assignment]

T = TypeVar("T")


@pytest.fixture(params=["asyncio", "uvloop"])
def run(request: pytest.FixtureRequest) -> Any:
    """Runs a coroutine to completion (60 s at most) on a fresh loop: asyncio's, then uvloop's."""
    if request.param == "uvloop" and uvloop is None:
        pytest.skip("uvloop not installed")
    factory = uvloop.new_event_loop if request.param == "uvloop" else asyncio.new_event_loop

    def _run(coro: Coroutine[Any, Any, T]) -> T:
        with asyncio.Runner(loop_factory=factory) as runner:
            return runner.run(asyncio.wait_for(coro, 60))

    return _run


def member_config(data_dir: Path, **overrides: object) -> ServerConfig:
    client = f"http://127.0.0.1:{free_port()}"
    peer = f"http://127.0.0.1:{free_port()}"
    cfg = ServerConfig(
        name="default",
        data_dir=str(data_dir),
        listen_client_urls=[client],
        advertise_client_urls=[client],
        listen_peer_urls=[peer],
        initial_advertise_peer_urls=[peer],
        initial_cluster=f"default={peer}",
    )
    for k, v in overrides.items():
        setattr(cfg, k, v)
    return cfg


@dataclass
class Member:
    """A member running on its own event loop thread, with sync stubs."""

    cfg: ServerConfig
    loop: asyncio.AbstractEventLoop
    thread: threading.Thread
    etcd: Etcd
    channel: grpc.Channel

    @property
    def kv(self) -> rpc_pb2_grpc.KVStub:
        return rpc_pb2_grpc.KVStub(self.channel)

    @property
    def maintenance(self) -> rpc_pb2_grpc.MaintenanceStub:
        return rpc_pb2_grpc.MaintenanceStub(self.channel)

    @property
    def cluster(self) -> rpc_pb2_grpc.ClusterStub:
        return rpc_pb2_grpc.ClusterStub(self.channel)

    @property
    def lease(self) -> rpc_pb2_grpc.LeaseStub:
        return rpc_pb2_grpc.LeaseStub(self.channel)

    def stop(self) -> None:
        self.channel.close()
        asyncio.run_coroutine_threadsafe(self.etcd.stop(), self.loop).result(60)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(60)


def start_member(cfg: ServerConfig) -> Member:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    etcd = Etcd(cfg)
    asyncio.run_coroutine_threadsafe(etcd.start(), loop).result(60)
    target = cfg.listen_client_urls[0].removeprefix("http://")
    channel = grpc.insecure_channel(target)
    grpc.channel_ready_future(channel).result(timeout=60)
    return Member(cfg, loop, thread, etcd, channel)


@pytest.fixture
def member(tmp_path: Path) -> Iterator[Member]:
    m = start_member(member_config(tmp_path / "default.petcd"))
    yield m
    m.stop()
