"""Calls between members over the peer port: requests with answers.

A member asks another something (a follower asks its leader to renew a
lease; the prober pings) on a call connection: one long-lived connection
per pair of members, dialed by the asker when first needed with the peer
URLs and peer TLS of the raft connection, carrying many calls at once, each
with an id of its own (the frames: petcd/server/transport/call_wire.py).
So a renewal costs a frame each way, not a connection and a TLS handshake.

The asker (``CallChannel``):

- every call ends, by its deadline, in the answer's body, ``CallFailed``
  (the callee answered with an error: its message), ``CallTimeout`` (no
  answer in time) or ``TransportError`` (the callee could not be reached,
  or the connection was lost with the call in flight);
- one dial at a time, shared by the calls waiting for it; after a failed
  dial, calls within DIAL_HOLDOFF fail at once instead of dialing again;
- at most MAX_PENDING calls in flight per connection (more fail at once, ``TooManyCalls``).

The answerer (``Answering``, one per accepted call connection):

- answers a PING itself; hands any other call to the transport's
  ``on_call(peer id, kind, body)``, whose ``CallFailed`` goes back as its
  message (any other exception is logged and answered "internal error");
- serves at most MAX_INFLIGHT calls of one connection at once, and stops
  reading from it while at that bound or while the asker does not read its
  answers (the socket's write buffer is over its high-water mark): a peer
  cannot make it buffer without bound.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, cast

from petcd.server.transport.call_wire import (
    PING,
    Answer,
    Call,
    encode_answer,
    encode_call,
    encode_error,
    read_answer,
    read_call,
)
from petcd.server.transport.peer import DIAL_TIMEOUT, set_nodelay
from petcd.server.transport.wire import CALL_MAGIC, FrameError, Handshake, TransportError

if TYPE_CHECKING:
    from petcd.server.transport.inbound import Inbound
    from petcd.server.transport.peer_transport import PeerTransport

log = logging.getLogger("petcd.server.transport")

MAX_PENDING = 4096
MAX_INFLIGHT = 256
DIAL_HOLDOFF = 0.1

# What a member answers calls with: (peer id, kind, body) -> the answer's body; raise CallFailed to refuse.
CallHandler = Callable[[int, int, bytes], Awaitable[bytes]]


class CallFailed(TransportError):
    """The member called answered with an error; ``message`` is its text."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class CallTimeout(TransportError):
    """No answer came before the call's deadline."""


class TooManyCalls(TransportError):
    """MAX_PENDING calls are in flight on the connection already."""


# ---- the asker's side -----------------------------------------------------------------------------


class _Asking(asyncio.Protocol):
    """The dialer's side of one call connection: writes calls, reads answers."""

    def __init__(self, channel: CallChannel) -> None:
        self.channel = channel
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.need = 4
        self.pending: dict[int, asyncio.Future[Answer]] = {}
        self.refusal: str | None = None  # why the TLS peer is refused, if it is
        self.closed = False
        self.up_since: float | None = None  # loop.time() when the handshake went out

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        set_nodelay(transport)
        owner = self.channel.owner
        self.refusal = owner.refused(transport, inbound=False)
        if self.refusal is not None:
            self.transport.abort()
            return
        self.transport.write(Handshake(owner.cluster_id, owner.local_id, self.channel.member_id, CALL_MAGIC).encode())
        self.up_since = owner.loop.time()

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        self.buf += data
        if len(self.buf) < self.need:
            return
        off = 0
        try:
            while True:
                got = read_answer(self.buf, off, self.channel.owner.max_message_bytes)
                if isinstance(got, int):
                    self.need = got
                    break
                answer, off = got
                fut = self.pending.pop(answer.call_id, None)
                if fut is not None and not fut.done():
                    fut.set_result(answer)
                # else: its caller gave up on it (timed out); the late answer is dropped
        except FrameError as exc:
            log.warning("petcd: closing the call connection to peer %x: %s", self.channel.member_id, exc)
            self.close(TransportError(f"peer {self.channel.member_id:x} answered badly: {exc}"))
            return
        del self.buf[:off]

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.close(TransportError(f"the connection to peer {self.channel.member_id:x} was lost"
                                  + (f": {exc}" if exc else "")))

    def close(self, why: TransportError) -> None:
        """Fail every call in flight with why, and hang up."""
        if self.closed:
            return
        self.closed = True
        self.buf = bytearray()
        pending, self.pending = self.pending, {}
        for fut in pending.values():
            if not fut.done():
                fut.set_exception(why)
        if self.transport is not None:
            self.transport.abort()
        self.channel.lost(self)


