"""The raft peer transport: long-lived TCP connections that carry raft messages between members.

Each member dials every peer it has messages for and keeps that one connection
open; the connection carries only this member's messages to that peer (the
peer's replies come back on the connection the peer dials). Snapshots travel on
a short-lived connection of their own, so tens of megabytes of snapshot never
sit in front of a heartbeat.

Wire format (plain TCP, big-endian):

- handshake, once per connection, from the dialer: ``b"PETCDRAFT1"``, u64
  cluster id, u64 sender member id, u64 receiver member id. The acceptor
  closes the connection when the cluster id is not its own or the receiver id
  is not its member id.
- then frames: u32 length + an etcd raftpb ``Message``, encoded with its
  type field first (as protobuf encoders write fields in number order), so
  the first two bytes of a frame name its type.
- the acceptor answers each MsgSnap it has delivered with one byte,
  ``SNAP_ACK``, so the sender knows the snapshot arrived. Nothing else ever
  flows from acceptor to dialer.

Guarantees:

- ``send`` never blocks and never queues without bound: per peer at most
  ``max_queue_messages`` messages / ``max_queue_bytes`` bytes wait while the
  connection is coming up or the socket is backed up; beyond that, and
  whenever the peer is down, messages are dropped and ``on_unreachable`` is
  called (at most once per 100 ms per peer). Raft retransmits what was lost.
- messages to one peer leave in the order they were sent, and the messages
  of one ``send`` call for one peer go out in one write.
- received messages are handed to ``on_message`` in the order they were sent
  on each connection; a malformed frame closes that connection only, with a
  logged reason.
- what a peer sends is bounded before it is buffered or parsed (see
  ``_check_head`` and ``_check_fields``): a frame must start with a known
  message type; a snapshot frame may be up to 4 GiB, a MsgApp or MsgProp up
  to ``max_message_bytes`` (64 MiB by default) holding at most
  MAX_ENTRIES_PER_MESSAGE entries and no snapshot, any other message 64 KiB;
  every message's ``from`` must be the member that opened the connection
  (but on what followers forward: a MsgProp or MsgReadIndex names the member
  that made it, which a follower that just lost its leadership forwards
  again, a MsgTransferLeader its transferee), and that member is neither 0
  nor this member. Senders this member does not know are let in: a
  member that is behind does not yet know the members added since, and must
  still hear from a leader among them. What is well-formed on the wire but
  impossible for raft (a term near 2**64, say) is raft's to ignore
  (petcd/raft/bounds.py).
- ``on_unreachable`` is called from a fresh loop callback, never from inside
  ``send``, so the caller may step raft from it.
- each MsgSnap ends in exactly one ``on_snapshot_status(to, ok)``: True once
  the receiver has acked it, False on any failure (no connection, hang-up,
  the receiver's handler raised, timeout); none if the peer is removed or the
  transport stopped meanwhile.
- snapshot data is neither copied on the sending side nor run through
  protobuf on either side (see _snapshot_frame and _decode_snapshot); it is
  written in 1 MiB slices, so a big snapshot does not stall the loop.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import math
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import cast
from urllib.parse import urlsplit

from petcd.proto import raft_pb2
from petcd.raft import Message, MessageType, Snapshot
from petcd.raft.bounds import FORWARDED, MAX_ENTRIES_PER_MESSAGE

log = logging.getLogger("petcd.server.transport")

MAGIC = b"PETCDRAFT1"
# A one-shot request on the peer port: "who is in this cluster?", asked by a
# member joining a running cluster (etcd asks its peers' /members).
MEMBERS_MAGIC = b"PETCDMEMB1"
_HANDSHAKE = struct.Struct(">10sQQQ")
HANDSHAKE_SIZE = _HANDSHAKE.size
_LEN = struct.Struct(">I")
MAX_FRAME = 0xFFFF_FFFF
SNAP_ACK = b"\x01"

BACKOFF_MIN = 0.1
BACKOFF_MAX = 2.0
UNREACHABLE_INTERVAL = 0.1
DIAL_TIMEOUT = 3.0
HANDSHAKE_TIMEOUT = 10.0
# A snapshot transfer may take this long plus one second per SNAPSHOT_MIN_RATE bytes.
SNAPSHOT_TIMEOUT = 30.0
SNAPSHOT_MIN_RATE = 4 << 20
DEFAULT_QUEUE_MESSAGES = 4096
DEFAULT_QUEUE_BYTES = 64 << 20
# Snapshot data at least this big is written straight from the caller's bytes
# object instead of being copied through protobuf (see _snapshot_frame).
_SPLICE_MIN = 64 << 10
# Snapshot data is handed to the socket this much at a time.
_SNAPSHOT_CHUNK = 1 << 20
# Received frames at least this big are parsed through a memoryview rather than a copy.
_VIEW_MIN = 64 << 10
# How an encoded MsgSnap starts: field 1 (type), varint 7.
_MSGSNAP_PREFIX = b"\x08\x07"

# Protobuf keys (field number << 3 | wire type 2) of Message.snapshot, Message.entries and Snapshot.data.
_KEY_MESSAGE_SNAPSHOT = b"\x4a"
_KEY_MESSAGE_ENTRIES = b"\x3a"
_KEY_SNAPSHOT_DATA = b"\x0a"
# Key of Message.type (field 1, varint): every frame starts with it.
_KEY_MESSAGE_TYPE = 0x08

# Frame size limits by message type. Entries travel in MsgApp (at most
# max_size_per_msg bytes of them plus one entry, which may be as big as the
# largest request) and in MsgProp (one forwarded request); snapshots in
# MsgSnap; every other message is a few dozen bytes plus a read-index context.
DEFAULT_MAX_MESSAGE_BYTES = 64 << 20
MAX_CONTROL_FRAME = 64 << 10
# The snapshot frame, apart from its data (metadata: a term, an index, a member list).
MAX_SNAPSHOT_META = 1 << 20
# Entry-carrying frames bigger than this are scanned before parsing, so a frame
# of millions of empty entries is refused instead of parsed into gigabytes of objects.
_SCAN_MIN = 64 << 10
_WIRE_TYPES = frozenset(int(t) for t in MessageType if t != MessageType.MsgHup)
_ENTRY_TYPES = frozenset({int(MessageType.MsgApp), int(MessageType.MsgProp)})


class TransportError(Exception):
    """Base of the peer transport's own failures."""


