"""The server side of one HTTP/2 connection, sans-I/O (RFC 9113), in h11's
style: ``receive_data(bytes)`` returns events, the ``send_*`` methods queue
frames, ``data_to_send()`` hands the bytes to write. No sockets, clocks or
tasks here; the asyncio protocol (server.py) owns those.

Guarantees:
- every protocol error is answered as the RFC says: a stream error resets
  only that stream (RST_STREAM with the code), a connection error sends
  GOAWAY with the code and the last stream id, emits ``ConnectionFailed`` and
  makes the connection ignore all further input;
- nothing is ever sent past the peer's flow-control windows: DATA beyond them
  waits in the stream's buffer (trailers queue behind it) and goes out as
  WINDOW_UPDATEs arrive, split to the peer's max frame size;
- received DATA is credited back (WINDOW_UPDATE) only when the owner says it
  was consumed (``acknowledge_received_data``), so a peer cannot make us
  buffer without bound.
"""

from __future__ import annotations

import collections
import struct
from dataclasses import dataclass
from typing import Any, cast

import hpack
from hpack.table import HeaderTable

from petcd.http2 import frames as f
from petcd.http2.frames import ErrorCode

_U32 = struct.Struct(">I").unpack_from
_SETTING = struct.Struct(">HI").unpack_from
_GOAWAY = struct.Struct(">II").unpack_from

# Closed-by-reset stream ids remembered, so frames the peer sent before it
# saw our RST_STREAM are dropped quietly instead of treated as errors.
RECENT_RESETS = 1024

