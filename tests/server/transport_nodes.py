"""In-process raft peer transports for the transport tests, plain (http) or TLS (https):
a node records what its callbacks report, and the helpers start, stop and link nodes and
build the raw bytes a hand-made peer sends.

Shared by tests/server/test_transport.py and tests/server/test_transport_tls.py, which
differ only by the scheme and the TLS settings they give make_node; ``Run`` is the type of
the ``run`` fixture (tests/server/conftest.py) that runs a test's coroutine on asyncio and
on uvloop.
"""

from __future__ import annotations

import asyncio
import ssl
import struct
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

from petcd.raft import Message, MessageType
from petcd.server.transport import MAGIC, PeerTransport
from petcd.server.transport.tls import PeerTLS

CLUSTER = 0xC1
T = TypeVar("T")
Run = Callable[[Coroutine[Any, Any, T]], T]


@dataclass
class Node:
    """A transport plus everything its callbacks reported."""

    id: int
    transport: PeerTransport
    scheme: str
    received: list[Message] = field(default_factory=list)
    unreachable: list[tuple[int, float]] = field(default_factory=list)
    snapshot_status: list[tuple[int, bool]] = field(default_factory=list)

    @property
    def url(self) -> str:
        """The URL a peer dials: the listener's bound port, with the scheme it listens on."""
        return f"{self.scheme}://127.0.0.1:{self.transport.addresses[0][1]}"


def make_node(member_id: int, tls: PeerTLS | None = None, *, scheme: str | None = None,
              cluster_id: int = CLUSTER, port: int = 0, **kwargs: Any) -> Node:
    """A node listening on 127.0.0.1 (port 0: any free one); https when given TLS settings,
    unless scheme says otherwise. Not started: see started()."""
    scheme = scheme or ("https" if tls is not None else "http")
    node: Node
    tr = PeerTransport(
        member_id,
        cluster_id,
        [f"{scheme}://127.0.0.1:{port}"],
        on_message=lambda m: node.received.append(m),
        on_unreachable=lambda i: node.unreachable.append((i, time.monotonic())),
        on_snapshot_status=lambda i, ok: node.snapshot_status.append((i, ok)),
        tls=tls,
        **kwargs,
    )
    node = Node(member_id, tr, scheme)
    return node


@asynccontextmanager
async def started(*nodes: Node) -> AsyncIterator[None]:
    """The nodes' transports running for the block, stopped after it whatever happens."""
    for n in nodes:
        await n.transport.start()
    try:
        yield
    finally:
        for n in nodes:
            await n.transport.stop()


def link(*nodes: Node) -> None:
    """Every node knows every other one as a peer."""
    for a in nodes:
        for b in nodes:
            if a is not b:
                a.transport.add_peer(b.id, [b.url])


def heartbeat(frm: int, to: int, n: int = 0) -> Message:
    return Message(MessageType.MsgHeartbeat, to=to, from_=frm, term=3, commit=n)


def handshake(cluster_id: int, frm: int, to: int) -> bytes:
    """The opening a dialing member sends before its first frame."""
    return MAGIC + struct.pack(">QQQ", cluster_id, frm, to)


def frame(body: bytes) -> bytes:
    """body behind its 4-byte big-endian length, as on the wire."""
    return struct.pack(">I", len(body)) + body


def opening(msg: Message, cluster_id: int = CLUSTER) -> bytes:
    """What a dialing member sends first: its handshake, then msg framed (sender and
    receiver are msg's)."""
    return handshake(cluster_id, msg.from_, msg.to) + frame(msg.to_bytes())


async def wait_until(cond: Callable[[], bool], timeout: float = 20.0, what: str = "condition") -> None:
    """Polls cond until it holds; AssertionError naming what after timeout seconds."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.005)


async def hung_up(reader: asyncio.StreamReader, timeout: float = 20.0) -> bool:
    """True once the other side ends the connection (EOF, reset or a TLS alert); TimeoutError
    when it keeps the connection open for timeout seconds."""
    try:
        async with asyncio.timeout(timeout):
            while await reader.read(65536):
                pass
    except (ConnectionError, ssl.SSLError):
        pass
    return True