class CallChannel:
    """The call connection to one member: dialed when first needed, redialed after it is lost."""

    def __init__(self, owner: PeerTransport, member_id: int) -> None:
        self.owner = owner
        self.member_id = member_id
        self.proto: _Asking | None = None
        self._dialing: asyncio.Task[_Asking] | None = None
        self._failed: tuple[float, TransportError] | None = None  # when the last dial failed, and why
        self._next_id = 1
        self._closed = False

    async def call(self, kind: int, body: bytes, timeout: float) -> bytes:
        """The member's answer to one call (see the module's docstring for how it may fail instead)."""
        # The deadline is a timer on the answer's future, not asyncio.timeout(): callers need not be tasks.
        loop = self.owner.loop
        deadline = loop.time() + timeout
        proto = self.proto
        if proto is None or proto.closed:
            dialing = self._connection()
            done, _ = await asyncio.wait({dialing}, timeout=timeout)  # (a dial others may wait for runs on)
            if not done:
                raise CallTimeout(f"peer {self.member_id:x} could not be reached in {timeout:.1f} s")
            proto = dialing.result()
        if proto.closed:  # lost between the dial and now
            raise TransportError(f"the connection to peer {self.member_id:x} was lost")
        if len(proto.pending) >= MAX_PENDING:
            raise TooManyCalls(f"too many calls in flight to peer {self.member_id:x}")
        try:
            frame = encode_call(kind, self._next_id, body)
        except FrameError as exc:
            raise TransportError(str(exc)) from None
        call_id = self._next_id
        self._next_id += 1
        fut: asyncio.Future[Answer] = loop.create_future()
        proto.pending[call_id] = fut
        timer = loop.call_at(deadline, _expire, fut, self.member_id, timeout)
        try:
            assert proto.transport is not None
            proto.transport.write(frame)
            answer = await fut
        finally:
            timer.cancel()
            proto.pending.pop(call_id, None)
        if not answer.ok:
            raise CallFailed(answer.message)
        return answer.body

    def _connection(self) -> asyncio.Future[_Asking]:
        """The dial under way (one is started if none is), or a failure if the last one failed just now."""
        loop = self.owner.loop
        if self._closed:
            return _failed(loop, TransportError("the transport is stopped"))
        if self._dialing is None:
            failed = self._failed
            if failed is not None and loop.time() - failed[0] < DIAL_HOLDOFF:
                return _failed(loop, failed[1])
            self._dialing = loop.create_task(self._dial(), name=f"petcd-call-dial-{self.member_id:x}")
            self._dialing.add_done_callback(self._dialed)
        return self._dialing

    def _dialed(self, task: asyncio.Task[_Asking]) -> None:
        if self._dialing is task:
            self._dialing = None
        if task.cancelled():
            return
        exc = task.exception()
        if exc is None:
            self._failed = None
            self.proto = task.result()
            if self._closed:  # closed after the dial connected, before this callback ran
                self.proto.close(TransportError("the transport is stopped"))
        elif isinstance(exc, TransportError):
            self._failed = (self.owner.loop.time(), exc)

    async def _dial(self) -> _Asking:
        urls = self.owner.peer_urls(self.member_id)
        if not urls:
            raise TransportError(f"peer {self.member_id:x} has no URLs")
        errors: list[str] = []
        loop = self.owner.loop
        for url in urls:
            try:
                host, port, ctx = self.owner.dial_target(url)
                _, proto = await asyncio.wait_for(
                    loop.create_connection(lambda: _Asking(self), host, port, ssl=ctx,
                                           server_hostname=host if ctx is not None else None),
                    DIAL_TIMEOUT)
            except (OSError, TimeoutError, TransportError) as exc:  # ssl.SSLError is an OSError
                errors.append(f"{url}: {exc or type(exc).__name__}")
                continue
            if proto.refusal is not None:
                errors.append(f"{url}: {proto.refusal}")
                continue
            if self._closed:
                proto.close(TransportError("the transport is stopped"))
                break
            return proto
        raise TransportError(f"cannot reach peer {self.member_id:x} (" + "; ".join(errors) + ")")

    @property
    def up_since(self) -> float | None:
        """loop.time() when the current connection came up; None while there is none."""
        proto = self.proto
        return proto.up_since if proto is not None and not proto.closed else None

    def reset(self, why: str) -> None:
        """Hang up the current connection (failing its calls in flight); the next call dials anew."""
        if self.proto is not None:
            log.warning("petcd: dropping the call connection to peer %x: %s", self.member_id, why)
            self.proto.close(TransportError(why))

    def lost(self, proto: _Asking) -> None:
        if self.proto is proto:
            self.proto = None

    def close(self) -> None:
        """Hang up and fail every call in flight; later calls fail at once."""
        self._closed = True
        if self._dialing is not None:
            self._dialing.cancel()
        if self.proto is not None:
            self.proto.close(TransportError("the transport is stopped"))


