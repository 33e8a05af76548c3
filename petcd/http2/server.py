"""The client port: a listener that binds every address up front, decides
per connection from its first bytes what it speaks, and serves gRPC over
HTTP/2 (connection.py + grpc.py) to handlers registered by method path.

- Unary handlers are coroutines. One that finishes without waiting (a
  serializable read) is answered inside the same data callback, with no task
  created; one that waits is parked on a task.
- Server-streaming and bidirectional handlers are async generators; a bidi
  handler reads the client's messages from an async iterator, which ends when
  the client half-closes without ending the server's side.
- A connection whose peer does not read stops being read (pause_reading on
  pause_writing), and streams wait while their DATA is held back by flow
  control, so a slow client costs bounded memory.
- Keepalive as grpc-go enforces it (min time between client pings, GOAWAY
  ENHANCE_YOUR_CALM "too_many_pings"), and server pings with a timeout.
- ``stop(grace)``: GOAWAY, calls finish (or are cancelled after grace), close.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import resource
import socket
import ssl
import time
import types
from collections import deque
from collections.abc import Callable, Generator, Iterable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, NoReturn, cast
from urllib.parse import urlsplit

from petcd.http2 import connection as h2
from petcd.http2 import frames
from petcd.http2.grpc import (
    DECOMPRESSORS,
    OK_TRAILERS,
    RESPONSE_HEADERS,
    MessageReader,
    Messages,
    RpcError,
    StatusCode,
    frame_message,
    frame_messages,
    http_error,
    metadata,
    parse_timeout,
    trailers,
    trailers_only,
)

log = logging.getLogger("petcd.http2")

# A stream's unsent DATA above which its writer waits (flow control or a slow
# socket), and below which it resumes.
STREAM_HIGH_WATER = 256 * 1024
# Decoded request messages a bidi call holds for its handler at most; while
# it holds this many (or this many bytes), what else arrives stays raw, as
# received, and is not credited back to the client, so the client is held
# by flow control and the server holds at most a stream window of raw bytes
# (a flood of tiny requests would otherwise become a flood of objects).
QUEUE_ITEMS = 64
# A connection's streamed messages are written at most once per this many
# seconds while they keep coming (the first after a pause goes at once, and
# so does the first a handler yields after taking a message of its client's:
# a keep-alive's answer must not wait out the tick).
STREAM_COALESCE = 0.001
# A PING ACK that arrives with requests still running waits at most this
# long for their responses to carry it (grpc-go clients send a BDP ping with
# almost every request: one write per request instead of two).
PING_ACK_DELAY = 0.002
QUEUE_BYTES = 1 << 20
# File descriptors kept free for everything but client connections.
FD_RESERVE = 128  # as petcd/cli/limits.py STORAGE_FD_RESERVE: storage and peers, never clients
HTTP1_HEAD_LIMIT = 16 * 1024


class Kind(Enum):
    UNARY = "unary"
    SERVER_STREAM = "server_stream"
    BIDI = "bidi"


@dataclass(frozen=True)
class Method:
    """A registered RPC: how to decode its request, encode its responses,
    and the handler (a coroutine function for UNARY, an async generator
    function otherwise) called as handler(request_or_iterator, context)."""

    kind: Kind
    decode: Callable[[bytes], Any]
    encode: Callable[[Any], bytes]
    handler: Callable[[Any, CallContext], Any]


@dataclass(frozen=True)
class Keepalive:
    """etcd's --grpc-keepalive-* flags (seconds)."""

    min_time: float = 5.0
    interval: float = 7200.0
    timeout: float = 20.0
    permit_without_stream: bool = False


# grpc-go: pings from an idle client are expected no more often than this
_IDLE_PING_MIN = 7200.0
_MAX_PING_STRIKES = 2


def _only_ping_acks(out: list[bytes]) -> bool:
    """Whether the queued frames are PING ACKs alone (and there are some)."""
    return bool(out) and all(len(b) == 17 and b[3] == frames.PING for b in out)


def _client_cn(cert: Any) -> str:
    """The subject common name of a verified peer certificate (ssl's
    getpeercert() form), or ""."""
    if not isinstance(cert, dict):
        return ""
    for rdn in cert.get("subject", ()):
        for name, value in rdn:
            if name == "commonName":
                return str(value)
    return ""


