"""HTTP/1.1 on the client port: an asyncio protocol that parses requests
with ``httptools`` (llhttp, in C), hands each to an application (the JSON
gateway, /health, /version, /metrics) and writes its response, with
keep-alive, pipelining (answers in request order), chunked streaming
responses (watch, lease keep-alive) and backpressure both ways.

The protocol can start on a connection whose first bytes were already read
by someone else (the client port's listener reads them to tell HTTP/2 from
HTTP/1.1): call ``connection_made`` then ``data_received`` with those bytes.

An application is ``async def app(request) -> Response``; it reads the body
from ``request.body`` (all at once or as it arrives) and answers with bytes
or with an async iterator of chunks.

Requests the parser refuses are answered as Go's net/http (etcd's gateway)
answers them: 400 (or 431 for a head over MAX_HEAD, 501 for a transfer
coding other than chunked, 505 for an HTTP version other than 1.x) with a
plain-text body, then the connection is closed. As Go's, lines of a request
head may end in a bare LF. A chunked body that breaks after its head was
read is the application's to answer: its reader gets BadBody with Go's text
for the fault, and the connection closes after that answer.
"""

from __future__ import annotations

import asyncio
import email.utils
import http
import logging
import re
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, cast
from urllib.parse import unquote

import httptools

log = logging.getLogger("petcd.http1")

# Request heads larger than this (request line to the blank line) are
# refused with 431: Go's DefaultMaxHeaderBytes (1 MiB) and the 4096 bytes
# its reader allows over it.
MAX_HEAD = (1 << 20) + 4096
# Body bytes buffered before the protocol stops reading the socket.
BODY_HIGH_WATER = 1 << 20
# Parsed requests waiting for their turn before the protocol stops reading
# the socket (a client pipelining faster than it is answered).
MAX_PIPELINED = 64


# Seconds a connection refused for a request it could not read stays
# half-open, its input dropped, before it is closed (Go waits as long).
LINGER = 0.5

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


class BadBody(Exception):
    """A request body whose chunked framing broke: ``str()`` is what Go's
    net/http says of the fault, ``data`` what arrived before it (for
    ``read``; an iterator has yielded it already)."""

    def __init__(self, why: str, data: bytes = b"") -> None:
        super().__init__(why)
        self.data = data


# What Go's chunked reader says of the faults llhttp finds in a chunked
# body (llhttp's reason -> Go's error text); any other is Go's catch-all.
_GO_BODY_ERRORS = {
    "Invalid character in chunk size": "invalid byte in chunk length",
    "Chunk size overflow": "http chunk length too large",
}
_GO_MALFORMED_CHUNKED = "malformed chunked encoding"


class _Refused(Exception):
    """A request the protocol answers itself (raw response bytes) and then
    closes the connection on."""

    def __init__(self, answer: bytes) -> None:
        super().__init__(answer[:40])
        self.answer = answer