def _failed(loop: asyncio.AbstractEventLoop, exc: TransportError) -> asyncio.Future[_Asking]:
    fut: asyncio.Future[_Asking] = loop.create_future()
    fut.set_exception(exc)
    return fut


def _expire(fut: asyncio.Future[Answer], member_id: int, timeout: float) -> None:
    if not fut.done():
        fut.set_exception(CallTimeout(f"peer {member_id:x} did not answer in {timeout:.1f} s"))


# ---- the answerer's side --------------------------------------------------------------------------


class Answering:
    """The acceptor's side of one call connection (an Inbound whose handshake had CALL_MAGIC)."""

    def __init__(self, conn: Inbound, peer_id: int, handler: CallHandler | None) -> None:
        self.conn = conn
        self.peer_id = peer_id
        self.handler = handler
        self.tasks: set[asyncio.Task[None]] = set()
        self.write_paused = False
        self.reading_paused = False

    def feed(self) -> None:
        """Start serving the calls buffered in the connection, as many as the bounds allow."""
        conn = self.conn
        buf = conn.buf
        off = 0
        try:
            while len(self.tasks) < MAX_INFLIGHT and not self.write_paused and not conn.closed:
                got = read_call(buf, off)
                if isinstance(got, int):
                    break
                call, off = got
                self.start(call)
        finally:
            del buf[:off]
        self.flow()

    def start(self, call: Call) -> None:
        if call.kind == PING:
            self.write(encode_answer(call.call_id, b""))
            return
        task = self.conn.owner.loop.create_task(self.serve(call), name=f"petcd-call-{self.peer_id:x}")
        self.tasks.add(task)
        task.add_done_callback(self.done)

    async def serve(self, call: Call) -> None:
        try:
            if self.handler is None:
                raise CallFailed("petcd: this member answers no calls")
            frame = encode_answer(call.call_id, await self.handler(self.peer_id, call.kind, call.body))
        except CallFailed as exc:
            frame = encode_error(call.call_id, exc.message)
        except FrameError as exc:
            log.error("petcd: the answer to a call of kind %d from peer %x: %s", call.kind, self.peer_id, exc)
            frame = encode_error(call.call_id, "petcd: answer too large")
        except Exception:
            log.exception("petcd: answering a call of kind %d from peer %x failed", call.kind, self.peer_id)
            frame = encode_error(call.call_id, "petcd: internal error")
        self.write(frame)

    def write(self, frame: bytes) -> None:
        if not self.conn.closed and self.conn.transport is not None:
            self.conn.transport.write(frame)

    def done(self, task: asyncio.Task[None]) -> None:
        full = len(self.tasks) >= MAX_INFLIGHT
        self.tasks.discard(task)
        if full and not self.conn.closed:
            self.feed()  # calls may be waiting in the buffer; reading resumes if the bounds allow

    def flow(self) -> None:
        """Pause reading while at the bounds, resume once below them."""
        transport = self.conn.transport
        if transport is None or self.conn.closed:
            return
        stop = len(self.tasks) >= MAX_INFLIGHT or self.write_paused
        if stop and not self.reading_paused:
            self.reading_paused = True
            transport.pause_reading()
        elif not stop and self.reading_paused:
            self.reading_paused = False
            transport.resume_reading()

    def pause_writing(self) -> None:
        self.write_paused = True
        self.flow()

    def resume_writing(self) -> None:
        self.write_paused = False
        if not self.conn.closed:
            self.feed()

    def close(self) -> None:
        for task in list(self.tasks):
            task.cancel()