_CONNECTION_HEADERS = frozenset((b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade"))
_REQUEST_PSEUDO = frozenset((b":method", b":scheme", b":path", b":authority"))


@dataclass(frozen=True)
class H2Settings:
    """What this side advertises and enforces."""

    header_table_size: int = 4096
    max_concurrent_streams: int = 2**31 - 1
    initial_window_size: int = 1 << 20  # per stream, for DATA we receive
    connection_window: int = 16 << 20  # for DATA we receive, over all streams
    max_frame_size: int = f.DEFAULT_MAX_FRAME_SIZE
    max_header_list_size: int = 1 << 20
    # header blocks (HEADERS + CONTINUATION) larger than this end the
    # connection: a CONTINUATION flood must not grow memory without bound
    max_header_block: int = 2 << 20


# --- events -----------------------------------------------------------------


class Event:
    __slots__ = ()

    def __repr__(self) -> str:
        names: tuple[str, ...] = tuple(self.__slots__)
        fields = ", ".join(f"{k}={getattr(self, k)!r}" for k in names)
        return f"{type(self).__name__}({fields})"


class RequestReceived(Event):
    """A new stream's request headers (names and values as bytes)."""

    __slots__ = ("stream_id", "headers", "end_stream")

    def __init__(self, stream_id: int, headers: list[tuple[bytes, bytes]], end_stream: bool) -> None:
        self.stream_id = stream_id
        self.headers = headers
        self.end_stream = end_stream


class DataReceived(Event):
    """DATA on an open stream; flow_len (padding included) is what to pass
    to acknowledge_received_data once consumed."""

    __slots__ = ("stream_id", "data", "flow_len", "end_stream")

    def __init__(self, stream_id: int, data: bytes, flow_len: int, end_stream: bool) -> None:
        self.stream_id = stream_id
        self.data = data
        self.flow_len = flow_len
        self.end_stream = end_stream


class TrailersReceived(Event):
    """The peer's trailers, which end its side of the stream."""

    __slots__ = ("stream_id", "headers")

    def __init__(self, stream_id: int, headers: list[tuple[bytes, bytes]]) -> None:
        self.stream_id = stream_id
        self.headers = headers


class StreamReset(Event):
    """A stream ended abnormally: the peer reset it (remote) or we did,
    answering a stream error."""

    __slots__ = ("stream_id", "error_code", "remote")

    def __init__(self, stream_id: int, error_code: int, remote: bool) -> None:
        self.stream_id = stream_id
        self.error_code = error_code
        self.remote = remote


class PingReceived(Event):
    """A PING (already acknowledged)."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data


class PingAcked(Event):
    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data


class SettingsReceived(Event):
    """The peer's SETTINGS (already applied and acknowledged)."""

    __slots__ = ("changes",)

    def __init__(self, changes: dict[int, int]) -> None:
        self.changes = changes


class SettingsAcked(Event):
    __slots__ = ()


class WindowUpdated(Event):
    """Send window grew (stream_id 0: the connection's)."""

    __slots__ = ("stream_id",)

    def __init__(self, stream_id: int) -> None:
        self.stream_id = stream_id


class GoAwayReceived(Event):
    __slots__ = ("error_code", "last_stream_id", "debug")

    def __init__(self, error_code: int, last_stream_id: int, debug: bytes) -> None:
        self.error_code = error_code
        self.last_stream_id = last_stream_id
        self.debug = debug


class ConnectionFailed(Event):
    """We answered a connection error with GOAWAY; write what is queued and
    close. No further events come from this connection."""

    __slots__ = ("error_code", "reason")

    def __init__(self, error_code: int, reason: str) -> None:
        self.error_code = error_code
        self.reason = reason


class _ConnectionError(Exception):
    def __init__(self, code: ErrorCode, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


class _StreamError(Exception):
    def __init__(self, stream_id: int, code: ErrorCode) -> None:
        super().__init__(f"stream {stream_id}: {code.name}")
        self.stream_id = stream_id
        self.code = code


# --- streams ------------------------------------------------------------------


class _Stream:
    """One stream's flow-control state and unsent output."""

    __slots__ = (
        "id",
        "send_window",
        "recv_window",
        "unacked",
        "remote_closed",
        "local_closed",
        "out",
        "out_pos",
        "end_pending",
        "trailers",
    )

    def __init__(self, stream_id: int, send_window: int, recv_window: int) -> None:
        self.id = stream_id
        self.send_window = send_window
        self.recv_window = recv_window
        self.unacked = 0
        self.remote_closed = False
        self.local_closed = False
        self.out = bytearray()  # DATA payload not yet sent (from out_pos on)
        self.out_pos = 0
        self.end_pending = False  # END_STREAM goes on the last DATA of out
        self.trailers: bytes | None = None  # a header block to send after out

    def pending(self) -> int:
        return len(self.out) - self.out_pos


# --- the connection -------------------------------------------------------------


class H2Connection:
    """One server-side HTTP/2 connection. Call ``initiate()`` once, then
    feed bytes and collect output."""

    def __init__(self, settings: H2Settings | None = None) -> None:
        self.local = settings or H2Settings()
        self.decoder = hpack.Decoder(max_header_list_size=self.local.max_header_list_size)
        self.decoder.max_allowed_table_size = self.local.header_table_size
        self.inbuf = bytearray()
        self.out: list[bytes] = []
        self.streams: dict[int, _Stream] = {}
        self.highest_stream_id = 0
        self.recent_resets: set[int] = set()
        self._recent_order: collections.deque[int] = collections.deque()
        self.preface_done = False
        self.settings_seen = False
        self.failed = False
        self.goaway_sent = False
        self.last_stream_id = 2**31 - 1  # streams above this are refused after our GOAWAY
        # the peer's settings (defaults until its SETTINGS arrive)
        self.remote_initial_window = f.DEFAULT_WINDOW
        self.remote_max_frame = f.DEFAULT_MAX_FRAME_SIZE
        self.remote_max_header_list = 2**32 - 1
        self.remote_max_concurrent = 2**32 - 1
        self.table_size_update = False  # next header block must lower our encoder's table size
        # flow control
        self.conn_send_window = f.DEFAULT_WINDOW
        self.conn_recv_window = self.local.connection_window
        self.conn_unacked = 0
        self.stream_recv_window = max(self.local.initial_window_size, f.DEFAULT_WINDOW)
        self.blocked: dict[int, _Stream] = {}  # streams with DATA waiting for window, in order
        # a header block being assembled: (stream id, HEADERS flags, fragments, priority error)
        self._hb: tuple[int, int, bytearray, bool] | None = None
        # header blocks that changed no dynamic table, decoded before
        self._hcache: dict[bytes, tuple[object, list[tuple[bytes, bytes]]]] = {}

    # -- output -------------------------------------------------------------------

    def initiate(self) -> None:
        """Queue our SETTINGS and the connection window we grant."""
        loc = self.local
        s = {
            f.SETTINGS_MAX_CONCURRENT_STREAMS: loc.max_concurrent_streams,
            f.SETTINGS_INITIAL_WINDOW_SIZE: loc.initial_window_size,
            f.SETTINGS_MAX_HEADER_LIST_SIZE: loc.max_header_list_size,
        }
        if loc.header_table_size != 4096:
            s[f.SETTINGS_HEADER_TABLE_SIZE] = loc.header_table_size
        if loc.max_frame_size != f.DEFAULT_MAX_FRAME_SIZE:
            s[f.SETTINGS_MAX_FRAME_SIZE] = loc.max_frame_size
        self.out.append(f.settings_frame(s))
        if loc.connection_window > f.DEFAULT_WINDOW:
            self.out.append(f.window_update(0, loc.connection_window - f.DEFAULT_WINDOW))

    def data_to_send(self) -> bytes:
        out = self.out
        if not out:
            return b""
        data = out[0] if len(out) == 1 else b"".join(out)
        out.clear()
        return data

    def send_headers(self, stream_id: int, block: bytes, end_stream: bool = False) -> None:
        """Queue a header block (response headers, or trailers when
        end_stream). Trailers wait behind any DATA still buffered."""
        st = self.streams.get(stream_id)
        if st is None or st.local_closed or self.failed:
            return
        if end_stream and st.out_pos < len(st.out):
            st.trailers = block
            return
        self._write_headers(st, block, end_stream)

    def _write_headers(self, st: _Stream, block: bytes, end_stream: bool) -> None:
        if self.table_size_update:
            block = b"\x20" + block  # a dynamic table size update to 0
            self.table_size_update = False
        flags = f.FLAG_END_STREAM if end_stream else 0
        limit = self.remote_max_frame
        if len(block) <= limit:
            self.out.append(f.frame_header(len(block), f.HEADERS, flags | f.FLAG_END_HEADERS, st.id) + block)
        else:
            self.out.append(f.frame(f.HEADERS, flags, st.id, block[:limit]))
            pos = limit
            while pos < len(block):
                chunk = block[pos : pos + limit]
                pos += limit
                last = pos >= len(block)
                self.out.append(f.frame(f.CONTINUATION, f.FLAG_END_HEADERS if last else 0, st.id, chunk))
        if end_stream:
            self._local_end(st)

    def send_data(self, stream_id: int, data: bytes, end_stream: bool = False) -> None:
        """Queue DATA; what the windows do not allow yet is buffered."""
        st = self.streams.get(stream_id)
        if st is None or st.local_closed or st.end_pending or self.failed:
            return
        n = len(data)
        if (
            st.out_pos == len(st.out)
            and n <= st.send_window
            and n <= self.conn_send_window
            and n <= self.remote_max_frame
        ):
            # the common case: it all goes at once in one frame
            st.send_window -= n
            self.conn_send_window -= n
            self.out.append(f.frame_header(n, f.DATA, f.FLAG_END_STREAM if end_stream else 0, stream_id) + data)
            if end_stream:
                self._local_end(st)
            return
        if st.out_pos:
            del st.out[: st.out_pos]
            st.out_pos = 0
        st.out += data
        st.end_pending = end_stream
        self._flush(st)

    def buffered(self, stream_id: int) -> int:
        """Bytes of DATA queued on the stream that the windows hold back."""
        st = self.streams.get(stream_id)
        return 0 if st is None else len(st.out) - st.out_pos

    def _flush(self, st: _Stream) -> None:
        out = st.out
        pos = st.out_pos
        end = len(out)
        limit = self.remote_max_frame
        sent_end = False
        while pos < end:
            n = min(end - pos, st.send_window, self.conn_send_window, limit)
            if n <= 0:
                break
            last = pos + n == end
            flags = f.FLAG_END_STREAM if last and st.end_pending and st.trailers is None else 0
            sent_end = bool(flags)
            self.out.append(f.frame_header(n, f.DATA, flags, st.id) + bytes(out[pos : pos + n]))
            pos += n
            st.send_window -= n
            self.conn_send_window -= n
        if pos < end:
            st.out_pos = pos
            self.blocked[st.id] = st
            return
        out.clear()
        st.out_pos = 0
        self.blocked.pop(st.id, None)
        if st.trailers is not None:
            block, st.trailers = st.trailers, None
            self._write_headers(st, block, True)
        elif st.end_pending:
            if not sent_end:
                self.out.append(f.frame_header(0, f.DATA, f.FLAG_END_STREAM, st.id))
            self._local_end(st)

    def _flush_blocked(self) -> None:
        for st in list(self.blocked.values()):
            if self.conn_send_window <= 0:
                return
            if st.send_window > 0:
                self._flush(st)

    def reset_stream(self, stream_id: int, code: int = ErrorCode.CANCEL) -> None:
        """RST_STREAM and forget the stream."""
        if self.failed:
            return
        if self.streams.get(stream_id) is not None:
            self.out.append(f.rst_stream(stream_id, code))
            self._forget(stream_id)

    def close(self, code: int = ErrorCode.NO_ERROR, debug: bytes = b"") -> None:
        """GOAWAY: streams up to the highest seen may finish; newer ones are
        refused."""
        if self.failed or (self.goaway_sent and code == ErrorCode.NO_ERROR):
            return
        self.goaway_sent = True
        self.last_stream_id = self.highest_stream_id
        self.out.append(f.goaway(self.last_stream_id, code, debug))

    def ping(self, opaque: bytes) -> None:
        self.out.append(f.ping(opaque))

    def acknowledge_received_data(self, stream_id: int, n: int) -> None:
        """The owner consumed n flow-controlled bytes of stream_id: credit
        them back, in WINDOW_UPDATEs batched to half a window."""
        if n <= 0 or self.failed:
            return
        self.conn_unacked += n
        if self.conn_unacked >= self.local.connection_window >> 1:
            self.out.append(f.window_update(0, self.conn_unacked))
            self.conn_recv_window += self.conn_unacked
            self.conn_unacked = 0
        st = self.streams.get(stream_id)
        if st is not None and not st.remote_closed:
            st.unacked += n
            if st.unacked >= self.stream_recv_window >> 1:
                self.out.append(f.window_update(stream_id, st.unacked))
                st.recv_window += st.unacked
                st.unacked = 0

    @property
    def open_streams(self) -> int:
        return len(self.streams)

    def _local_end(self, st: _Stream) -> None:
        st.local_closed = True
        if not st.remote_closed:
            # as gRPC servers do: the response is complete, so the rest of
            # the request is unwanted
            self.out.append(f.rst_stream(st.id, ErrorCode.NO_ERROR))
            self._remember_reset(st.id)
        self.streams.pop(st.id, None)
        self.blocked.pop(st.id, None)

    def _forget(self, stream_id: int) -> None:
        self.streams.pop(stream_id, None)
        self.blocked.pop(stream_id, None)
        self._remember_reset(stream_id)

    def _remember_reset(self, stream_id: int) -> None:
        self.recent_resets.add(stream_id)
        self._recent_order.append(stream_id)
        if len(self._recent_order) > RECENT_RESETS:
            self.recent_resets.discard(self._recent_order.popleft())

    # -- input ----------------------------------------------------------------------

    def receive_data(self, data: bytes) -> list[Event]:
        """Parse what arrived; return what it meant."""
        if self.failed:
            return []
        buf = self.inbuf
        buf += data
        events: list[Event] = []
        pos = 0
        try:
            if not self.preface_done:
                if len(buf) < 24:
                    if not f.PREFACE.startswith(bytes(buf)):
                        raise _ConnectionError(ErrorCode.PROTOCOL_ERROR, "invalid connection preface")
                    return events
                if buf[:24] != f.PREFACE:
                    raise _ConnectionError(ErrorCode.PROTOCOL_ERROR, "invalid connection preface")
                self.preface_done = True
                pos = 24
            avail = len(buf)
            max_frame = self.local.max_frame_size
            while avail - pos >= 9:
                length = (buf[pos] << 16) | (buf[pos + 1] << 8) | buf[pos + 2]
                if length > max_frame:
                    raise _ConnectionError(ErrorCode.FRAME_SIZE_ERROR, f"frame of {length} bytes exceeds the maximum")
                if avail - pos - 9 < length:
                    break
                ftype = buf[pos + 3]
                flags = buf[pos + 4]
                sid = _U32(buf, pos + 5)[0] & 0x7FFFFFFF
                payload = bytes(buf[pos + 9 : pos + 9 + length])
                pos += 9 + length
                try:
                    self._frame(ftype, flags, sid, payload, events)
                except _StreamError as exc:
                    self._stream_error(exc.stream_id, exc.code, events)
        except _ConnectionError as exc:
            self.failed = True
            self.out.append(f.goaway(self.highest_stream_id, exc.code, exc.reason.encode()[:256]))
            events.append(ConnectionFailed(exc.code, exc.reason))
            buf.clear()
            return events
        if pos:
            del buf[:pos]
        return events

    def _stream_error(self, stream_id: int, code: ErrorCode, events: list[Event]) -> None:
        self.out.append(f.rst_stream(stream_id, code))
        if self.streams.get(stream_id) is not None:
            self._forget(stream_id)
            events.append(StreamReset(stream_id, code, False))
        else:
            self._remember_reset(stream_id)

    def _frame(self, ftype: int, flags: int, sid: int, payload: bytes, events: list[Event]) -> None:
        if self._hb is not None and ftype != f.CONTINUATION:
            raise _ConnectionError(ErrorCode.PROTOCOL_ERROR, "expected CONTINUATION")
        if not self.settings_seen:
            if ftype != f.SETTINGS or flags & f.FLAG_ACK:
                raise _ConnectionError(ErrorCode.PROTOCOL_ERROR, "the preface must be followed by SETTINGS")
            self.settings_seen = True
        if ftype == f.DATA:
            self._data(flags, sid, payload, events)
        elif ftype == f.HEADERS:
            self._headers(flags, sid, payload, events)
        elif ftype == f.WINDOW_UPDATE:
            self._window_update(sid, payload, events)
        elif ftype == f.PING:
            if sid:
                raise _ConnectionError(ErrorCode.PROTOCOL_ERROR, "PING on a stream")
            if len(payload) != 8:
                raise _ConnectionError(ErrorCode.FRAME_SIZE_ERROR, "PING payload is not 8 bytes")
            if flags & f.FLAG_ACK:
                events.append(PingAcked(payload))
            else:
                self.out.append(f.ping(payload, ack=True))
                events.append(PingReceived(payload))
        elif ftype == f.SETTINGS:
            self._settings(flags, sid, payload, events)
        elif ftype == f.RST_STREAM:
            if not sid:
                raise _ConnectionError(ErrorCode.PROTOCOL_ERROR, "RST_STREAM on stream 0")
            if len(payload) != 4:
                raise _ConnectionError(ErrorCode.FRAME_SIZE_ERROR, "RST_STREAM payload is not 4 bytes")
            if sid > self.highest_stream_id:
                raise _ConnectionError(ErrorCode.PROTOCOL_ERROR, "RST_STREAM on an idle stream")
            if self.streams.get(sid) is not None:
                self._forget(sid)
                events.append(StreamReset(sid, _U32(payload)[0], True))
        elif ftype == f.CONTINUATION:
            self._continuation(flags, sid, payload, events)
        elif ftype == f.PRIORITY:
            if not sid:
                raise _ConnectionError(ErrorCode.PROTOCOL_ERROR, "PRIORITY on stream 0")
            if len(payload) != 5:
                raise _StreamError(sid, ErrorCode.FRAME_SIZE_ERROR)
            if _U32(payload)[0] & 0x7FFFFFFF == sid:
                raise _StreamError(sid, ErrorCode.PROTOCOL_ERROR)
        elif ftype == f.GOAWAY:
            if sid:
                raise _ConnectionError(ErrorCode.PROTOCOL_ERROR, "GOAWAY on a stream")
            if len(payload) < 8:
                raise _ConnectionError(ErrorCode.FRAME_SIZE_ERROR, "GOAWAY payload too short")
            last, code = _GOAWAY(payload)
            events.append(GoAwayReceived(code, last & 0x7FFFFFFF, payload[8:]))
        elif ftype == f.PUSH_PROMISE:
            raise _ConnectionError(ErrorCode.PROTOCOL_ERROR, "PUSH_PROMISE from a client")
        # unknown frame types are ignored (RFC 9113 section 4.1)

    def _data(self, flags: int, sid: int, payload: bytes, events: list[Event]) -> None:
        if not sid:
            raise _ConnectionError(ErrorCode.PROTOCOL_ERROR, "DATA on stream 0")
        length = len(payload)
        self.conn_recv_window -= length
        if self.conn_recv_window < 0:
            raise _ConnectionError(ErrorCode.FLOW_CONTROL_ERROR, "DATA past the connection window")
        data = payload
        if flags & f.FLAG_PADDED:
            if not length or payload[0] >= length:
                raise _ConnectionError(ErrorCode.PROTOCOL_ERROR, "padding exceeds the DATA payload")
            data = payload[1 : length - payload[0]]
        st = self.streams.get(sid)
        if st is None or st.remote_closed:
            if sid > self.highest_stream_id:
                raise _ConnectionError(ErrorCode.PROTOCOL_ERROR, "DATA on an idle stream")
            # nobody will consume it: credit the connection window now
            self.acknowledge_received_data(0, length)
            if st is not None or sid not in self.recent_resets:
                raise _StreamError(sid, ErrorCode.STREAM_CLOSED)
            return
        st.recv_window -= length
        if st.recv_window < 0:
            self.acknowledge_received_data(0, length)
            raise _StreamError(sid, ErrorCode.FLOW_CONTROL_ERROR)
        end = bool(flags & f.FLAG_END_STREAM)
        if end:
            st.remote_closed = True
        events.append(DataReceived(sid, data, length, end))

    def _headers(self, flags: int, sid: int, payload: bytes, events: list[Event]) -> None:
        if not sid or not sid & 1:
            raise _ConnectionError(ErrorCode.PROTOCOL_ERROR, f"HEADERS on stream {sid}")
        start = 0
        end = len(payload)
        if flags & f.FLAG_PADDED:
            if not end:
                raise _ConnectionError(ErrorCode.PROTOCOL_ERROR, "padded HEADERS without a pad length")
            start = 1
            end -= payload[0]
        bad_priority = False
        if flags & f.FLAG_PRIORITY:
            if end - start < 5:
                raise _ConnectionError(ErrorCode.FRAME_SIZE_ERROR, "HEADERS too short for its priority")
            bad_priority = _U32(payload, start)[0] & 0x7FFFFFFF == sid
            start += 5
        if end < start:
            raise _ConnectionError(ErrorCode.PROTOCOL_ERROR, "padding exceeds the HEADERS payload")
        fragment = payload[start:end]
        if flags & f.FLAG_END_HEADERS:
            self._header_block(sid, flags, fragment, bad_priority, events)
        else:
            if len(fragment) > self.local.max_header_block:
                raise _ConnectionError(ErrorCode.ENHANCE_YOUR_CALM, "header block too large")
            self._hb = (sid, flags, bytearray(fragment), bad_priority)

    def _continuation(self, flags: int, sid: int, payload: bytes, events: list[Event]) -> None:
        hb = self._hb
        if hb is None or hb[0] != sid:
            raise _ConnectionError(ErrorCode.PROTOCOL_ERROR, "unexpected CONTINUATION")
        block = hb[2]
        block += payload
        if len(block) > self.local.max_header_block:
            raise _ConnectionError(ErrorCode.ENHANCE_YOUR_CALM, "header block too large")
        if flags & f.FLAG_END_HEADERS:
            self._hb = None
            self._header_block(sid, hb[1], bytes(block), hb[3], events)

    def _decode(self, block: bytes) -> list[tuple[bytes, bytes]]:
        table = self.decoder.header_table
        if block and min(block) > 0x80 and 0xFF not in block:
            # Every field is one byte: an index into the tables (RFC 7541
            # 6.1), which changes nothing in them, so the fields are looked
            # up directly. A repeating client's blocks mostly look like this
            # (grpc-go's varying grpc-timeout defeats the cache below).
            fields = _indexed_fields(block, table, self.decoder)
            if fields is not None:
                return fields
        dyn = table.dynamic_entries
        sig = (dyn[0] if dyn else None, len(dyn), table.maxsize)
        hit = self._hcache.get(block)
        if hit is not None and hit[0] == sig:
            return hit[1]
        try:
            headers = cast(list[tuple[bytes, bytes]], self.decoder.decode(block, raw=True))
        except Exception as exc:  # hpack raises several types, and struct/index errors on garbage
            raise _ConnectionError(ErrorCode.COMPRESSION_ERROR, f"header block: {exc}") from None
        dyn = table.dynamic_entries
        if sig == (dyn[0] if dyn else None, len(dyn), table.maxsize):
            if len(self._hcache) >= 64:
                self._hcache.clear()
            self._hcache[block] = (sig, headers)
        return headers

    def _header_block(self, sid: int, flags: int, block: bytes, bad_priority: bool, events: list[Event]) -> None:
        headers = self._decode(block)  # always, to keep the HPACK state in step
        end_stream = bool(flags & f.FLAG_END_STREAM)
        st = self.streams.get(sid)
        if st is not None:
            if bad_priority:
                raise _StreamError(sid, ErrorCode.PROTOCOL_ERROR)
            if st.remote_closed:
                raise _StreamError(sid, ErrorCode.STREAM_CLOSED)
            if not end_stream:
                raise _StreamError(sid, ErrorCode.PROTOCOL_ERROR)  # trailers must end the stream
            st.remote_closed = True
            events.append(TrailersReceived(sid, headers))
            return
        if sid <= self.highest_stream_id:
            if sid in self.recent_resets:
                return
            raise _ConnectionError(ErrorCode.STREAM_CLOSED, f"HEADERS on closed stream {sid}")
        self.highest_stream_id = sid
        if self.goaway_sent and sid > self.last_stream_id:
            return  # after our GOAWAY new streams are ignored; the client retries them elsewhere
        if bad_priority or not _valid_request(headers):
            raise _StreamError(sid, ErrorCode.PROTOCOL_ERROR)
        if len(self.streams) >= self.local.max_concurrent_streams:
            raise _StreamError(sid, ErrorCode.REFUSED_STREAM)
        st = _Stream(sid, self.remote_initial_window, self.stream_recv_window)
        st.remote_closed = end_stream
        self.streams[sid] = st
        events.append(RequestReceived(sid, headers, end_stream))

    def _window_update(self, sid: int, payload: bytes, events: list[Event]) -> None:
        if len(payload) != 4:
            raise _ConnectionError(ErrorCode.FRAME_SIZE_ERROR, "WINDOW_UPDATE payload is not 4 bytes")
        inc = _U32(payload)[0] & 0x7FFFFFFF
        if not sid:
            if not inc:
                raise _ConnectionError(ErrorCode.PROTOCOL_ERROR, "WINDOW_UPDATE of 0")
            if self.conn_send_window + inc > f.MAX_WINDOW:
                raise _ConnectionError(ErrorCode.FLOW_CONTROL_ERROR, "connection window past 2^31-1")
            self.conn_send_window += inc
            if self.blocked:
                self._flush_blocked()
            events.append(WindowUpdated(0))
            return
        st = self.streams.get(sid)
        if st is None:
            if sid > self.highest_stream_id:
                raise _ConnectionError(ErrorCode.PROTOCOL_ERROR, "WINDOW_UPDATE on an idle stream")
            return
        if not inc:
            raise _StreamError(sid, ErrorCode.PROTOCOL_ERROR)
        if st.send_window + inc > f.MAX_WINDOW:
            raise _StreamError(sid, ErrorCode.FLOW_CONTROL_ERROR)
        st.send_window += inc
        if st.out_pos < len(st.out) or st.trailers is not None:
            self._flush(st)
        events.append(WindowUpdated(sid))

    def _settings(self, flags: int, sid: int, payload: bytes, events: list[Event]) -> None:
        if sid:
            raise _ConnectionError(ErrorCode.PROTOCOL_ERROR, "SETTINGS on a stream")
        if flags & f.FLAG_ACK:
            if payload:
                raise _ConnectionError(ErrorCode.FRAME_SIZE_ERROR, "SETTINGS ACK with a payload")
            events.append(SettingsAcked())
            return
        if len(payload) % 6:
            raise _ConnectionError(ErrorCode.FRAME_SIZE_ERROR, "SETTINGS payload not a multiple of 6")
        changes: dict[int, int] = {}
        for off in range(0, len(payload), 6):
            key, value = _SETTING(payload, off)
            if key == f.SETTINGS_ENABLE_PUSH and value > 1:
                raise _ConnectionError(ErrorCode.PROTOCOL_ERROR, "SETTINGS_ENABLE_PUSH not 0 or 1")
            if key == f.SETTINGS_INITIAL_WINDOW_SIZE and value > f.MAX_WINDOW:
                raise _ConnectionError(ErrorCode.FLOW_CONTROL_ERROR, "SETTINGS_INITIAL_WINDOW_SIZE past 2^31-1")
            if key == f.SETTINGS_MAX_FRAME_SIZE and not f.DEFAULT_MAX_FRAME_SIZE <= value <= f.MAX_FRAME_SIZE_LIMIT:
                raise _ConnectionError(ErrorCode.PROTOCOL_ERROR, "SETTINGS_MAX_FRAME_SIZE out of range")
            changes[key] = value
        for key, value in changes.items():
            if key == f.SETTINGS_INITIAL_WINDOW_SIZE:
                delta = value - self.remote_initial_window
                self.remote_initial_window = value
                for st in self.streams.values():
                    st.send_window += delta
                    if st.send_window > f.MAX_WINDOW:
                        raise _ConnectionError(ErrorCode.FLOW_CONTROL_ERROR, "a stream window past 2^31-1")
            elif key == f.SETTINGS_MAX_FRAME_SIZE:
                self.remote_max_frame = value
            elif key == f.SETTINGS_HEADER_TABLE_SIZE:
                if value < 4096:
                    self.table_size_update = True
            elif key == f.SETTINGS_MAX_HEADER_LIST_SIZE:
                self.remote_max_header_list = value
            elif key == f.SETTINGS_MAX_CONCURRENT_STREAMS:
                self.remote_max_concurrent = value
        self.out.append(f.frame(f.SETTINGS, f.FLAG_ACK, 0))
        if self.blocked:
            self._flush_blocked()
        events.append(SettingsReceived(changes))


def _valid_request(headers: list[tuple[bytes, bytes]]) -> bool:
    """RFC 9113 section 8.3: pseudo-headers first and known, the required
    ones present, names lowercase, no connection-specific fields."""
    seen: set[bytes] = set()
    regular = False
    for name, value in headers:
        if name[:1] == b":":
            if regular or name not in _REQUEST_PSEUDO or name in seen:
                return False
            seen.add(name)
            continue
        regular = True
        if name in _CONNECTION_HEADERS or (name == b"te" and value != b"trailers"):
            return False
        if not name.islower() and name.lower() != name:
            return False
    return b":method" in seen and b":path" in seen and b":scheme" in seen


_STATIC: tuple[tuple[bytes, bytes], ...] = HeaderTable.STATIC_TABLE


def _indexed_fields(block: bytes, table: Any, decoder: hpack.Decoder) -> list[tuple[bytes, bytes]] | None:
    """The header list of a block of one-byte indexed fields, as hpack would
    decode it; None when hpack must decide (an index past the tables, a
    list over the size limit, a table over its allowed size: it raises)."""
    if table.maxsize > decoder.max_allowed_table_size:
        return None
    static = _STATIC
    dynamic = table.dynamic_entries
    n_static = len(static)
    fields = []
    size = 0
    for b in block:
        i = (b & 0x7F) - 1
        if i < n_static:
            field = static[i]
        else:
            i -= n_static
            if i >= len(dynamic):
                return None
            field = dynamic[i]
            if type(field[0]) is not bytes or type(field[1]) is not bytes:
                field = (bytes(field[0]), bytes(field[1]))  # hpack keeps unencoded literals as views
        fields.append(field)
        size += len(field[0]) + len(field[1]) + 32
    if size > decoder.max_header_list_size:
        return None
    return fields
