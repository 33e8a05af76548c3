"""HTTP/1.1 on the client port, through the sans-I/O ``h11`` library: an
asyncio protocol that parses requests, hands each to an application (the
JSON gateway, /health, /version, /metrics) and writes its response, with
keep-alive, chunked streaming responses (watch, lease keep-alive) and
backpressure both ways.

The protocol can start on a connection whose first bytes were already read
by someone else (the client port's listener reads them to tell HTTP/2 from
HTTP/1.1): call ``connection_made`` then ``data_received`` with those bytes.

An application is ``async def app(request) -> Response``; it reads the body
from ``request.body`` (all at once or as it arrives) and answers with bytes
or with an async iterator of chunks.
"""

from __future__ import annotations

import asyncio
import email.utils
import http
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, cast

import h11

log = logging.getLogger("petcd.http1")

# Request heads larger than this are refused (h11's own limit is 16 KiB too).
MAX_HEAD = 16 * 1024
# Body bytes buffered before the protocol stops reading the socket.
BODY_HIGH_WATER = 1 << 20


# Seconds a refused request's remaining body may take to arrive before the
# connection is closed on it.
DRAIN_TIMEOUT = 30.0


async def _discard(body: Body) -> None:
    async for _ in body:
        pass


class BodyTooLarge(Exception):
    """A request body beyond the limit its reader set."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"request body larger than {limit} bytes")
        self.limit = limit


class Body:
    """A request's body as it arrives: ``read(limit)`` for all of it,
    ``async for`` for chunks. Reading it resumes a paused socket."""

    def __init__(self, resume: Callable[[], None]) -> None:
        self._chunks: list[bytes] = []
        self._size = 0
        self._done = False
        self._ready = asyncio.Event()
        self._resume = resume

    # fed by the protocol
    def _feed(self, data: bytes) -> None:
        self._chunks.append(data)
        self._size += len(data)
        self._ready.set()

    def _end(self) -> None:
        self._done = True
        self._ready.set()

    @property
    def buffered(self) -> int:
        return self._size

    @property
    def complete(self) -> bool:
        return self._done

    async def read(self, limit: int) -> bytes:
        """The whole body; BodyTooLarge once more than limit bytes arrived."""
        while not self._done:
            if self._size > limit:
                raise BodyTooLarge(limit)
            self._ready.clear()
            self._resume()
            await self._ready.wait()
        if self._size > limit:
            raise BodyTooLarge(limit)
        data = b"".join(self._chunks)
        self._chunks = []
        self._size = 0
        return data

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._iter()

    async def _iter(self) -> AsyncIterator[bytes]:
        while True:
            if self._chunks:
                data = b"".join(self._chunks)
                self._chunks = []
                self._size = 0
                self._resume()
                yield data
                continue
            if self._done:
                return
            self._ready.clear()
            self._resume()
            await self._ready.wait()


@dataclass
class Request:
    """One HTTP request as the application sees it."""

    method: str
    target: str  # path and query, as sent
    headers: list[tuple[str, str]]  # names lower-cased
    body: Body
    closed: asyncio.Event  # set when the client has gone away
    http_version: str = "1.1"

    @property
    def path(self) -> str:
        return self.target.split("?", 1)[0]

    @property
    def query(self) -> str:
        parts = self.target.split("?", 1)
        return parts[1] if len(parts) > 1 else ""

    def header(self, name: str) -> str | None:
        for k, v in self.headers:
            if k == name:
                return v
        return None


@dataclass
class Response:
    """An answer: a body, or a stream of chunks (sent chunked)."""

    status: int
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    stream: AsyncIterator[bytes] | None = None
    close: bool = False  # close the connection after this response


App = Callable[[Request], Awaitable[Response]]

# Headers etcd's gateway puts on every response (CORS for browser clients).
COMMON_HEADERS = [
    ("Access-Control-Allow-Headers", "accept, content-type, authorization"),
    ("Access-Control-Allow-Methods", "POST, GET, OPTIONS, PUT, DELETE"),
    ("Access-Control-Allow-Origin", "*"),
]


class Http1Protocol(asyncio.Protocol):
    """One HTTP/1.1 connection. Requests are served one after another
    (pipelined ones wait their turn); a streaming response ends when its
    producer ends or the client goes away."""

    def __init__(self, app: App, on_close: Callable[[], None] | None = None) -> None:
        self.app = app
        self.on_close = on_close
        self.conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)
        self.transport: asyncio.Transport | None = None
        self.task: asyncio.Task[None] | None = None
        self.closed = asyncio.Event()
        self.body: Body | None = None
        self.reading_paused = False
        self.can_write = asyncio.Event()
        self.can_write.set()
        self.new_data = asyncio.Event()

    # --- asyncio callbacks ---------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.task = asyncio.get_running_loop().create_task(self._serve())

    def data_received(self, data: bytes) -> None:
        try:
            self.conn.receive_data(data)
        except h11.RemoteProtocolError:  # pragma: no cover - h11 raises from next_event
            pass
        self.new_data.set()
        self._pump_body()

    def eof_received(self) -> bool | None:
        self.conn.receive_data(b"")
        self.new_data.set()
        self._pump_body()
        return True  # keep the write side open: a response may still be on its way

    def pause_writing(self) -> None:
        self.can_write.clear()

    def resume_writing(self) -> None:
        self.can_write.set()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed.set()
        self.can_write.set()
        self.new_data.set()
        if self.body is not None:
            self.body._end()
        if self.task is not None and not self.task.done():
            self.task.cancel()
        if self.on_close is not None:
            self.on_close()

    # --- reading ---------------------------------------------------------------------

    def _pump_body(self) -> None:
        """Move body bytes of the current request from h11 into its Body."""
        body = self.body
        if body is None:
            return
        while not body.complete:
            try:
                ev = self.conn.next_event()
            except h11.RemoteProtocolError:
                body._end()
                self._abort()
                return
            if ev is h11.NEED_DATA or ev is h11.PAUSED:
                break
            if isinstance(ev, h11.Data):
                body._feed(bytes(ev.data))
            elif isinstance(ev, h11.EndOfMessage):
                body._end()
            elif isinstance(ev, h11.ConnectionClosed):
                body._end()
        if body.buffered > BODY_HIGH_WATER and not self.reading_paused and self.transport is not None:
            self.reading_paused = True
            self.transport.pause_reading()

    def _resume(self) -> None:
        if self.reading_paused and self.transport is not None and not self.transport.is_closing():
            self.reading_paused = False
            self.transport.resume_reading()

    async def _next_event(self) -> Any:
        """The next h11 event (an Event or the PAUSED sentinel), None once
        the connection is done."""
        while True:
            try:
                ev = self.conn.next_event()
            except h11.RemoteProtocolError as exc:
                await self._send_error(exc.error_status_hint, str(exc))
                return None
            if ev is h11.NEED_DATA:
                if self.closed.is_set():
                    return None
                self.new_data.clear()
                self._resume()
                await self.new_data.wait()
                continue
            return ev

    # --- serving ---------------------------------------------------------------------

    async def _serve(self) -> None:
        try:
            while True:
                ev = await self._next_event()
                if ev is None or isinstance(ev, h11.ConnectionClosed) or ev is h11.PAUSED:
                    break
                if not isinstance(ev, h11.Request):
                    break
                keep = await self._one(ev)
                if not keep:
                    break
                try:
                    self.conn.start_next_cycle()
                except h11.LocalProtocolError:
                    break
        except asyncio.CancelledError:
            pass
        except Exception:  # a defect here must not take the server down
            log.exception("HTTP/1.1 connection failed")
        finally:
            self._close()

    async def _one(self, ev: h11.Request) -> bool:
        body = self.body = Body(self._resume)
        self._pump_body()
        req = Request(
            method=ev.method.decode("ascii", "replace"),
            target=ev.target.decode("utf-8", "replace"),
            headers=[(k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in ev.headers],
            body=body,
            closed=self.closed,
            http_version=ev.http_version.decode("ascii", "replace"),
        )
        try:
            resp = await self.app(req)
        except Exception:
            log.exception("serving %s %s", req.method, req.target)
            resp = Response(500, [("Content-Type", "text/plain; charset=utf-8")], b"Internal Server Error\n", close=True)
        ok = await self._write_response(resp, head=req.method == "HEAD")
        # A body the application did not read is read now and dropped, so
        # that the next request starts where it should, or, when closing,
        # so that the client reads the answer instead of a reset.
        if ok and not body.complete:
            try:
                await asyncio.wait_for(_discard(body), DRAIN_TIMEOUT)
            except (TimeoutError, Exception):
                return False
        self.body = None
        return ok and not resp.close and self.conn.our_state is h11.DONE and self.conn.their_state is h11.DONE

    async def _write_response(self, resp: Response, head: bool = False) -> bool:
        headers = [*COMMON_HEADERS, *resp.headers, ("Date", _date())]
        if resp.close:
            headers.append(("Connection", "close"))
        if resp.stream is None:
            headers.append(("Content-Length", str(len(resp.body))))
        elif self.conn.their_http_version == b"1.1":
            headers.append(("Transfer-Encoding", "chunked"))
        try:
            head_bytes = self._encode(h11.Response(status_code=resp.status, headers=headers, reason=_reason(resp.status)))
            if resp.stream is None:
                # one write per response: head, body and end together
                body = self._encode(h11.Data(data=resp.body)) if resp.body and not head else b""
                self._write(head_bytes + body + self._encode(h11.EndOfMessage()))
            else:
                self._write(head_bytes)
                stream = resp.stream
                try:
                    async for chunk in stream:
                        if chunk:
                            self._write(self._encode(h11.Data(data=chunk)))
                            if not self.can_write.is_set():
                                await self.can_write.wait()
                        if self.closed.is_set():
                            return False
                finally:
                    aclose = getattr(stream, "aclose", None)
                    if aclose is not None:
                        try:
                            await aclose()
                        except RuntimeError:  # the loop is closing the generator itself
                            pass
                self._write(self._encode(h11.EndOfMessage()))
        except h11.LocalProtocolError:
            return False
        if self.closed.is_set():
            return False
        await self._drain()
        return True

    def _encode(self, ev: h11.Event) -> bytes:
        return self.conn.send(ev) or b""

    def _write(self, data: bytes) -> None:
        if data and self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def _send(self, ev: h11.Event) -> None:
        self._write(self._encode(ev))

    async def _drain(self) -> None:
        if not self.can_write.is_set():
            await self.can_write.wait()

    async def _send_error(self, status: int, message: str) -> None:
        """Answer a request h11 could not parse, then close."""
        if self.conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return
        body = (message + "\n").encode()
        try:
            self._send(h11.Response(status_code=status, reason=_reason(status), headers=[
                ("Content-Type", "text/plain; charset=utf-8"),
                ("Content-Length", str(len(body))),
                ("Connection", "close"),
            ]))
            self._send(h11.Data(data=body))
            self._send(h11.EndOfMessage())
        except h11.LocalProtocolError:
            pass

    def _abort(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def _close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()


_DATE: list[Any] = [0, ""]


def _date() -> str:
    """The Date header (Go's servers send one), formatted once a second."""
    now = int(time.time())
    if _DATE[0] != now:
        _DATE[0], _DATE[1] = now, email.utils.formatdate(now, usegmt=True)
    return str(_DATE[1])


def _reason(status: int) -> bytes:
    try:
        return http.HTTPStatus(status).phrase.encode()
    except ValueError:
        return b""


class Http1Server:
    """A listener that speaks only HTTP/1.1 (tests; a --listen-metrics-urls
    listener). ``close`` ends every connection it accepted, streams
    included, and waits for them."""

    def __init__(self, app: App) -> None:
        self.app = app
        self.protocols: set[Http1Protocol] = set()
        self.server: asyncio.Server | None = None

    def _make(self) -> Http1Protocol:
        proto: Http1Protocol

        def closed() -> None:
            self.protocols.discard(proto)

        proto = Http1Protocol(self.app, closed)
        self.protocols.add(proto)
        return proto

    async def start(self, host: str, port: int) -> Http1Server:
        self.server = await asyncio.get_running_loop().create_server(self._make, host, port)
        return self

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
        tasks = []
        for p in list(self.protocols):
            if p.task is not None:
                p.task.cancel()
                tasks.append(p.task)
            if p.transport is not None:
                p.transport.close()
        if tasks:
            await asyncio.wait(tasks, timeout=5)
        if self.server is not None:
            await self.server.wait_closed()


async def serve(app: App, host: str, port: int) -> Http1Server:
    """Serve app on host:port over HTTP/1.1 only."""
    return await Http1Server(app).start(host, port)