class Body:
    """A request's body as it arrives: ``read(limit)`` for all of it,
    ``async for`` for chunks. Reading it resumes a paused socket."""

    def __init__(self, resume: Callable[[], None], first_read: Callable[[], None] | None = None) -> None:
        self._chunks: list[bytes] = []
        self._size = 0
        self._done = False
        self._cut_short = False  # the connection was lost before the body's end
        self._broken: str | None = None  # the framing broke: Go's text for it
        self._ready = asyncio.Event()
        self._resume = resume
        # called once, when the reader first asks for bytes (100 Continue)
        self._first_read = first_read

    # fed by the protocol
    def _feed(self, data: bytes) -> None:
        self._chunks.append(data)
        self._size += len(data)
        self._ready.set()

    def _end(self) -> None:
        self._done = True
        self._ready.set()

    def _cut(self) -> None:
        """The connection was lost before the body ended: a reader gets
        ConnectionResetError, never a truncated body it could act on."""
        if not self._done:
            self._cut_short = True
        self._end()

    def _fail(self, why: str) -> None:
        """The body's framing broke: a reader gets BadBody(why) after the
        bytes that came before the fault."""
        if not self._done:
            self._broken = why
        self._end()

    def _want(self) -> None:
        if self._first_read is not None:
            first, self._first_read = self._first_read, None
            first()
        self._resume()

    @property
    def buffered(self) -> int:
        return self._size

    @property
    def complete(self) -> bool:
        return self._done

    @property
    def failed(self) -> bool:
        """The body ended in a fault (broken framing, lost connection)."""
        return self._cut_short or self._broken is not None

    async def read(self, limit: int) -> bytes:
        """The whole body; BodyTooLarge once more than limit bytes arrived."""
        while not self._done:
            if self._size > limit:
                raise BodyTooLarge(limit)
            self._ready.clear()
            self._want()
            await self._ready.wait()
        if self._cut_short:
            raise ConnectionResetError("the connection was lost before the request body ended")
        if self._size > limit:
            raise BodyTooLarge(limit)
        data = b"".join(self._chunks)
        self._chunks = []
        self._size = 0
        if self._broken is not None:
            raise BadBody(self._broken, data)
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
                if self._cut_short:
                    raise ConnectionResetError("the connection was lost before the request body ended")
                if self._broken is not None:
                    raise BadBody(self._broken)
                return
            self._ready.clear()
            self._want()
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
    # set when the client has gone away, or has stopped sending (end of
    # file) right after this request (none pipelined after it): what
    # cancels a Go handler's context once its body has been read
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    # called once, when ended is set (end())
    on_end: list[Callable[[], None]] = field(default_factory=list)

    def end(self) -> None:
        """The client stopped sending or went away: set ended, run on_end."""
        if self.ended.is_set():
            return
        self.ended.set()
        callbacks, self.on_end = self.on_end, []
        for cb in callbacks:
            cb()

    @property
    def path(self) -> str:
        """The path, percent-decoded (as Go's URL.Path, which routes)."""
        return unquote(self.target.split("?", 1)[0], errors="surrogateescape")

    @property
    def raw_path(self) -> str:
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
    # Trailer fields sent after a chunked body. As Go's net/http, a response
    # that declares trailers is sent chunked (no Content-Length) even when
    # its body is whole; to an HTTP/1.0 client, unchunked, and the
    # connection closes (the trailers are lost, as Go loses them).
    trailers: list[tuple[str, str]] | None = None


App = Callable[[Request], Awaitable[Response]]

# Headers etcd's gateway puts on every response (CORS for browser clients).
COMMON_HEADERS = [
    ("Access-Control-Allow-Headers", "accept, content-type, authorization"),
    ("Access-Control-Allow-Methods", "POST, GET, OPTIONS, PUT, DELETE"),
    ("Access-Control-Allow-Origin", "*"),
]

_COMMON = b"".join(f"{k}: {v}\r\n".encode("latin-1") for k, v in COMMON_HEADERS)
_CLOSE = b"Connection: close\r\n"
_KEEP_ALIVE = b"Connection: keep-alive\r\n"
_CHUNKED = b"Transfer-Encoding: chunked\r\n"
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


def _refusal(status: int, text: str = "") -> bytes:
    """What Go's net/http writes for a request it cannot read (server.go)."""
    reason = http.HTTPStatus(status).phrase
    public = f"{status} {reason}: {text}" if text else f"{status} {reason}"
    return (f"HTTP/1.1 {public}\r\nContent-Type: text/plain; charset=utf-8\r\n"
            f"Connection: close\r\n\r\n{public}").encode("latin-1")


_BAD_REQUEST = _refusal(400)
# a "%" not followed by two hex digits: a path Go's URL parser refuses
_BAD_ESCAPE = re.compile(rb"%(?![0-9A-Fa-f]{2})")
_HEAD_TOO_LARGE = _refusal(431)
_BAD_VERSION = _refusal(505)
_NO_HOST = _refusal(400, "missing required Host header")
_BAD_TRANSFER_ENCODING = (b"HTTP/1.1 501 Not Implemented\r\nContent-Type: text/plain; charset=utf-8\r\n"
                          b"Connection: close\r\n\r\nUnsupported transfer encoding")


def _parse_refusal(exc: Exception) -> bytes:
    """The answer to a request llhttp refused."""
    text = str(exc)
    if "Transfer-Encoding" in text:
        return _BAD_TRANSFER_ENCODING
    if text == "Invalid HTTP version":
        return _BAD_VERSION
    return _BAD_REQUEST


class _Pending:
    """A parsed request head waiting for its turn."""

    __slots__ = ("request", "keep_alive", "expect_continue")

    def __init__(self, request: Request, keep_alive: bool, expect_continue: bool) -> None:
        self.request = request
        self.keep_alive = keep_alive
        self.expect_continue = expect_continue