class BadURLError(TransportError, ValueError):
    """A listen or peer URL the transport cannot use (it wants http://host:port)."""


class FrameError(TransportError):
    """A peer sent bytes that are not a handshake or frame of this protocol."""


@dataclass(slots=True, frozen=True)
class Backlog:
    """What is waiting to go to one peer: queued messages, and bytes not yet in the kernel."""

    messages: int
    bytes: int


def parse_url(url: str) -> tuple[str, int]:
    """(host, port) of an ``http://host:port`` URL; raises BadURLError for anything else."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise BadURLError(f"petcd: bad peer URL {url!r}: {exc}") from None
    if parts.scheme != "http":
        raise BadURLError(f"petcd: peer URL {url!r} must be http://host:port (TLS is not supported)")
    if port is None or parts.hostname is None:
        raise BadURLError(f"petcd: peer URL {url!r} has no host:port")
    return parts.hostname, port


def _varint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _snapshot_frame(msg: Message) -> list[bytes]:
    """The frame of a MsgSnap as pieces to write in order; the last piece may be the snapshot data itself.

    Big snapshot data is not run through protobuf (which would copy it three
    times on the loop): the message is encoded with empty snapshot data, and
    the data follows as a second occurrence of the snapshot field. Protobuf
    parsers merge repeated occurrences of a message field, so the bytes decode
    to exactly ``msg``.
    """
    snap = msg.snapshot
    if snap is None or len(snap.data) < _SPLICE_MIN:
        body = msg.to_bytes()
        if len(body) > MAX_FRAME:
            raise FrameError(f"message of {len(body)} bytes exceeds the frame limit")
        return [_LEN.pack(len(body)), body]
    data = snap.data
    head = dataclasses.replace(msg, snapshot=Snapshot(b"", snap.metadata)).to_bytes()
    inner = _KEY_SNAPSHOT_DATA + _varint(len(data))
    outer = _KEY_MESSAGE_SNAPSHOT + _varint(len(inner) + len(data))
    size = len(head) + len(outer) + len(inner) + len(data)
    if size > MAX_FRAME:
        raise FrameError(f"snapshot message of {size} bytes exceeds the frame limit")
    return [_LEN.pack(size), head + outer + inner, data]


def _read_varint(buf: bytearray, pos: int, end: int) -> tuple[int, int]:
    """(value, position after it) of the protobuf varint at pos."""
    value = shift = 0
    while pos < end and shift < 64:
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, pos
        shift += 7
    raise FrameError("bad frame: truncated or overlong varint")


def _skip_field(buf: bytearray, pos: int, end: int, wire_type: int) -> int:
    """The position after the value of a field of wire_type that starts at pos."""
    if wire_type == 0:
        _, pos = _read_varint(buf, pos, end)
    elif wire_type == 1:
        pos += 8
    elif wire_type == 2:
        n, pos = _read_varint(buf, pos, end)
        pos += n
    elif wire_type == 5:
        pos += 4
    else:
        raise FrameError(f"bad frame: wire type {wire_type}")
    if pos > end:
        raise FrameError("bad frame: truncated field")
    return pos


def _decode_snapshot(buf: bytearray, start: int, stop: int) -> Message:
    """Decode a big MsgSnap frame copying its snapshot data once, not three times.

    The counterpart of _snapshot_frame: the frame is re-encoded without the
    data (a few hundred bytes) and parsed by protobuf, and the data is copied
    straight out of the receive buffer. For 20 MiB this keeps the loop stall
    to a few milliseconds instead of tens.
    """
    rest: list[bytes] = []
    data: tuple[int, int] | None = None
    pos = start
    meta = 0  # bytes of the frame that are not snapshot data
    while pos < stop:
        if meta > MAX_SNAPSHOT_META:
            raise FrameError(f"bad frame: a snapshot message with more than {MAX_SNAPSHOT_META} bytes besides its data")
        field_start = pos
        key, pos = _read_varint(buf, pos, stop)
        if key != _KEY_MESSAGE_SNAPSHOT[0]:
            pos = _skip_field(buf, pos, stop, key & 7)
            meta += pos - field_start
            if meta <= MAX_SNAPSHOT_META:
                rest.append(bytes(buf[field_start:pos]))
            continue
        n, pos = _read_varint(buf, pos, stop)
        sub_stop = pos + n
        if sub_stop > stop:
            raise FrameError("bad frame: truncated snapshot")
        inner: list[bytes] = []
        while pos < sub_stop:
            inner_start = pos
            key, pos = _read_varint(buf, pos, sub_stop)
            if key == _KEY_SNAPSHOT_DATA[0]:
                n, pos = _read_varint(buf, pos, sub_stop)
                if pos + n > sub_stop:
                    raise FrameError("bad frame: truncated snapshot data")
                data = (pos, pos + n)  # a repeated scalar field: the last one wins, as in protobuf
                pos += n
            else:
                pos = _skip_field(buf, pos, sub_stop, key & 7)
                meta += pos - inner_start
                if meta > MAX_SNAPSHOT_META:
                    raise FrameError(
                        f"bad frame: a snapshot message with more than {MAX_SNAPSHOT_META} bytes besides its data")
                inner.append(bytes(buf[inner_start:pos]))
        body = b"".join(inner)
        rest.append(_KEY_MESSAGE_SNAPSHOT + _varint(len(body)) + body)
    pb = raft_pb2.Message()
    try:
        pb.ParseFromString(b"".join(rest))
        msg = Message.from_pb(pb)
    except Exception as exc:  # protobuf's DecodeError, or ValueError for an unknown enum value
        raise FrameError(f"bad frame: {exc}") from None
    if data is not None and msg.snapshot is not None:
        with memoryview(buf) as whole, whole[data[0] : data[1]] as view:
            msg.snapshot.data = bytes(view)
    return msg


def _frame_limit(kind: int, max_message_bytes: int) -> int:
    """The largest frame a message of type kind may take."""
    if kind == MessageType.MsgSnap:
        return MAX_FRAME
    if kind in _ENTRY_TYPES:
        return max_message_bytes
    return MAX_CONTROL_FRAME


def _check_head(buf: bytearray, start: int, size: int, max_message_bytes: int) -> None:
    """Raise FrameError unless a frame of size bytes whose body starts at start
    begins with a known message type and is within that type's size limit."""
    if size < 2:
        raise FrameError(f"bad frame: {size} bytes cannot hold a raft message")
    if buf[start] != _KEY_MESSAGE_TYPE or buf[start + 1] not in _WIRE_TYPES:
        raise FrameError(f"bad frame: does not start with a raft message type (starts {bytes(buf[start:start + 2])!r})")
    kind = buf[start + 1]
    limit = _frame_limit(kind, max_message_bytes)
    if size > limit:
        raise FrameError(f"bad frame: a {MessageType(kind).name} of {size} bytes (at most {limit})")


