"""One remote member as the sender sees it: the outbound connection's state machine.

A ``Peer`` owns everything this member sends to one other member: its URLs,
the long-lived connection (dialed lazily on the first message, redialed with
backoff after a failure), the bounded queue of frames waiting while that
connection comes up or its socket is backed up, and the short-lived
connections that carry snapshots.

States and the only transitions between them (``_enter`` enforces them)::

    IDLE --first message--> CONNECTING --connected--> UP
                             |    ^                   |
              dial failed /  |    | backoff over,     | lost, URL dropped,
              no URLs        v    | or new URLs       | removed, stopped
                            DOWN -+  <----------------+

While CONNECTING, messages wait in the queue (bounded); while UP they are
written at once, or queued while the socket is paused; while DOWN they are
dropped and the owner reports the peer unreachable. Every way out of UP
empties the queue (``detach``). ``removed`` ends the dialing loop for good.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import socket
from enum import Enum
from typing import TYPE_CHECKING, cast

from petcd import stats
from petcd.raft import Message
from petcd.server.transport.wire import (
    SNAP_ACK,
    Handshake,
    TransportError,
    frame_limit,
    pack_length,
    snapshot_frame,
)

if TYPE_CHECKING:
    from petcd.server.transport.peer_transport import PeerTransport

log = logging.getLogger("petcd.server.transport")

BACKOFF_MIN = 0.1
BACKOFF_MAX = 2.0
DIAL_TIMEOUT = 3.0
# A snapshot transfer may take this long plus one second per SNAPSHOT_MIN_RATE bytes.
SNAPSHOT_TIMEOUT = 30.0
SNAPSHOT_MIN_RATE = 4 << 20
# Snapshot data is handed to the socket this much at a time.
_SNAPSHOT_CHUNK = 1 << 20


def set_nodelay(transport: asyncio.BaseTransport) -> None:
    """TCP_NODELAY and keepalive on a connection's socket (raft messages are small and urgent)."""
    sock = transport.get_extra_info("socket")
    if sock is None:
        return
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    except (OSError, AttributeError):
        pass  # not a TCP socket; latency is all we lose


class State(Enum):
    IDLE = "idle"  # never needed yet: connect lazily on the first message
    CONNECTING = "connecting"  # dialing; messages wait in the bounded queue
    UP = "up"  # connected; messages are written at once (or queued while the socket is backed up)
    DOWN = "down"  # backing off after a failure; messages are dropped


# state -> the states it may move to. DOWN is reachable from everywhere (a
# peer removed or a transport stopped before it ever dialed goes IDLE -> DOWN).
TRANSITIONS: dict[State, frozenset[State]] = {
    State.IDLE: frozenset({State.CONNECTING, State.DOWN}),
    State.CONNECTING: frozenset({State.CONNECTING, State.UP, State.DOWN}),
    State.UP: frozenset({State.DOWN}),
    State.DOWN: frozenset({State.CONNECTING, State.DOWN}),
}


class _Outbound(asyncio.Protocol):
    """The dialer's side of the long-lived connection to one peer; it only writes."""

    def __init__(self, peer: Peer, closed: asyncio.Future[None]) -> None:
        self.peer = peer
        self.closed = closed
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it
        self.transport = cast(asyncio.Transport, transport)
        set_nodelay(transport)
        why = self.peer.owner.refused(transport, inbound=False)
        if why is not None:
            if not self.peer.warned:  # once per outage, as for a peer that cannot be reached
                self.peer.warned = True
                log.error("petcd: refusing peer %x at %s: %s", self.peer.id, self.peer.url, why)
            self.transport.abort()
            return
        self.peer.connected(self, self.transport)

    def data_received(self, data: bytes) -> None:
        pass  # the acceptor has nothing to say on an ordinary connection

    def eof_received(self) -> bool:
        return False  # the acceptor hung up: close our side too

    def pause_writing(self) -> None:
        if self.peer.proto is self:
            self.peer.paused = True

    def resume_writing(self) -> None:
        if self.peer.proto is self:
            self.peer.resume()

    def connection_lost(self, exc: Exception | None) -> None:
        self.peer.lost(self, exc)
        if not self.closed.done():
            self.closed.set_result(None)