class Http1Protocol(asyncio.Protocol):
    """One HTTP/1.1 connection. Requests are served one after another
    (pipelined ones wait their turn); a streaming response ends when its
    producer ends or the client goes away."""

    def __init__(self, app: App, on_close: Callable[[], None] | None = None) -> None:
        self.app = app
        self.on_close = on_close
        self.parser = self._new_parser()
        self.transport: asyncio.Transport | None = None
        self.task: asyncio.Task[None] | None = None
        self.closed = asyncio.Event()
        self._last_request: Request | None = None  # the latest request read
        self._serving: Request | None = None  # the request being answered
        self.reading_paused = False
        self.can_write = asyncio.Event()
        self.can_write.set()
        # parsed requests (or a refusal's bytes, last) in arrival order
        self.queue: deque[_Pending | bytes] = deque()
        self.queued = asyncio.Event()
        self.eof = False
        self.refused = False  # the parser stopped; later bytes are ignored
        # the message being parsed
        self._in_head = False
        self._head_size = 0  # bytes of head seen through the callbacks
        self._head_tail = 0  # bytes of reads that fell wholly inside one head
        # (llhttp tells no offsets: a read in which a head begins counts
        # whole when nothing else came before the head in it)
        self._fed_other = False  # this read held body bytes or a message's end
        self._head_alone = False
        # The parser is between messages or in a head: its next bytes are a
        # head's lines, which may end in a bare LF (_feed).
        self._in_lines = True
        self._last_byte = b""  # the previous read's last byte
        self._url = b""
        self._headers: list[tuple[str, str]] = []
        self._body: Body | None = None
        self._pending: _Pending | None = None  # the request _body belongs to
        # An Upgrade (or CONNECT) request's body llhttp does not read: it is
        # parsed as the body of a made-up head fed to a fresh parser.
        self._upgrade_body: tuple[Body, bytes] | None = None
        self._synthetic: Body | None = None

    def _new_parser(self) -> httptools.HttpRequestParser:
        parser = httptools.HttpRequestParser(self)
        lenient = getattr(parser, "set_dangerous_leniencies", None)
        if lenient is not None:
            # Go (and RFC 9112) take Transfer-Encoding: chunked over a
            # Content-Length sent with it; llhttp would refuse the request.
            lenient(lenient_chunked_length=True)
        return parser

    # --- asyncio callbacks ---------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.task = asyncio.get_running_loop().create_task(self._serve())

    def data_received(self, data: bytes) -> None:
        if self.refused:
            return
        cut = max(MAX_HEAD - self._head_tail + 1, 1)
        if self._in_head and len(data) > cut:
            # Never hold more of a head than the limit (the parser keeps a
            # header until its end): feed up to a byte past it, the rest
            # only if the head ended there.
            self.data_received(data[:cut])
            if not self.refused:
                self.data_received(data[cut:])
            return
        was_in_head = self._in_head
        self._fed_other = False
        try:
            self._feed(data)
        except httptools.HttpParserUpgrade as exc:
            self._after_upgrade(data[int(exc.args[0]):])
            return
        except httptools.HttpParserCallbackError as exc:
            # a callback refused the request (httptools chains what it raised)
            refused = exc.__context__
            if not isinstance(refused, _Refused):
                log.error("HTTP/1.1 parser callback failed", exc_info=refused)
                refused = _Refused(_BAD_REQUEST)
            self._refuse(refused.answer)
            return
        except httptools.HttpParserError as exc:
            if self._body is not None and "Transfer-Encoding" not in str(exc):
                self._break_body(str(exc))
            else:
                self._refuse(_parse_refusal(exc))
            return
        if self._in_head:
            if was_in_head or self._head_alone:
                self._head_tail += len(data)
            if self._head_tail > MAX_HEAD or self._head_size > MAX_HEAD:
                self._refuse(_HEAD_TOO_LARGE)
                return
        body = self._body
        if ((body is not None and body.buffered > BODY_HIGH_WATER) or len(self.queue) > MAX_PIPELINED) \
                and not self.reading_paused and self.transport is not None:
            self.reading_paused = True
            self.transport.pause_reading()

    def _feed(self, data: bytes) -> None:
        """Feed the parser. Go reads a head's lines ending in a bare LF as
        if they ended in CRLF; llhttp refuses them. So a read holding a
        bare LF is fed line by line, and a head's line (the parser's state
        says which are) that ends in one is fed ending in CRLF. A body's
        bytes are fed as they came."""
        if data.count(b"\n") == data.count(b"\r\n"):
            self.parser.feed_data(data)  # no bare LF: the usual case
            self._last_byte = data[-1:]
            return
        start = 0
        while start < len(data):
            end = data.find(b"\n", start) + 1 or len(data)
            line = data[start:end]
            bare = line.endswith(b"\n") and (data[end - 2:end - 1] if end >= 2 else self._last_byte) != b"\r"
            try:
                self.parser.feed_data(line[:-1] + b"\r\n" if bare and self._in_lines else line)
            except httptools.HttpParserUpgrade as exc:
                # an offset into the read (a CR added at the line's end
                # moves no byte before it)
                raise httptools.HttpParserUpgrade(start + min(int(exc.args[0]), end - start)) from None
            except httptools.HttpParserError as exc:
                # a request line that began within this line, after the
                # end of the body before it, and ends in a bare LF
                if not (bare and str(exc) == "Expected CRLF after version"):
                    raise
                self._restart_request_line()
            start = end
        self._last_byte = data[-1:]

    def _restart_request_line(self) -> None:
        """The parser refused the bare LF ending the request line it has
        read: a fresh parser reads that line again ending in CRLF."""
        parser = self.parser
        line = b"%s %s HTTP/%s\r\n" % (parser.get_method(), self._url, parser.get_http_version().encode("ascii"))
        self.parser = self._new_parser()
        self.parser.feed_data(line)

    def eof_received(self) -> bool | None:
        self.eof = True
        if self._last_request is not None:
            self._last_request.end()
        body = self._body
        if body is not None:  # the client stopped in the middle of a body
            self._body = None
            body._end()
            self._abort()
        self.queued.set()
        return True  # keep the write side open: a response may still be on its way

    def pause_writing(self) -> None:
        self.can_write.clear()

    def resume_writing(self) -> None:
        self.can_write.set()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed.set()
        for req in (self._last_request, self._serving):
            if req is not None:
                req.end()
        self.can_write.set()
        self.queued.set()
        if self._body is not None:
            self._body._cut()
        for item in self.queue:
            if isinstance(item, _Pending):
                item.request.body._cut()
                item.request.end()
        if self.task is not None and not self.task.done():
            self.task.cancel()
        if self.on_close is not None:
            self.on_close()

    # --- parser callbacks (httptools) ------------------------------------------------

    def on_message_begin(self) -> None:
        if self._synthetic is not None:
            return
        self._in_head = True
        self._head_size = self._head_tail = 0
        self._head_alone = not self._fed_other
        self._url = b""
        self._headers = []

    def on_url(self, url: bytes) -> None:
        if self._synthetic is None:
            self._url += url
            self._head_size += len(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._in_head and self._synthetic is None:  # not a chunked body's trailer
            self._headers.append((name.decode("latin-1").lower(), value.decode("latin-1")))
            self._head_size += len(name) + len(value) + 4

    def on_headers_complete(self) -> None:
        self._in_lines = False
        if self._synthetic is not None:
            self._body, self._synthetic = self._synthetic, None
            return
        self._in_head = False
        parser = self.parser
        # the head's bytes as sent with one space after each colon: the
        # request line's spaces, version and CRLF, and the blank line
        if self._head_size + len(parser.get_method()) + 14 > MAX_HEAD:
            raise _Refused(_HEAD_TOO_LARGE)
        version = parser.get_http_version()
        if not version.startswith("1."):
            raise _Refused(_BAD_VERSION)
        connection = expect = te = ""
        host = False
        length = 0
        for k, v in self._headers:
            if k == "host":
                host = True
            elif k == "connection":
                connection += "," + v.lower()
            elif k == "transfer-encoding":
                te += "," + v.lower()
            elif k == "expect":
                expect = v.strip().lower()
            elif k == "content-length" and v.strip().isdigit():
                length = int(v)
        if te and te.replace(" ", "").replace("\t", "") != ",chunked":
            raise _Refused(_BAD_TRANSFER_ENCODING)
        http11 = version != "1.0"
        if http11 and not host:
            raise _Refused(_NO_HOST)
        if _BAD_ESCAPE.search(self._url.split(b"?", 1)[0]):
            raise _Refused(_BAD_REQUEST)  # Go's URL parser refuses the path
        # Keep-alive as Go's server has it: HTTP/1.1 unless the client says
        # close, HTTP/1.0 only if it asks for keep-alive.
        tokens = {t.strip() for t in connection.split(",")}
        keep_alive = "close" not in tokens if http11 else "keep-alive" in tokens
        expect_continue = http11 and expect == "100-continue"
        body = self._body = Body(self._resume, self._send_continue if expect_continue else None)
        request = Request(
            method=parser.get_method().decode("ascii", "replace"),
            target=self._url.decode("utf-8", "replace"),
            headers=self._headers,
            body=body,
            closed=self.closed,
            http_version=version,
        )
        self._last_request = request
        self._pending = _Pending(request, keep_alive, expect_continue)
        self.queue.append(self._pending)
        self.queued.set()
        if parser.should_upgrade() and (te or length):
            self._upgrade_body = (body, b"Transfer-Encoding: chunked" if te else b"Content-Length: %d" % length)

    def on_body(self, data: bytes) -> None:
        self._fed_other = True
        if self._body is not None:
            self._body._feed(data)

    def on_message_complete(self) -> None:
        self._fed_other = True
        self._in_lines = True
        body = self._body
        self._body = self._pending = None
        if body is not None and (self._upgrade_body is None or self._upgrade_body[0] is not body):
            body._end()

    def _after_upgrade(self, rest: bytes) -> None:
        """llhttp stops at an Upgrade (or CONNECT) request; like Go's
        net/http (and h11) we do not switch, and go on reading HTTP/1.1."""
        self.parser = self._new_parser()
        if self._upgrade_body is not None:
            body, framing = self._upgrade_body
            self._upgrade_body = None
            self._synthetic = body
            self.parser.feed_data(b"PUT / HTTP/1.1\r\nHost: x\r\n" + framing + b"\r\n\r\n")
        if rest:
            self.data_received(rest)

    def _refuse(self, answer: bytes) -> None:
        """Stop parsing; the requests before this one are answered, then
        this answer, then the connection closes."""
        self.refused = True
        self._in_head = False
        body, pending = self._body, self._pending
        self._body = self._pending = None
        if body is not None:
            body._end()
            if not self.queue or self.queue[-1] is not pending:
                # the application already has this request: its body broke
                self._abort()
                return
            self.queue.pop()  # refused before anyone saw it (its head was bad)
        self.queue.append(answer)
        self.queued.set()

    def _break_body(self, reason: str) -> None:
        """The chunked body being read broke (reason: llhttp's): its reader
        gets BadBody with Go's words for the fault, nothing after it is
        parsed, and the connection closes once the request is answered
        (Go's net/http cannot tell where the next request would begin
        either)."""
        self.refused = True
        self._in_head = False
        body = self._body
        self._body = self._pending = None
        if body is not None:
            body._fail(_GO_BODY_ERRORS.get(reason, _GO_MALFORMED_CHUNKED))
        self.queued.set()

    def _resume(self) -> None:
        if self.reading_paused and self.transport is not None and not self.transport.is_closing():
            self.reading_paused = False
            self.transport.resume_reading()

    def _send_continue(self) -> None:
        self._write(_CONTINUE)

    # --- serving ---------------------------------------------------------------------

    async def _serve(self) -> None:
        try:
            while True:
                while not self.queue:
                    if self.eof or self.closed.is_set():
                        return
                    self.queued.clear()
                    self._resume()
                    await self.queued.wait()
                item = self.queue.popleft()
                if isinstance(item, bytes):
                    self._write(item)
                    await self._linger()
                    return
                if self.reading_paused and len(self.queue) <= MAX_PIPELINED:
                    self._resume()
                if not await self._one(item):
                    return
        except asyncio.CancelledError:
            pass
        except Exception:  # a defect here must not take the server down
            log.exception("HTTP/1.1 connection failed")
        finally:
            self._close()

    async def _linger(self) -> None:
        """After a refusal, as Go's closeWriteAndWait: half-close, then read
        and drop what the client still sends for a moment, so that closing
        does not reset the answer away before the client read it."""
        t = self.transport
        if t is None or t.is_closing() or not t.can_write_eof():
            return
        t.write_eof()
        self._resume()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + LINGER
        while not self.eof and not self.closed.is_set():
            self.queued.clear()
            try:
                await asyncio.wait_for(self.queued.wait(), deadline - loop.time())
            except TimeoutError:
                return

    async def _one(self, pending: _Pending) -> bool:
        req = pending.request
        body = req.body
        self._serving = req
        try:
            resp = await self.app(req)
        except Exception:
            log.exception("serving %s %s", req.method, req.target)
            resp = Response(500, [("Content-Type", "text/plain; charset=utf-8")], b"Internal Server Error\n", close=True)
        # A client still waiting for 100 Continue will not send the body the
        # application did not read: the connection cannot be reused, and the
        # answer says so (as Go's net/http does).
        close = resp.close or (pending.expect_continue and body._first_read is not None and not body.complete) \
            or body.failed  # (Go's answer says so when its reader saw the fault)
        # no length and no chunks to HTTP/1.0: the body ends with the connection
        close = close or ((resp.trailers is not None or resp.stream is not None) and req.http_version == "1.0")
        ok = await self._write_response(resp, req, pending.keep_alive, close)
        if close and pending.expect_continue and body._first_read is not None:
            return False
        if ok and not body.complete:
            # A body the application did not read is read now and dropped,
            # so that the next request starts where it should, or, when
            # closing, so that the client reads the answer instead of a reset.
            try:
                await asyncio.wait_for(_discard(body), DRAIN_TIMEOUT)
            except (TimeoutError, Exception):
                return False
        return ok and pending.keep_alive and not close

    async def _write_response(self, resp: Response, req: Request, keep_alive: bool, close: bool) -> bool:
        """Write resp (keep_alive: what the client asked for; close: whether
        this answer ends the connection anyway); False when the connection
        is gone or the stream could not be sent whole. The headers the
        protocol adds come in Go's order: Date, Content-Length, Connection,
        Transfer-Encoding."""
        http10 = req.http_version == "1.0"
        head = [_status_line(resp.status, http10), _COMMON]
        for k, v in resp.headers:
            head.append(f"{k}: {v}\r\n".encode("latin-1"))
        head.append(_date_line())
        if resp.stream is None and resp.trailers is None:
            head.append(b"Content-Length: %d\r\n" % len(resp.body))
        if http10:
            # closing is HTTP/1.0's default: said only when it stays open
            if keep_alive and not close:
                head.append(_KEEP_ALIVE)
        elif close or not keep_alive:
            head.append(_CLOSE)
        if (resp.stream is not None or resp.trailers is not None) and req.http_version != "1.0":
            head.append(_CHUNKED)
        head.append(b"\r\n")
        if resp.stream is None and resp.trailers is not None:
            if req.method != "HEAD":
                if req.http_version == "1.0":
                    head.append(resp.body)
                else:
                    if resp.body:
                        head.append(b"%x\r\n%s\r\n" % (len(resp.body), resp.body))
                    head.append(b"0\r\n" + b"".join(f"{k}: {v}\r\n".encode("latin-1") for k, v in resp.trailers)
                                + b"\r\n")
            self._write(b"".join(head))
        elif resp.stream is None:
            # one write per response: head and body together
            if resp.body and req.method != "HEAD":
                head.append(resp.body)
            self._write(b"".join(head))
        else:
            self._write(b"".join(head))
            stream = resp.stream
            chunked = req.http_version != "1.0"
            try:
                if req.method != "HEAD":
                    async for chunk in stream:
                        if chunk:
                            self._write(b"%x\r\n%s\r\n" % (len(chunk), chunk) if chunked else chunk)
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
            if req.method != "HEAD" and chunked:
                self._write(b"0\r\n\r\n")
        if self.closed.is_set():
            return False
        await self._drain()
        return True

    def _write(self, data: bytes) -> None:
        if data and self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    async def _drain(self) -> None:
        if not self.can_write.is_set():
            await self.can_write.wait()

    def _abort(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def _close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()


_DATE: list[Any] = [0, b""]


def _date_line() -> bytes:
    """The Date header (Go's servers send one), formatted once a second."""
    now = int(time.time())
    if _DATE[0] != now:
        _DATE[0], _DATE[1] = now, b"Date: %s\r\n" % email.utils.formatdate(now, usegmt=True).encode("ascii")
    return cast(bytes, _DATE[1])


_STATUS_LINES: dict[tuple[int, bool], bytes] = {}


def _status_line(status: int, http10: bool = False) -> bytes:
    """The status line, in the request's version (as Go answers HTTP/1.0)."""
    line = _STATUS_LINES.get((status, http10))
    if line is None:
        version = b"1.0" if http10 else b"1.1"
        line = _STATUS_LINES[(status, http10)] = b"HTTP/%s %d %s\r\n" % (version, status, _reason(status))
    return line


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