def _check_fields(buf: bytearray, start: int, stop: int) -> None:
    """Raise FrameError if a big MsgApp/MsgProp frame holds more than
    MAX_ENTRIES_PER_MESSAGE entries or a snapshot, before protobuf sees it.

    Counting key bytes is a cheap upper bound (the bytes may also occur inside
    values); only when it is inconclusive are the top-level fields walked."""
    if buf.count(_KEY_MESSAGE_ENTRIES, start, stop) <= MAX_ENTRIES_PER_MESSAGE and \
            buf.count(_KEY_MESSAGE_SNAPSHOT, start, stop) == 0:
        return
    entries = 0
    pos = start
    while pos < stop:
        key, pos = _read_varint(buf, pos, stop)
        if key == _KEY_MESSAGE_ENTRIES[0]:
            entries += 1
            if entries > MAX_ENTRIES_PER_MESSAGE:
                raise FrameError(f"bad frame: more than {MAX_ENTRIES_PER_MESSAGE} entries")
        elif key == _KEY_MESSAGE_SNAPSHOT[0]:
            raise FrameError("bad frame: a snapshot in a message that is not a MsgSnap")
        pos = _skip_field(buf, pos, stop, key & 7)


def _set_nodelay(transport: asyncio.BaseTransport) -> None:
    sock = transport.get_extra_info("socket")
    if sock is None:
        return
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    except (OSError, AttributeError):
        pass  # not a TCP socket; latency is all we lose