class CallContext:
    """What a handler sees of its call: metadata, deadline, peer; and
    ``abort`` to end it with a status."""

    __slots__ = ("headers", "_metadata", "deadline", "peer", "cancelled", "client_cn")

    def __init__(self, headers: list[tuple[bytes, bytes]], deadline: float | None, peer: Any,
                 client_cn: str = "") -> None:
        self.headers = headers
        self._metadata: list[tuple[str, str | bytes]] | None = None
        self.deadline = deadline  # loop.time() by which the call must end, or None
        self.peer = peer
        self.cancelled = False
        # the common name of the client's verified TLS certificate, "" without one
        self.client_cn = client_cn

    def invocation_metadata(self) -> list[tuple[str, str | bytes]]:
        if self._metadata is None:
            self._metadata = metadata(self.headers)
        return self._metadata

    def metadata_value(self, key: str) -> str | bytes | None:
        """The last value of a metadata key, or None."""
        found: str | bytes | None = None
        for k, v in self.invocation_metadata():
            if k == key:
                found = v
        return found

    def time_remaining(self) -> float | None:
        if self.deadline is None:
            return None
        return max(0.0, self.deadline - asyncio.get_running_loop().time())

    def abort(self, code: StatusCode, message: str = "") -> NoReturn:
        raise RpcError(code, message)


@types.coroutine
def _resume(coro: Any, pending: Any) -> Generator[Any, None, Any]:
    """Drive a coroutine that was started by hand (send(None)) and is
    waiting on ``pending`` from inside a task, exactly as if the task had
    run it from the start."""
    while True:
        try:
            yield pending
        except BaseException as exc:  # cancellation thrown into the task
            try:
                pending = coro.throw(exc)
            except StopIteration as stop:
                return stop.value
            continue
        try:
            pending = coro.send(None)
        except StopIteration as stop:
            return stop.value


class _Requests:
    """The client's messages on a bidi call, as an async iterator; ends when
    the client half-closes."""

    __slots__ = ("call", "items", "closed", "waiter")

    def __init__(self, call: _Call) -> None:
        self.call = call
        self.items: deque[tuple[Any, int]] = deque()
        self.closed = False
        self.waiter: asyncio.Future[None] | None = None

    def push(self, item: Any, size: int) -> None:
        self.items.append((item, size))
        self._wake()

    def close(self) -> None:
        self.closed = True
        self._wake()

    def _wake(self) -> None:
        w = self.waiter
        if w is not None and not w.done():
            w.set_result(None)

    def __aiter__(self) -> _Requests:
        return self

    async def __anext__(self) -> Any:
        while not self.items:
            if self.closed:
                raise StopAsyncIteration
            self.waiter = asyncio.get_running_loop().create_future()
            try:
                await self.waiter
            finally:
                self.waiter = None
        item, size = self.items.popleft()
        self.call.consumed(size)
        return item


class _Call:
    """One stream's call."""

    __slots__ = (
        "proto",
        "sid",
        "method",
        "ctx",
        "reader",
        "task",
        "timer",
        "headers_sent",
        "done",
        "requests",
        "queued",
        "raw",
        "raw_end",
        "drain_waiter",
        "started",
        "answering",
    )

    def __init__(self, proto: H2Protocol, sid: int, method: Method, ctx: CallContext, reader: MessageReader) -> None:
        self.proto = proto
        self.sid = sid
        self.method = method
        self.ctx = ctx
        self.reader = reader
        self.task: asyncio.Task[None] | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.headers_sent = False
        self.done = False
        self.requests: _Requests | None = _Requests(self) if method.kind is Kind.BIDI else None
        self.queued = 0  # bytes of decoded request messages not yet taken by the handler
        self.raw: deque[tuple[bytes, int]] = deque()  # DATA (and its flow length) not parsed yet
        self.raw_end = False  # the client's END_STREAM came behind the raw DATA
        self.drain_waiter: asyncio.Future[None] | None = None
        self.started = False
        self.answering = False  # the handler took a request message and has yielded nothing since

    def full(self) -> bool:
        requests = self.requests
        return requests is not None and (len(requests.items) >= QUEUE_ITEMS or self.queued >= QUEUE_BYTES)

    def consumed(self, size: int) -> None:
        self.queued -= size
        self.answering = True
        if (self.raw or self.reader.partial) and not self.full():
            self.proto.parse_raw(self)
            self.proto.schedule_flush()

    def wake_drain(self) -> None:
        w = self.drain_waiter
        if w is not None and not w.done():
            w.set_result(None)