class Peer:
    """One remote member as the sender sees it: its URLs, connection, bounded queue and dialing task."""

    __slots__ = (
        "owner", "id", "urls", "url", "url_index", "state", "proto", "transport", "paused",
        "queue", "queued_msgs", "queued_bytes", "up_since", "task", "wake", "removed", "snapshots",
        "warned", "up_since_last",
    )

    def __init__(self, owner: PeerTransport, member_id: int, urls: list[str]) -> None:
        for u in urls:
            owner.parse_url(u)
        self.owner = owner
        self.id = member_id
        self.urls = list(urls)
        self.url = ""
        self.url_index = 0
        self.state = State.IDLE
        self.proto: _Outbound | None = None
        self.transport: asyncio.Transport | None = None
        self.paused = False
        self.queue: list[bytes] = []  # frame pieces (length, body, length, body, ...)
        self.queued_msgs = 0
        self.queued_bytes = 0
        self.up_since: float | None = None
        self.up_since_last: float | None = None  # when the latest connection came up; run() reads it after the end
        self.task: asyncio.Task[None] | None = None
        self.wake = asyncio.Event()
        self.removed = False
        self.snapshots: set[asyncio.Task[None]] = set()
        self.warned = False  # logged this outage already; keeps a dead peer from flooding the log

    def _enter(self, state: State) -> None:
        """The one place the state changes."""
        assert state in TRANSITIONS[self.state], f"peer {self.id:x}: {self.state.name} -> {state.name}"
        self.state = state

    # --- sending ---------------------------------------------------------------------------

    def enqueue(self, msgs: list[Message]) -> None:
        state = self.state
        limit = self.owner.max_message_bytes
        if state is State.UP and not self.paused and not self.queue:
            pieces: list[bytes] = []
            append, pack = pieces.append, pack_length
            for m in msgs:
                body = m.to_bytes()
                n = len(body)
                if n > frame_limit(m.type, limit):
                    log.error("petcd: dropping a %s of %d bytes to peer %x: too big to frame", m.type.name, n, self.id)
                    continue
                append(pack(n))
                append(body)
            assert self.transport is not None
            self.transport.writelines(pieces)
            stats.PEER_SENT[self.id] += sum(map(len, pieces))  # etcd_network_peer_sent_bytes_total
            return
        if state is State.DOWN:
            self.owner.unreachable(self.id)
            return
        if state is State.IDLE:
            self.start()
        dropped = 0
        for m in msgs:
            if self.queued_msgs >= self.owner.max_queue_messages or self.queued_bytes >= self.owner.max_queue_bytes:
                dropped += 1
                continue
            body = m.to_bytes()
            if len(body) > frame_limit(m.type, limit):
                log.error("petcd: dropping a %s of %d bytes to peer %x: too big to frame",
                          m.type.name, len(body), self.id)
                continue
            self.queue.append(pack_length(len(body)))
            self.queue.append(body)
            self.queued_msgs += 1
            self.queued_bytes += 4 + len(body)
            stats.PEER_SENT[self.id] += 4 + len(body)  # etcd_network_peer_sent_bytes_total
        if dropped:
            log.debug("petcd: dropped %d messages to peer %x: queue full", dropped, self.id)
            self.owner.unreachable(self.id)

    def resume(self) -> None:
        """The socket drained below its low-water mark: hand everything queued to it in one write."""
        self.paused = False
        if self.queue and self.transport is not None:
            pieces = self.queue
            self.clear_queue()
            self.transport.writelines(pieces)

    def clear_queue(self) -> None:
        self.queue = []
        self.queued_msgs = 0
        self.queued_bytes = 0

    def fail_queue(self) -> None:
        if self.queued_msgs:
            log.debug("petcd: dropped %d queued messages to peer %x: connection failed", self.queued_msgs, self.id)
            self.clear_queue()
            self.owner.unreachable(self.id)

    # --- connection life -------------------------------------------------------------------

    def start(self) -> None:
        self._enter(State.CONNECTING)
        self.task = self.owner.loop.create_task(self.run(), name=f"petcd-peer-{self.id:x}")

    async def run(self) -> None:
        """Dial, stay connected while the connection lives, back off (100 ms doubling to 2 s), repeat."""
        loop = self.owner.loop
        backoff = BACKOFF_MIN
        while not self.removed:
            self._enter(State.CONNECTING)
            self.wake.clear()  # an update_peer from here on cuts the next backoff short
            if not self.urls:
                self.fail_queue()
            else:
                url = self.urls[self.url_index % len(self.urls)]
                closed: asyncio.Future[None] = loop.create_future()
                try:
                    host, port, ctx = self.owner.dial_target(url)
                    self.url = url
                    await asyncio.wait_for(
                        loop.create_connection(functools.partial(_Outbound, self, closed), host, port,
                                               ssl=ctx, server_hostname=host if ctx is not None else None),
                        DIAL_TIMEOUT,
                    )
                except (OSError, TimeoutError, TransportError) as exc:  # ssl.SSLError is an OSError
                    self.url_index += 1
                    self.fail_queue()
                    if not self.warned:
                        self.warned = True
                        log.warning("petcd: cannot reach peer %x at %s: %s", self.id, url, exc or type(exc).__name__)
                else:
                    await closed
                    up_since = self.up_since_last
                    if up_since is not None and loop.time() - up_since >= BACKOFF_MAX:
                        backoff = BACKOFF_MIN  # it was a healthy connection: retry soon
            if self.removed:
                return
            self._enter(State.DOWN)
            if not self.wake.is_set():
                try:
                    await asyncio.wait_for(self.wake.wait(), backoff)
                except TimeoutError:
                    pass
            backoff = min(backoff * 2, BACKOFF_MAX)

    def connected(self, proto: _Outbound, transport: asyncio.Transport) -> None:
        if self.removed or self.owner.stopped:
            transport.abort()
            return
        self.proto = proto
        self.transport = transport
        self._enter(State.UP)
        self.paused = False
        self.up_since = self.owner.loop.time()
        self.up_since_last = self.up_since
        self.warned = False
        log.info("petcd: connected to peer %x at %s", self.id, self.url)
        pieces = [Handshake(self.owner.cluster_id, self.owner.local_id, self.id).encode(), *self.queue]
        self.clear_queue()
        transport.writelines(pieces)

    def lost(self, proto: _Outbound, exc: Exception | None) -> None:
        if proto is not self.proto:
            return  # already detached (update_peer, remove_peer, stop)
        self.detach()
        if not self.removed and not self.owner.stopped:
            log.warning("petcd: lost connection to peer %x: %s", self.id, exc or "closed by peer")
            self.owner.unreachable(self.id)

    def detach(self) -> asyncio.Transport | None:
        """Forget the current connection at once (so nothing more is written to it); returns it."""
        transport = self.transport
        self.proto = None
        self.transport = None
        self.up_since = None
        self.paused = False
        self._enter(State.DOWN)
        if self.queued_msgs:
            self.clear_queue()
            self.owner.unreachable(self.id)
        return transport

    def update(self, urls: list[str]) -> None:
        for u in urls:
            self.owner.parse_url(u)
        if urls == self.urls:
            return
        self.urls = list(urls)
        self.url_index = 0
        if self.transport is not None and self.url not in self.urls:
            transport = self.detach()
            assert transport is not None
            transport.close()  # run() sees it end and dials one of the new URLs
        self.wake.set()  # cut a backoff short: the new URLs deserve a try now

    def shutdown(self) -> list[asyncio.Task[None]]:
        """Stop dialing, drop the connection and everything queued; the tasks to await."""
        self.removed = True
        self.clear_queue()
        tasks = list(self.snapshots)
        if self.task is not None:
            tasks.append(self.task)
        for t in tasks:
            t.cancel()
        transport = self.detach()
        if transport is not None:
            transport.abort()
        return tasks

    def backlog(self) -> tuple[int, int]:
        """(messages queued, bytes queued or not yet in the kernel)."""
        buffered = self.transport.get_write_buffer_size() if self.transport is not None else 0
        return self.queued_msgs, self.queued_bytes + buffered

    # --- snapshots -------------------------------------------------------------------------

    def send_snapshot(self, msg: Message) -> None:
        """Send a MsgSnap on a connection of its own; it ends in one owner.report_snapshot."""
        task = self.owner.loop.create_task(self._snapshot_task(msg), name=f"petcd-snapshot-{msg.to:x}")
        self.snapshots.add(task)
        task.add_done_callback(self.snapshots.discard)

    async def _snapshot_task(self, msg: Message) -> None:
        ok = False
        writer: asyncio.StreamWriter | None = None
        index = msg.snapshot.metadata.index if msg.snapshot is not None else 0
        try:
            pieces = snapshot_frame(msg)
            size = sum(len(p) for p in pieces)
            reader, writer = await self._dial_snapshot()
            async with asyncio.timeout(SNAPSHOT_TIMEOUT + size / SNAPSHOT_MIN_RATE):
                writer.write(Handshake(self.owner.cluster_id, self.owner.local_id, self.id).encode())
                for p in pieces:
                    # In slices, draining between them: handing tens of MB to the transport at once
                    # would copy them into its buffer in one go and stall the loop.
                    with memoryview(p) as view:
                        for i in range(0, len(view), _SNAPSHOT_CHUNK):
                            writer.write(view[i : i + _SNAPSHOT_CHUNK])
                            await writer.drain()
                ok = await reader.readexactly(1) == SNAP_ACK
            if ok:
                log.info("petcd: sent snapshot [index %d, %d bytes] to peer %x", index, size, self.id)
            else:
                log.warning("petcd: peer %x answered a snapshot with something other than an ack", self.id)
        except (OSError, TimeoutError, asyncio.IncompleteReadError, TransportError) as exc:
            log.warning("petcd: failed to send snapshot [index %d] to peer %x: %s", index, self.id,
                        exc or type(exc).__name__)
        finally:
            if writer is not None:
                if ok:
                    writer.close()
                else:
                    writer.transport.abort()
        if not self.removed and not self.owner.stopped:
            self.owner.report_snapshot(self.id, ok)

    async def _dial_snapshot(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if not self.urls:
            raise TransportError(f"peer {self.id:x} has no URLs")
        err: BaseException | None = None
        n = len(self.urls)
        for i in range(n):
            host, port, ctx = self.owner.dial_target(self.urls[(self.url_index + i) % n])
            try:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection(host, port, ssl=ctx, server_hostname=host if ctx is not None else None),
                    DIAL_TIMEOUT)
            except (OSError, TimeoutError) as exc:
                err = exc
                continue
            set_nodelay(writer.transport)
            why = self.owner.refused(writer.transport, inbound=False)
            if why is not None:
                writer.transport.abort()
                err = TransportError(why)
                continue
            return reader, writer
        assert err is not None
        raise err