class _State(Enum):
    IDLE = "idle"  # never needed yet: connect lazily on the first message
    CONNECTING = "connecting"  # dialing; messages wait in the bounded queue
    UP = "up"  # connected; messages are written at once (or queued while the socket is backed up)
    DOWN = "down"  # backing off after a failure; messages are dropped


class _Outbound(asyncio.Protocol):
    """The dialer's side of the long-lived connection to one peer; it only writes."""

    def __init__(self, peer: _Peer, closed: asyncio.Future[None]) -> None:
        self.peer = peer
        self.closed = closed
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it
        self.transport = cast(asyncio.Transport, transport)
        _set_nodelay(transport)
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


class _Peer:
    """One remote member as the sender sees it: its URLs, connection, bounded queue and dialing task."""

    __slots__ = (
        "owner", "id", "urls", "url", "url_index", "state", "proto", "transport", "paused",
        "queue", "queued_msgs", "queued_bytes", "up_since", "task", "wake", "removed", "snapshots",
        "warned", "up_since_last",
    )

    def __init__(self, owner: PeerTransport, member_id: int, urls: list[str]) -> None:
        for u in urls:
            parse_url(u)
        self.owner = owner
        self.id = member_id
        self.urls = list(urls)
        self.url = ""
        self.url_index = 0
        self.state = _State.IDLE
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

    # --- sending ---------------------------------------------------------------------------

    def enqueue(self, msgs: list[Message]) -> None:
        state = self.state
        if state is _State.UP and not self.paused and not self.queue:
            pieces: list[bytes] = []
            append, pack = pieces.append, _LEN.pack
            limit = self.owner.max_message_bytes
            for m in msgs:
                body = m.to_bytes()
                n = len(body)
                if n > _frame_limit(m.type, limit):
                    log.error("petcd: dropping a %s of %d bytes to peer %x: too big to frame", m.type.name, n, self.id)
                    continue
                append(pack(n))
                append(body)
            assert self.transport is not None
            self.transport.writelines(pieces)
            return
        if state is _State.DOWN:
            self.owner.unreachable(self.id)
            return
        if state is _State.IDLE:
            self.start()
        dropped = 0
        for m in msgs:
            if self.queued_msgs >= self.owner.max_queue_messages or self.queued_bytes >= self.owner.max_queue_bytes:
                dropped += 1
                continue
            body = m.to_bytes()
            if len(body) > _frame_limit(m.type, self.owner.max_message_bytes):
                log.error("petcd: dropping a %s of %d bytes to peer %x: too big to frame",
                          m.type.name, len(body), self.id)
                continue
            self.queue.append(_LEN.pack(len(body)))
            self.queue.append(body)
            self.queued_msgs += 1
            self.queued_bytes += 4 + len(body)
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
        self.state = _State.CONNECTING
        self.task = self.owner.loop.create_task(self.run(), name=f"petcd-peer-{self.id:x}")

    async def run(self) -> None:
        """Dial, stay connected while the connection lives, back off (100 ms doubling to 2 s), repeat."""
        loop = self.owner.loop
        backoff = BACKOFF_MIN
        while not self.removed:
            self.state = _State.CONNECTING
            self.wake.clear()  # an update_peer from here on cuts the next backoff short
            if not self.urls:
                self.fail_queue()
            else:
                url = self.urls[self.url_index % len(self.urls)]
                closed: asyncio.Future[None] = loop.create_future()
                try:
                    host, port = parse_url(url)
                    self.url = url
                    await asyncio.wait_for(
                        loop.create_connection(functools.partial(_Outbound, self, closed), host, port), DIAL_TIMEOUT
                    )
                except (OSError, TimeoutError, TransportError) as exc:
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
            self.state = _State.DOWN
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
        self.state = _State.UP
        self.paused = False
        self.up_since = self.owner.loop.time()
        self.up_since_last = self.up_since
        self.warned = False
        log.info("petcd: connected to peer %x at %s", self.id, self.url)
        pieces = [_HANDSHAKE.pack(MAGIC, self.owner.cluster_id, self.owner.local_id, self.id), *self.queue]
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
        self.state = _State.DOWN
        if self.queued_msgs:
            self.clear_queue()
            self.owner.unreachable(self.id)
        return transport

    def update(self, urls: list[str]) -> None:
        for u in urls:
            parse_url(u)
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

    def backlog(self) -> Backlog:
        buffered = self.transport.get_write_buffer_size() if self.transport is not None else 0
        return Backlog(self.queued_msgs, self.queued_bytes + buffered)