class H2Protocol(asyncio.Protocol):
    """gRPC over one HTTP/2 connection."""

    def __init__(self, port: ClientPort) -> None:
        self.port = port
        self.loop = port.loop
        self.conn = h2.H2Connection(port.settings)
        self.calls: dict[int, _Call] = {}
        self.transport: asyncio.Transport | None = None
        self.peer: Any = None
        self.client_cn = ""
        self.paused = False  # the transport's write buffer is over its high-water mark
        self.flush_handle: asyncio.Handle | None = None  # the pending flush
        self.flush_deferred = False  # the pending flush waits for the stream tick
        self.flush_waiters: list[asyncio.Future[None]] = []  # streams waiting for the next flush
        self.ack_timer_pending = False  # a PING ACK waits for a response write, at most PING_ACK_DELAY
        self.last_flush = 0.0  # loop.time() of the last scheduled flush
        self.closing = False
        self.closed = False
        self.draining: list[_Call] = []
        self.ping_strikes = 0
        self.last_client_ping = -1e18
        self.reset_strikes = False
        self.last_read = time.monotonic()
        self.keepalive_timer: asyncio.TimerHandle | None = None
        self.ping_timeout: asyncio.TimerHandle | None = None

    # -- asyncio callbacks ----------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.peer = transport.get_extra_info("peername")
        self.client_cn = _client_cn(transport.get_extra_info("peercert"))
        self.port.protocols.add(self)
        self.conn.initiate()
        self._write()
        ka = self.port.keepalive
        if ka.interval > 0:
            self.keepalive_timer = self.loop.call_later(ka.interval, self._keepalive)

    def data_received(self, data: bytes) -> None:
        self.last_read = time.monotonic()
        events = self.conn.receive_data(data)
        for ev in events:
            t = type(ev)
            if t is h2.DataReceived:
                self._on_data(ev)  # type: ignore[arg-type]
            elif t is h2.RequestReceived:
                self._on_request(ev)  # type: ignore[arg-type]
            else:
                self._on_other(ev)
        if self.calls and not self.closing and _only_ping_acks(self.conn.out):
            # its own timer: schedule_flush's flag must not hold responses back
            if not self.ack_timer_pending:
                self.ack_timer_pending = True
                self.loop.call_later(PING_ACK_DELAY, self._flush_ping_acks)
            return
        self._write()

    def pause_writing(self) -> None:
        self.paused = True
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        self.paused = False
        if self.transport is not None and not self.closed:
            self.transport.resume_reading()
        self._wake_drains()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        for t in (self.keepalive_timer, self.ping_timeout):
            if t is not None:
                t.cancel()
        for call in list(self.calls.values()):
            self._abandon(call)
        self.calls.clear()
        self.port.protocols.discard(self)
        self.port.connection_closed()

    # -- output -----------------------------------------------------------------------

    def _write(self) -> None:
        data = self.conn.data_to_send()
        if data and not self.closed and self.transport is not None:
            self.transport.write(data)
        if self.closing and not self.calls and not self.closed and self.transport is not None:
            self.transport.close()

    def schedule_flush(self, stream: bool = False) -> bool:
        """Write what is queued soon: calls that finish in the same loop
        iteration share one write. Streamed messages (watch events) that
        come faster than one write per STREAM_COALESCE seconds wait for the
        next such tick, so a busy stream costs a write per tick, not one
        per revision (a write is a syscall, the dearest thing here). Any
        other write (a unary answer; a streamed message that answers one its
        stream's handler just took, such as a lease keep-alive) brings a
        tick's write forward: a round trip must not wait out the tick.
        Returns whether the write waits for the tick."""
        if self.flush_handle is not None:
            if stream or not self.flush_deferred:
                return self.flush_deferred
            self.flush_handle.cancel()
        if stream:
            due = self.last_flush + STREAM_COALESCE
            if due > self.loop.time():
                self.flush_handle = self.loop.call_at(due, self._flush_cb)
                self.flush_deferred = True
                return True
        self.flush_handle = self.loop.call_soon(self._flush_cb)
        self.flush_deferred = False
        return False

    async def flushed(self) -> None:
        """Returns after the next flush."""
        fut: asyncio.Future[None] = self.loop.create_future()
        self.flush_waiters.append(fut)
        await fut

    def _flush_ping_acks(self) -> None:
        self.ack_timer_pending = False
        self._write()

    def _flush_cb(self) -> None:
        self.flush_handle = None
        self.last_flush = self.loop.time()
        self._write()
        if self.flush_waiters:
            waiters, self.flush_waiters = self.flush_waiters, []
            for fut in waiters:
                if not fut.done():
                    fut.set_result(None)

    # -- requests ----------------------------------------------------------------------

    def _on_request(self, ev: h2.RequestReceived) -> None:
        sid = ev.stream_id
        path = b""
        method_name = b""
        ctype = b""
        encoding = b""
        timeout = b""
        for name, value in ev.headers:
            if name == b":path":
                path = value
            elif name == b":method":
                method_name = value
            elif name == b"content-type":
                ctype = value
            elif name == b"grpc-encoding":
                encoding = value
            elif name == b"grpc-timeout":
                timeout = value
        conn = self.conn
        if method_name != b"POST":
            conn.send_headers(sid, http_error(405, StatusCode.INTERNAL, "invalid gRPC request method"), True)
            return
        if not ctype.startswith(b"application/grpc"):
            conn.send_headers(sid, http_error(415, StatusCode.INTERNAL, "invalid gRPC request content-type"), True)
            return
        method = self.port.methods.get(path)
        if method is None:
            conn.send_headers(sid, trailers_only(*_unknown(path, self.port.services)), True)
            return
        decompress = None
        if encoding and encoding != b"identity":
            decompress = DECOMPRESSORS.get(encoding)
            if decompress is None:
                msg = f'grpc: Decompressor is not installed for grpc-encoding "{encoding.decode("latin-1")}"'
                conn.send_headers(sid, trailers_only(StatusCode.UNIMPLEMENTED, msg), True)
                return
        deadline = None
        if timeout:
            try:
                deadline = self.loop.time() + parse_timeout(timeout)
            except RpcError as exc:
                conn.send_headers(sid, trailers_only(exc.code, exc.message), True)
                return
        call = _Call(self, sid, method, CallContext(ev.headers, deadline, self.peer, self.client_cn), MessageReader(self.port.max_recv, decompress))
        self.calls[sid] = call
        if deadline is not None:
            call.timer = self.loop.call_at(deadline, self._deadline, call)
        if method.kind is Kind.BIDI:
            call.started = True
            call.task = self.loop.create_task(self._run_stream(call, call.requests))
            if ev.end_stream:
                call.requests.close()  # type: ignore[union-attr]
        elif ev.end_stream:
            self._finish(call, StatusCode.INTERNAL, "grpc: the client sent no request message")

    def _on_data(self, ev: h2.DataReceived) -> None:
        sid = ev.stream_id
        call = self.calls.get(sid)
        conn = self.conn
        if call is None:
            conn.acknowledge_received_data(sid, ev.flow_len)
            return
        if call.requests is not None:
            # bidi: messages are split and decoded as the handler makes room
            call.raw.append((ev.data, ev.flow_len))
            call.raw_end = ev.end_stream
            if not call.full():
                self.parse_raw(call)
            return
        try:
            msgs = call.reader.feed(ev.data) if ev.data else []
        except RpcError as exc:
            conn.acknowledge_received_data(sid, ev.flow_len)
            self._finish(call, exc.code, exc.message)
            return
        method = call.method
        conn.acknowledge_received_data(sid, ev.flow_len)
        if call.started:
            return  # a unary call takes one message; grpc-go ignores the rest too
        if msgs:
            call.started = True
            try:
                request = method.decode(msgs[0])
            except RpcError as exc:
                self._finish(call, exc.code, exc.message)
                return
            if method.kind is Kind.UNARY:
                self._run_unary(call, request)
            else:
                call.task = self.loop.create_task(self._run_stream(call, request))
        elif ev.end_stream:
            self._finish(call, StatusCode.INTERNAL, "grpc: the client sent no request message")

    def parse_raw(self, call: _Call) -> None:
        """Turn a bidi call's raw DATA into decoded messages for its handler
        while it has room for them, crediting the DATA back as it goes."""
        requests = call.requests
        assert requests is not None
        conn = self.conn
        decode = call.method.decode
        exhausted = False
        while not call.full():
            room = QUEUE_ITEMS - len(requests.items)
            try:
                msgs = call.reader.feed(b"", room) if call.reader.partial else []
                if not msgs:
                    if not call.raw:
                        exhausted = True
                        break
                    data, flow_len = call.raw.popleft()
                    conn.acknowledge_received_data(call.sid, flow_len)
                    msgs = call.reader.feed(data, room)
                for raw in msgs:
                    item = decode(raw)
                    call.queued += len(raw)
                    requests.push(item, len(raw))
            except RpcError as exc:
                self._finish(call, exc.code, exc.message)
                return
        if exhausted and call.raw_end:
            requests.close()

    def _on_other(self, ev: h2.Event) -> None:
        t = type(ev)
        if t is h2.StreamReset:
            call = self.calls.pop(ev.stream_id, None)  # type: ignore[attr-defined]
            if call is not None:
                self._abandon(call)
        elif t is h2.WindowUpdated:
            # the update releases queued DATA: written data resets the ping
            # strikes, as grpc-go's server does (a client's BDP pings while a
            # flow-controlled stream drains are not abuse)
            self.reset_strikes = True
            self._wake_drains()
        elif t is h2.TrailersReceived:
            call = self.calls.get(ev.stream_id)  # type: ignore[attr-defined]
            if call is not None and call.requests is not None:
                call.raw_end = True
                if not call.full():
                    self.parse_raw(call)
        elif t is h2.PingReceived:
            self._client_ping()
        elif t is h2.PingAcked:
            if self.ping_timeout is not None:
                self.ping_timeout.cancel()
                self.ping_timeout = None
        elif t is h2.ConnectionFailed:
            log.info("HTTP/2 connection from %s failed: %s", self.peer, ev.reason)  # type: ignore[attr-defined]
            for call in list(self.calls.values()):
                self._abandon(call)
            self.calls.clear()
            self.closing = True

    # -- running calls ----------------------------------------------------------------------

    def _run_unary(self, call: _Call, request: Any) -> None:
        try:
            coro = call.method.handler(request, call.ctx)
            try:
                pending = coro.send(None)
            except StopIteration as stop:
                self._reply(call, stop.value)
                return
        except RpcError as exc:
            self._finish(call, exc.code, exc.message)
            return
        except Exception as exc:
            log.exception("unary handler failed")
            self._finish(call, StatusCode.UNKNOWN, str(exc))
            return
        call.task = self.loop.create_task(self._finish_unary(call, coro, pending))

    async def _finish_unary(self, call: _Call, coro: Any, pending: Any) -> None:
        try:
            resp = await _resume(coro, pending)
        except RpcError as exc:
            self._finish(call, exc.code, exc.message)
        except asyncio.CancelledError:
            return
        except Exception as exc:
            log.exception("unary handler failed")
            self._finish(call, StatusCode.UNKNOWN, str(exc))
        else:
            self._reply(call, resp)
        if self.calls:
            self.schedule_flush()  # others may finish in this iteration too: one write for all
        else:
            self._write()  # the only call: no reason to wait

    def _reply(self, call: _Call, resp: Any) -> None:
        if call.done:
            return
        try:
            body = frame_message(call.method.encode(resp))
        except Exception as exc:
            log.exception("encoding a response failed")
            self._finish(call, StatusCode.INTERNAL, f"grpc: error while marshaling: {exc}")
            return
        conn = self.conn
        sid = call.sid
        conn.send_headers(sid, RESPONSE_HEADERS)
        conn.send_data(sid, body)
        conn.send_headers(sid, OK_TRAILERS, True)
        self.reset_strikes = True
        self._done(call)

    async def _run_stream(self, call: _Call, arg: Any) -> None:
        gen = call.method.handler(arg, call.ctx)
        conn = self.conn
        sid = call.sid
        encode = call.method.encode
        code = StatusCode.OK
        message = ""
        try:
            async for resp in gen:
                if call.done:
                    break
                if type(resp) is Messages and not resp:
                    continue
                if not call.headers_sent:
                    call.headers_sent = True
                    conn.send_headers(sid, RESPONSE_HEADERS)
                if type(resp) is Messages:
                    conn.send_data(sid, frame_messages(resp, encode))
                else:
                    conn.send_data(sid, frame_message(encode(resp)))
                self.reset_strikes = True
                deferred = self.schedule_flush(stream=not call.answering)
                call.answering = False
                if self.paused or conn.buffered(sid) > STREAM_HIGH_WATER:
                    await self._drain(call)
                elif deferred:
                    # what the handler would yield before the tick goes out
                    # with it anyway: let it gather (a watch stream then
                    # renders several revisions at once, merged)
                    await self.flushed()
        except RpcError as exc:
            code, message = exc.code, exc.message
        except asyncio.CancelledError:
            if call.done:
                return
            raise
        except Exception as exc:
            log.exception("streaming handler failed")
            code, message = StatusCode.UNKNOWN, str(exc)
        finally:
            await _aclose(gen)
        if call.done:
            return
        if call.headers_sent:
            conn.send_headers(sid, OK_TRAILERS if code == StatusCode.OK else trailers(code, message), True)
            self._done(call)
        else:
            self._finish(call, code, message)
        self.schedule_flush()

    async def _drain(self, call: _Call) -> None:
        while not call.done and (self.paused or self.conn.buffered(call.sid) > STREAM_HIGH_WATER // 2):
            call.drain_waiter = self.loop.create_future()
            self.draining.append(call)
            try:
                await call.drain_waiter
            finally:
                call.drain_waiter = None

    def _wake_drains(self) -> None:
        if self.draining:
            waiting, self.draining = self.draining, []
            for call in waiting:
                call.wake_drain()

    def _finish(self, call: _Call, code: int, message: str) -> None:
        """End a call with a non-OK status (trailers-only when nothing was
        sent yet), cancelling whatever still runs for it."""
        if call.done:
            return
        block = trailers(code, message) if call.headers_sent else trailers_only(code, message)
        self.conn.send_headers(call.sid, block, True)
        self._done(call)
        task = call.task
        if task is not None and task is not asyncio.current_task():
            task.cancel()
        self.schedule_flush()

    def _done(self, call: _Call) -> None:
        call.done = True
        self.calls.pop(call.sid, None)
        while call.raw:  # never parsed now, but the connection window must get it back
            self.conn.acknowledge_received_data(call.sid, call.raw.popleft()[1])
        if call.timer is not None:
            call.timer.cancel()
        if call.requests is not None:
            call.requests.close()
        call.wake_drain()
        if self.closing and not self.calls:
            self.schedule_flush()

    def _abandon(self, call: _Call) -> None:
        """The stream is gone (reset, or the connection): stop the call
        without answering."""
        call.ctx.cancelled = True
        self._done(call)
        if call.task is not None:
            call.task.cancel()

    def _deadline(self, call: _Call) -> None:
        call.timer = None
        self._finish(call, StatusCode.DEADLINE_EXCEEDED, "context deadline exceeded")

    # -- keepalive and shutdown --------------------------------------------------------------

    def _client_ping(self) -> None:
        """grpc-go's enforcement: a client pinging more often than allowed
        gets strikes, and past two, GOAWAY ENHANCE_YOUR_CALM."""
        now = time.monotonic()
        last, self.last_client_ping = self.last_client_ping, now
        if self.reset_strikes:
            self.reset_strikes = False
            self.ping_strikes = 0
            return
        ka = self.port.keepalive
        if not self.calls and not ka.permit_without_stream:
            minimum = _IDLE_PING_MIN
        else:
            minimum = ka.min_time
        if last + minimum > now:
            self.ping_strikes += 1
            if self.ping_strikes > _MAX_PING_STRIKES:
                self.conn.close(frames.ErrorCode.ENHANCE_YOUR_CALM, b"too_many_pings")
                for call in list(self.calls.values()):
                    self._abandon(call)
                self.calls.clear()
                self.closing = True

    def _keepalive(self) -> None:
        ka = self.port.keepalive
        idle = time.monotonic() - self.last_read
        if idle >= ka.interval and self.ping_timeout is None:
            self.conn.ping(b"petcd-ka")
            self.ping_timeout = self.loop.call_later(ka.timeout, self._ping_timed_out)
            self._write()
            wait = ka.interval
        else:
            wait = max(ka.interval - idle, 0.001)
        self.keepalive_timer = self.loop.call_later(wait, self._keepalive)

    def _ping_timed_out(self) -> None:
        log.info("closing the connection from %s: keepalive ping not acknowledged", self.peer)
        if self.transport is not None:
            self.transport.abort()

    def shutdown(self) -> None:
        """Graceful: GOAWAY; close once running calls end."""
        self.conn.close()
        self.closing = True
        self._write()

    def abort(self) -> None:
        for call in list(self.calls.values()):
            self._abandon(call)
        self.calls.clear()
        self._write()
        if self.transport is not None:
            self.transport.close()


async def _aclose(gen: Any) -> None:
    aclose = getattr(gen, "aclose", None)
    if aclose is not None:
        try:
            await aclose()
        except Exception:
            log.exception("closing a streaming handler failed")


def _unknown(path: bytes, services: set[str]) -> tuple[StatusCode, str]:
    """grpc-go's answer to a path nothing is registered at (its code for a
    malformed name is indeed RESOURCE_EXHAUSTED)."""
    p = path.decode("latin-1")
    name = p[1:] if p.startswith("/") else p
    if "/" not in name:
        return StatusCode.RESOURCE_EXHAUSTED, f'malformed method name: "{p}"'
    service, _, method = name.rpartition("/")
    if service not in services:
        return StatusCode.UNIMPLEMENTED, f"unknown service {service}"
    return StatusCode.UNIMPLEMENTED, f"unknown method {method} for service {service}"


# --- the first bytes decide -------------------------------------------------------------


class _Sniffer(asyncio.Protocol):
    """A new connection until its first bytes say what it speaks: the HTTP/2
    preface hands it to H2Protocol; a TLS ClientHello (later: ALPN) or
    HTTP/1.x go to their handlers. The seam for the HTTP/1.1 gateway and
    TLS is ``ClientPort.http1`` and ``ClientPort.tls``."""

    def __init__(self, port: ClientPort) -> None:
        self.port = port
        self.buf = b""
        self.transport: asyncio.Transport | None = None
        self.handed_off = False
        self.timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.port.undecided.add(self)
        # a peer that connects and says nothing must not hold a descriptor forever
        self.timer = self.port.loop.call_later(self.port.first_bytes_timeout, self.transport.close)

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        self.buf += data
        buf = self.buf
        head = buf[:24]
        if frames.PREFACE.startswith(head):
            if len(buf) >= 24:
                self._hand_off(H2Protocol(self.port))
            return
        if buf[:1] == b"\x16":
            self._hand_off(self.port.tls(self.port))
            return
        self._hand_off(self.port.http1(self.port))

    def _hand_off(self, proto: asyncio.Protocol) -> None:
        assert self.transport is not None
        self.handed_off = True
        self.port.undecided.discard(self)
        if self.timer is not None:
            self.timer.cancel()
        self.transport.set_protocol(proto)
        proto.connection_made(self.transport)
        data, self.buf = self.buf, b""
        proto.data_received(data)  # type: ignore[attr-defined]

    def connection_lost(self, exc: Exception | None) -> None:
        if self.timer is not None:
            self.timer.cancel()
        if not self.handed_off:
            self.port.undecided.discard(self)
            self.port.connection_closed()


class Http1Minimal(asyncio.Protocol):
    """Until the gateway exists: any HTTP/1.x request gets 404, any other
    protocol version 505, then the connection closes."""

    def __init__(self, port: ClientPort) -> None:
        self.port = port
        self.buf = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        self.buf += data
        line_end = self.buf.find(b"\r\n")
        if line_end < 0:
            if len(self.buf) > HTTP1_HEAD_LIMIT:
                self.transport.close()
            return
        parts = self.buf[:line_end].split(b" ")
        version = parts[-1] if len(parts) == 3 else b""
        if version in (b"HTTP/1.1", b"HTTP/1.0"):
            status = b"404 Not Found"
        elif version.startswith(b"HTTP/"):
            status = b"505 HTTP Version Not Supported"
        else:
            self.transport.close()
            return
        body = status + b"\n"
        self.transport.write(
            b"HTTP/1.1 " + status + b"\r\nContent-Type: text/plain; charset=utf-8\r\n"
            b"Content-Length: " + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n" + body
        )
        self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.port.connection_closed()


class TlsUnsupported(asyncio.Protocol):
    """A TLS ClientHello on a plain (http://) listener: close at once.
    TLS is served on https:// listeners (``ClientPort.tls_contexts``)."""

    def __init__(self, port: ClientPort) -> None:
        self.port = port

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.close()

    def data_received(self, data: bytes) -> None:
        pass

    def connection_lost(self, exc: Exception | None) -> None:
        self.port.connection_closed()


# --- listening ---------------------------------------------------------------------------


class BindError(OSError):
    """A client URL could not be listened on; str() is the whole message."""

    def __str__(self) -> str:
        return str(self.strerror)


def bind(urls: Iterable[str], backlog: int = 1024) -> list[socket.socket]:
    """Listening sockets for every URL, or none at all: the first failure
    closes what was bound and raises BindError with the address and reason."""
    socks: list[socket.socket] = []
    try:
        for url in urls:
            socks.append(_bind_one(url, backlog))
    except BaseException:
        for s in socks:
            s.close()
        raise
    return socks


def _bind_one(url: str, backlog: int) -> socket.socket:
    parts = urlsplit(url)
    scheme = parts.scheme or "http"
    if scheme in ("unix", "unixs"):
        path = parts.netloc + parts.path
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.bind(path)
        except OSError as exc:
            s.close()
            raise BindError(exc.errno, f"listen unix {path}: bind: {_reason(exc)}") from None
        s.listen(backlog)
        s.setblocking(False)
        return s
    if scheme not in ("http", "https"):
        raise BindError(errno.EINVAL, f"unsupported listen URL scheme {scheme!r} in {url!r}")
    host = parts.hostname or ""
    port = parts.port if parts.port is not None else 2379
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(family, socket.SOCK_STREAM)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((host or ("::" if family == socket.AF_INET6 else "0.0.0.0"), port))
        s.listen(backlog)
    except OSError as exc:
        s.close()
        shown = f"[{host}]" if family == socket.AF_INET6 else host
        raise BindError(exc.errno, f"listen tcp {shown}:{port}: bind: {_reason(exc)}") from None
    s.setblocking(False)
    return s


def _reason(exc: OSError) -> str:
    return (exc.strerror or str(exc)).lower()


def _fd_limit() -> int:
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        in_use = len(os.listdir("/proc/self/fd"))
    except OSError:
        in_use = 32
    if soft == resource.RLIM_INFINITY:
        soft = 1 << 20
    return max(1, soft - in_use - FD_RESERVE)


@dataclass
class ClientPort:
    """The listener and everything it serves. Build with bound sockets
    (``bind``), register methods, then ``start()``."""

    sockets: list[socket.socket]
    methods: dict[bytes, Method] = field(default_factory=dict)
    max_recv: int = 4 * 1024 * 1024
    settings: h2.H2Settings = field(default_factory=h2.H2Settings)
    keepalive: Keepalive = field(default_factory=Keepalive)
    http1: Callable[[ClientPort], asyncio.Protocol] = Http1Minimal
    tls: Callable[[ClientPort], asyncio.Protocol] = TlsUnsupported
    max_connections: int = field(default_factory=_fd_limit)
    first_bytes_timeout: float = 30.0  # seconds a new connection has to say what it speaks
    # Per listening socket (same order as sockets; missing: plain): a callable giving the TLS
    # context for the next connection (it may re-read rotated certificate files), or None.
    # The context offers ALPN h2 and http/1.1; after the handshake the sniffer picks the
    # protocol from the decrypted first bytes, as on a plain socket.
    tls_contexts: list[Callable[[], ssl.SSLContext] | None] = field(default_factory=list)
    tls_handshake_timeout: float = 10.0  # a client that starts TLS and stalls is dropped after this

    def __post_init__(self) -> None:
        self.protocols: set[H2Protocol] = set()
        self.services: set[str] = {p.decode("latin-1")[1:].rpartition("/")[0] for p in self.methods}
        self.undecided: set[_Sniffer] = set()  # connections that have not said what they speak
        self.connections = 0
        self.slot_free: asyncio.Event | None = None
        self.accepting: list[asyncio.Task[None]] = []
        self.handshaking: set[asyncio.Task[None]] = set()  # TLS handshakes in progress (held: not GC'd)
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        assert self._loop is not None, "ClientPort.start() first"
        return self._loop

    def add(self, path: str, method: Method) -> None:
        """Serve method at path ("/package.Service/Method")."""
        self.methods[path.encode()] = method
        self.services.add(path[1:].rpartition("/")[0])

    def addresses(self) -> list[Any]:
        return [s.getsockname() for s in self.sockets]

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.slot_free = asyncio.Event()
        tls = list(self.tls_contexts) + [None] * (len(self.sockets) - len(self.tls_contexts))
        self.accepting = [self._loop.create_task(self._accept(s, t)) for s, t in zip(self.sockets, tls, strict=False)]

    async def _accept(self, lsock: socket.socket, tls: Callable[[], ssl.SSLContext] | None = None) -> None:
        loop = self.loop
        assert self.slot_free is not None
        while True:
            while self.connections >= self.max_connections:
                self.slot_free.clear()
                await self.slot_free.wait()
            try:
                sock, _ = await loop.sock_accept(lsock)
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    log.warning("accept: %s; retrying shortly", exc)
                    await asyncio.sleep(0.1)
                    continue
                if exc.errno in (errno.ECONNABORTED, errno.EPROTO, errno.EAGAIN):
                    continue
                raise
            if sock.family in (socket.AF_INET, socket.AF_INET6):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.connections += 1
            if tls is not None:
                # The handshake runs on its own task: one client that stalls in it must not hold up the accepts.
                task = loop.create_task(self._tls_handshake(sock, tls))
                self.handshaking.add(task)
                task.add_done_callback(self.handshaking.discard)
                continue
            try:
                await loop.connect_accepted_socket(lambda: _Sniffer(self), sock)
            except OSError:
                self.connections -= 1
                sock.close()

    async def _tls_handshake(self, sock: socket.socket, tls: Callable[[], ssl.SSLContext]) -> None:
        """Serve an accepted socket of an https listener once its TLS handshake is done."""
        try:
            await self.loop.connect_accepted_socket(lambda: _Sniffer(self), sock, ssl=tls(),
                                                    ssl_handshake_timeout=self.tls_handshake_timeout)
        except (OSError, TimeoutError, asyncio.CancelledError) as exc:  # ssl.SSLError is an OSError
            self.connection_closed()
            sock.close()
            if isinstance(exc, asyncio.CancelledError):
                raise
            log.debug("TLS handshake with a client failed: %s", exc)

    def connection_closed(self) -> None:
        self.connections -= 1
        if self.slot_free is not None:
            self.slot_free.set()

    async def stop(self, grace: float = 1.0) -> None:
        """Stop accepting, GOAWAY every connection, let calls finish for up
        to grace seconds, then cancel the rest and close."""
        for t in self.accepting:
            t.cancel()
        for t in self.accepting:
            try:
                await t
            except (asyncio.CancelledError, Exception):
                pass
        self.accepting = []
        for t in list(self.handshaking):
            t.cancel()
        for s in self.sockets:
            if s.family == socket.AF_UNIX:
                try:
                    os.unlink(s.getsockname())
                except OSError:
                    pass
            s.close()
        for u in list(self.undecided):
            if u.transport is not None:
                u.transport.close()
        for p in list(self.protocols):
            p.shutdown()
        deadline = time.monotonic() + grace
        while self.protocols and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        for p in list(self.protocols):
            p.abort()
        deadline = time.monotonic() + 1.0
        while self.protocols and time.monotonic() < deadline:
            await asyncio.sleep(0.01)


__all__ = [
    "BindError",
    "CallContext",
    "ClientPort",
    "Keepalive",
    "Kind",
    "Method",
    "RpcError",
    "StatusCode",
    "bind",
]