class _Inbound(asyncio.Protocol):
    """The acceptor's side of one connection: check the handshake, then decode frames and deliver them."""

    def __init__(self, owner: PeerTransport) -> None:
        self.owner = owner
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.peer_id: int | None = None  # set once the handshake is accepted
        self.need = HANDSHAKE_SIZE  # bytes buf must hold before parsing is worth trying
        self.closed = False
        self.timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        _set_nodelay(transport)
        self.owner.inbound.add(self)
        self.timer = self.owner.loop.call_later(HANDSHAKE_TIMEOUT, self.handshake_timeout)

    def handshake_timeout(self) -> None:
        if self.peer_id is None:
            log.warning("petcd: peer connection from %s sent no handshake in %.0f s; closing",
                        self.remote(), HANDSHAKE_TIMEOUT)
            self.close()

    def remote(self) -> str:
        addr = self.transport.get_extra_info("peername") if self.transport is not None else None
        return f"{addr[0]}:{addr[1]}" if isinstance(addr, tuple) else str(addr)

    def close(self) -> None:
        self.closed = True
        self.buf = bytearray()
        if self.transport is not None:
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        self.buf += data
        if self.peer_id is None and self.buf[: len(MEMBERS_MAGIC)] == MEMBERS_MAGIC:
            self.answer_members()
            return
        if self.peer_id is None and self.buf[: len(MAGIC)] != MAGIC[: len(self.buf)] and \
                self.buf[: len(MEMBERS_MAGIC)] != MEMBERS_MAGIC[: len(self.buf)]:
            log.warning("petcd: closing connection from %s: not a petcd raft peer (bad magic)", self.remote())
            self.close()
            return
        if len(self.buf) < self.need:
            return
        try:
            self.parse()
        except FrameError as exc:
            log.warning("petcd: closing connection from peer %x at %s: %s", self.peer_id or 0, self.remote(), exc)
            self.close()

    def answer_members(self) -> None:
        info = self.owner.members_info
        if self.transport is not None and info is not None:
            self.transport.write(info())
        self.close()

    def parse(self) -> None:
        buf = self.buf
        off = 0
        if self.peer_id is None:
            _, cluster_id, from_id, to_id = _HANDSHAKE.unpack_from(buf, 0)
            owner = self.owner
            if cluster_id != owner.cluster_id:
                log.error("petcd: peer %x is in cluster %x, not %x", from_id, cluster_id, owner.cluster_id)
                self.close()
                return
            if to_id != owner.local_id:
                log.error("petcd: peer %x dialed member %x, but this is member %x (cluster %x)",
                          from_id, to_id, owner.local_id, owner.cluster_id)
                self.close()
                return
            if from_id in (0, owner.local_id):
                log.error("petcd: closing connection from %s: its handshake claims to come from member %x",
                          self.remote(), from_id)
                self.close()
                return
            self.peer_id = from_id
            if self.timer is not None:
                self.timer.cancel()
            log.debug("petcd: peer %x connected from %s", from_id, self.remote())
            off = HANDSHAKE_SIZE
        end = len(buf)
        need = 4
        max_message_bytes = self.owner.max_message_bytes
        while end - off >= 4:
            (size,) = _LEN.unpack_from(buf, off)
            if size >= 2 and end - off < 6:
                need = 6  # the type, to know the limit before buffering the rest
                break
            _check_head(buf, off + 4, size, max_message_bytes)
            stop = off + 4 + size
            if stop > end:
                need = 4 + size
                break
            msg = self.decode(buf, off + 4, stop)
            if msg.from_ != self.peer_id and msg.type not in FORWARDED:
                raise FrameError(f"bad frame: a {msg.type.name} from member {msg.from_:x} on {self.peer_id:x}'s connection")
            off = stop
            if not self.owner.deliver(msg, self) and msg.type == MessageType.MsgSnap:
                # No ack is coming: hang up so the sender reports the snapshot failed now, not at its timeout.
                self.close()
            if self.closed or self.owner.stopped:
                return
        del buf[:off]
        self.need = need

    @staticmethod
    def decode(buf: bytearray, start: int, stop: int) -> Message:
        if stop - start >= _VIEW_MIN and buf[start : start + 2] == _MSGSNAP_PREFIX:
            return _decode_snapshot(buf, start, stop)
        if stop - start > _SCAN_MIN:
            _check_fields(buf, start, stop)
        pb = raft_pb2.Message()
        try:
            if stop - start < _VIEW_MIN:
                pb.ParseFromString(buf[start:stop])  # type: ignore[arg-type]  # a small copy beats a view
            else:
                # A view, not a slice: the frame may be megabytes. The views are released on the way
                # out, so buf can be resized after.
                with memoryview(buf) as whole, whole[start:stop] as frame:
                    pb.ParseFromString(frame)  # type: ignore[arg-type]
            return Message.from_pb(pb)
        except Exception as exc:  # protobuf's DecodeError, or ValueError for an unknown enum value
            raise FrameError(f"bad frame: {exc}") from None

    def ack_snapshot(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.write(SNAP_ACK)

    def eof_received(self) -> bool:
        if self.buf and not self.closed:
            log.warning("petcd: peer %x at %s hung up in the middle of a frame", self.peer_id or 0, self.remote())
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.buf = bytearray()
        if self.timer is not None:
            self.timer.cancel()
        self.owner.inbound.discard(self)


class PeerTransport:
    """Long-lived connections between members carrying raft messages."""

    def __init__(
        self,
        local_id: int,
        cluster_id: int,
        listen_urls: list[str],
        on_message: Callable[[Message], None],
        on_unreachable: Callable[[int], None] = lambda _id: None,
        on_snapshot_status: Callable[[int, bool], None] = lambda _id, _ok: None,
        *,
        members_info: Callable[[], bytes] | None = None,
        max_queue_messages: int = DEFAULT_QUEUE_MESSAGES,
        max_queue_bytes: int = DEFAULT_QUEUE_BYTES,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    ) -> None:
        for u in listen_urls:
            parse_url(u)
        self.local_id = local_id
        self.cluster_id = cluster_id
        self.listen_urls = list(listen_urls)
        self.on_message = on_message
        self.on_unreachable = on_unreachable
        self.on_snapshot_status = on_snapshot_status
        self.members_info = members_info
        self.max_queue_messages = max_queue_messages
        self.max_queue_bytes = max_queue_bytes
        self.max_message_bytes = max_message_bytes  # the largest MsgApp/MsgProp frame accepted from a peer
        self.stopped = False
        self.inbound: set[_Inbound] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._servers: list[asyncio.Server] = []
        self._peers: dict[int, _Peer] = {}
        self._last_unreachable: dict[int, float] = {}

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        return self._loop

    async def start(self) -> None:
        """Listen on every listen URL; raises OSError if one cannot be bound (nothing is left listening then)."""
        loop = self.loop
        try:
            for url in self.listen_urls:
                host, port = parse_url(url)
                server = await loop.create_server(lambda: _Inbound(self), host, port, reuse_address=True)
                self._servers.append(server)
                log.info("petcd: listening for peers on %s", url)
        except BaseException:
            for s in self._servers:
                s.close()
            self._servers.clear()
            raise

    @property
    def addresses(self) -> list[tuple[str, int]]:
        """The (host, port) pairs actually listened on (useful when a listen URL asked for port 0)."""
        out = []
        for server in self._servers:
            for sock in server.sockets:
                name = sock.getsockname()
                out.append((str(name[0]), int(name[1])))
        return out

    def add_peer(self, member_id: int, urls: list[str]) -> None:
        """Know a peer by its URLs; the connection is made when the first message for it is sent."""
        if member_id in self._peers:
            self.update_peer(member_id, urls)
            return
        self._peers[member_id] = _Peer(self, member_id, urls)

    def update_peer(self, member_id: int, urls: list[str]) -> None:
        """Give a peer new URLs; an open connection to a URL no longer listed is closed and redialed."""
        peer = self._peers.get(member_id)
        if peer is None:
            self.add_peer(member_id, urls)
        else:
            peer.update(urls)

    def remove_peer(self, member_id: int) -> None:
        """Forget a peer: close its connection, drop what is queued, abandon snapshots in flight."""
        peer = self._peers.pop(member_id, None)
        if peer is not None:
            peer.shutdown()
        self._last_unreachable.pop(member_id, None)

    def send(self, msgs: list[Message]) -> None:
        """Hand messages to their peers' connections; never blocks. MsgSnap goes on its own connection."""
        if self.stopped:
            return
        if len(msgs) == 1 and msgs[0].type != MessageType.MsgSnap:
            self._send_to(msgs[0].to, msgs)
            return
        groups: dict[int, list[Message]] = {}
        for m in msgs:
            if m.type == MessageType.MsgSnap:
                self._send_snapshot(m)
                continue
            group = groups.get(m.to)
            if group is None:
                groups[m.to] = [m]
            else:
                group.append(m)
        for to, group in groups.items():
            self._send_to(to, group)

    def _send_to(self, to: int, msgs: list[Message]) -> None:
        peer = self._peers.get(to)
        if peer is None:
            log.debug("petcd: dropped %d messages to unknown peer %x", len(msgs), to)
            self.unreachable(to)
            return
        peer.enqueue(msgs)

    def active_since(self, member_id: int) -> float | None:
        """loop.time() when the current connection to the peer came up; None while it is down."""
        peer = self._peers.get(member_id)
        return peer.up_since if peer is not None else None

    def backlog(self, member_id: int) -> Backlog:
        """How much is waiting to go to a peer (zero for an unknown one)."""
        peer = self._peers.get(member_id)
        return peer.backlog() if peer is not None else Backlog(0, 0)

    async def stop(self) -> None:
        """Stop listening, close every connection, abandon queued messages and snapshots in flight."""
        if self.stopped:
            return
        self.stopped = True
        for server in self._servers:
            server.close()
        tasks: list[asyncio.Task[None]] = []
        for peer in self._peers.values():
            tasks.extend(peer.shutdown())
        for conn in list(self.inbound):
            if conn.transport is not None:
                conn.transport.abort()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        for server in self._servers:
            await server.wait_closed()
        self._servers.clear()

    # --- internals used by the connections ---------------------------------------------------

    def unreachable(self, member_id: int) -> None:
        """Tell the caller, soon and at most once per 100 ms per peer, that messages to it were dropped."""
        now = self.loop.time()
        if now - self._last_unreachable.get(member_id, -math.inf) < UNREACHABLE_INTERVAL:
            return
        self._last_unreachable[member_id] = now
        self.loop.call_soon(self._call_unreachable, member_id)

    def _call_unreachable(self, member_id: int) -> None:
        if self.stopped:
            return
        try:
            self.on_unreachable(member_id)
        except Exception:
            log.exception("petcd: on_unreachable(%x) failed", member_id)

    def deliver(self, msg: Message, conn: _Inbound) -> bool:
        """Hand one received message to on_message (acking a MsgSnap); False if it was dropped or failed."""
        if msg.to != self.local_id:
            log.debug("petcd: dropped a %s for member %x from peer %x: this is member %x",
                      msg.type.name, msg.to, msg.from_, self.local_id)
            return False
        try:
            self.on_message(msg)
        except Exception:
            log.exception("petcd: handling a %s from peer %x failed", msg.type.name, msg.from_)
            return False
        if msg.type == MessageType.MsgSnap:
            conn.ack_snapshot()
        return True

    def _send_snapshot(self, msg: Message) -> None:
        peer = self._peers.get(msg.to)
        if peer is None:
            log.warning("petcd: cannot send a snapshot to unknown peer %x", msg.to)
            self.unreachable(msg.to)
            self.loop.call_soon(self._report_snapshot, msg.to, False)
            return
        task = self.loop.create_task(self._snapshot_task(peer, msg), name=f"petcd-snapshot-{msg.to:x}")
        peer.snapshots.add(task)
        task.add_done_callback(peer.snapshots.discard)

    async def _snapshot_task(self, peer: _Peer, msg: Message) -> None:
        ok = False
        writer: asyncio.StreamWriter | None = None
        index = msg.snapshot.metadata.index if msg.snapshot is not None else 0
        try:
            pieces = _snapshot_frame(msg)
            size = sum(len(p) for p in pieces)
            reader, writer = await self._dial_snapshot(peer)
            async with asyncio.timeout(SNAPSHOT_TIMEOUT + size / SNAPSHOT_MIN_RATE):
                writer.write(_HANDSHAKE.pack(MAGIC, self.cluster_id, self.local_id, peer.id))
                for p in pieces:
                    # In slices, draining between them: handing tens of MB to the transport at once
                    # would copy them into its buffer in one go and stall the loop.
                    with memoryview(p) as view:
                        for i in range(0, len(view), _SNAPSHOT_CHUNK):
                            writer.write(view[i : i + _SNAPSHOT_CHUNK])
                            await writer.drain()
                ok = await reader.readexactly(1) == SNAP_ACK
            if ok:
                log.info("petcd: sent snapshot [index %d, %d bytes] to peer %x", index, size, peer.id)
            else:
                log.warning("petcd: peer %x answered a snapshot with something other than an ack", peer.id)
        except (OSError, TimeoutError, asyncio.IncompleteReadError, TransportError) as exc:
            log.warning("petcd: failed to send snapshot [index %d] to peer %x: %s", index, peer.id,
                        exc or type(exc).__name__)
        finally:
            if writer is not None:
                if ok:
                    writer.close()
                else:
                    writer.transport.abort()
        if not peer.removed and not self.stopped:
            self._report_snapshot(peer.id, ok)

    async def _dial_snapshot(self, peer: _Peer) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if not peer.urls:
            raise TransportError(f"peer {peer.id:x} has no URLs")
        err: BaseException | None = None
        n = len(peer.urls)
        for i in range(n):
            host, port = parse_url(peer.urls[(peer.url_index + i) % n])
            try:
                reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), DIAL_TIMEOUT)
            except (OSError, TimeoutError) as exc:
                err = exc
                continue
            _set_nodelay(writer.transport)
            return reader, writer
        assert err is not None
        raise err

    def _report_snapshot(self, member_id: int, ok: bool) -> None:
        try:
            self.on_snapshot_status(member_id, ok)
        except Exception:
            log.exception("petcd: on_snapshot_status(%x, %s) failed", member_id, ok)


async def fetch_members(peer_urls: list[str], timeout: float = 5.0) -> bytes:
    """Ask the first peer that answers for its cluster's member list (the
    bytes its server's members_info gave); TransportError if none answers."""
    errors = []
    for url in peer_urls:
        host, port = parse_url(url)
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
            try:
                writer.write(MEMBERS_MAGIC)
                await writer.drain()
                data = await asyncio.wait_for(reader.read(), timeout)
            finally:
                writer.close()
            if data:
                return data
            errors.append(f"{url}: no answer")
        except (OSError, TimeoutError) as exc:
            errors.append(f"{url}: {exc}")
    raise TransportError("could not get the member list from any peer (" + "; ".join(errors) + ")")
