"""The sans-I/O HTTP/2 connection, frame by frame: every protocol error gets
the answer RFC 9113 gives it, and flow control holds both ways."""

from __future__ import annotations

import struct

import hpack
import pytest

from petcd.http2 import connection as h2
from petcd.http2 import frames as f
from petcd.http2.frames import ErrorCode

REQ = [(":method", "POST"), (":scheme", "http"), (":path", "/a.B/C"), (":authority", "x"), ("content-type", "application/grpc")]


def parse(data: bytes) -> list[tuple[int, int, int, bytes]]:
    out = []
    pos = 0
    while pos < len(data):
        n = int.from_bytes(data[pos : pos + 3], "big")
        out.append((data[pos + 3], data[pos + 4], struct.unpack(">I", data[pos + 5 : pos + 9])[0], data[pos + 9 : pos + 9 + n]))
        pos += 9 + n
    return out


class Peer:
    """The client side, by hand."""

    def __init__(self, settings: dict[int, int] | None = None, local: h2.H2Settings | None = None) -> None:
        self.conn = h2.H2Connection(local)
        self.conn.initiate()
        self.enc = hpack.Encoder()
        self.events = self.conn.receive_data(f.PREFACE + f.settings_frame(settings or {}))
        self.frames = parse(self.conn.data_to_send())

    def feed(self, data: bytes) -> list[h2.Event]:
        ev = self.conn.receive_data(data)
        self.frames = parse(self.conn.data_to_send())
        return ev

    def headers(self, sid: int, headers: list[tuple[str, str]] = REQ, flags: int = f.FLAG_END_HEADERS) -> list[h2.Event]:
        return self.feed(f.frame(f.HEADERS, flags, sid, self.enc.encode(headers)))

    def goaway_code(self) -> int:
        ga = [fr for fr in self.frames if fr[0] == f.GOAWAY]
        assert ga, self.frames
        return struct.unpack(">II", ga[0][3][:8])[1]

    def rst_code(self, sid: int) -> int:
        rs = [fr for fr in self.frames if fr[0] == f.RST_STREAM and fr[2] == sid]
        assert rs, self.frames
        return int(struct.unpack(">I", rs[0][3])[0])


def test_handshake() -> None:
    p = Peer()
    types = [fr[0] for fr in p.frames]
    # our SETTINGS and connection window were queued by initiate(); then the ACK of theirs
    assert types == [f.SETTINGS, f.WINDOW_UPDATE, f.SETTINGS]
    assert p.frames[-1][1] == f.FLAG_ACK
    assert isinstance(p.events[0], h2.SettingsReceived)


@pytest.mark.parametrize(
    "data,code",
    [
        (b"GET / HTTP/1.1\r\n\r\nxxxxxxxxxxxxxx", ErrorCode.PROTOCOL_ERROR),
        (f.PREFACE + f.ping(b"12345678"), ErrorCode.PROTOCOL_ERROR),  # SETTINGS must come first
    ],
)
def test_bad_start(data: bytes, code: int) -> None:
    conn = h2.H2Connection()
    ev = conn.receive_data(data)
    assert isinstance(ev[-1], h2.ConnectionFailed) and ev[-1].error_code == code


def connection_error(p: Peer, data: bytes) -> int:
    ev = p.feed(data)
    assert isinstance(ev[-1], h2.ConnectionFailed), ev
    code = p.goaway_code()
    assert p.feed(f.ping(b"12345678")) == []  # nothing more from a failed connection
    return code


@pytest.mark.parametrize(
    "data,code",
    [
        (f.frame(f.DATA, 0, 0, b"x"), ErrorCode.PROTOCOL_ERROR),
        (f.frame(f.DATA, 0, 7, b"x"), ErrorCode.PROTOCOL_ERROR),  # idle stream
        (f.frame_header(20000, f.DATA, 0, 1) + b"x" * 20000, ErrorCode.FRAME_SIZE_ERROR),
        (f.frame(f.SETTINGS, 0, 0, struct.pack(">HI", f.SETTINGS_ENABLE_PUSH, 2)), ErrorCode.PROTOCOL_ERROR),
        (f.frame(f.SETTINGS, 0, 0, struct.pack(">HI", f.SETTINGS_INITIAL_WINDOW_SIZE, 2**31)), ErrorCode.FLOW_CONTROL_ERROR),
        (f.frame(f.SETTINGS, 0, 0, struct.pack(">HI", f.SETTINGS_MAX_FRAME_SIZE, 100)), ErrorCode.PROTOCOL_ERROR),
        (f.frame(f.SETTINGS, 0, 0, struct.pack(">HI", f.SETTINGS_MAX_FRAME_SIZE, 2**24)), ErrorCode.PROTOCOL_ERROR),
        (f.frame(f.SETTINGS, 0, 0, b"\x00\x01\x00"), ErrorCode.FRAME_SIZE_ERROR),
        (f.frame(f.SETTINGS, f.FLAG_ACK, 0, b"\x00" * 6), ErrorCode.FRAME_SIZE_ERROR),
        (f.frame(f.SETTINGS, 0, 1, b""), ErrorCode.PROTOCOL_ERROR),
        (f.window_update(0, 0), ErrorCode.PROTOCOL_ERROR),
        (f.window_update(0, 2**31 - 1), ErrorCode.FLOW_CONTROL_ERROR),
        (f.frame(f.WINDOW_UPDATE, 0, 0, b"\x00\x00\x01"), ErrorCode.FRAME_SIZE_ERROR),
        (f.window_update(9, 10), ErrorCode.PROTOCOL_ERROR),  # idle stream
        (f.frame(f.PING, 0, 0, b"1234"), ErrorCode.FRAME_SIZE_ERROR),
        (f.frame(f.PING, 0, 3, b"12345678"), ErrorCode.PROTOCOL_ERROR),
        (f.rst_stream(0, 0), ErrorCode.PROTOCOL_ERROR),
        (f.rst_stream(5, 0), ErrorCode.PROTOCOL_ERROR),  # idle stream
        (f.frame(f.RST_STREAM, 0, 1, b"\x00"), ErrorCode.FRAME_SIZE_ERROR),
        (f.frame(f.HEADERS, f.FLAG_END_HEADERS, 2, b"\x82"), ErrorCode.PROTOCOL_ERROR),  # even stream id
        (f.frame(f.HEADERS, f.FLAG_END_HEADERS, 1, b"\xff\xff\xff\xff\x7f"), ErrorCode.COMPRESSION_ERROR),
        (f.frame(f.HEADERS, f.FLAG_END_HEADERS, 1, b"\xbf"), ErrorCode.COMPRESSION_ERROR),  # no such index
        (f.frame(f.HEADERS, f.FLAG_END_HEADERS | f.FLAG_PADDED, 1, b"\x09\x82"), ErrorCode.PROTOCOL_ERROR),
        (f.frame(f.CONTINUATION, f.FLAG_END_HEADERS, 1, b"\x82"), ErrorCode.PROTOCOL_ERROR),
        (f.frame(f.PUSH_PROMISE, f.FLAG_END_HEADERS, 1, b"\x00\x00\x00\x02\x82"), ErrorCode.PROTOCOL_ERROR),
        (f.frame(f.GOAWAY, 0, 1, b"\x00" * 8), ErrorCode.PROTOCOL_ERROR),
        (f.frame(f.PRIORITY, 0, 0, b"\x00" * 5), ErrorCode.PROTOCOL_ERROR),
    ],
)
def test_connection_errors(data: bytes, code: int) -> None:
    assert connection_error(Peer(), data) == code


def test_frame_inside_a_header_block_is_a_connection_error() -> None:
    p = Peer()
    block = p.enc.encode(REQ)
    p.feed(f.frame(f.HEADERS, 0, 1, block[:3]))
    assert connection_error(p, f.ping(b"12345678")) == ErrorCode.PROTOCOL_ERROR


def test_continuation_assembles_and_flood_is_refused() -> None:
    p = Peer()
    block = p.enc.encode(REQ + [("x-big", "v" * 100)])
    p.feed(f.frame(f.HEADERS, 0, 1, block[:5]))
    p.feed(f.frame(f.CONTINUATION, 0, 1, block[5:20]))
    ev = p.feed(f.frame(f.CONTINUATION, f.FLAG_END_HEADERS, 1, block[20:]))
    assert isinstance(ev[0], h2.RequestReceived)
    assert (b"x-big", b"v" * 100) in ev[0].headers
    q = Peer(local=h2.H2Settings(max_header_block=64 * 1024))
    q.feed(f.frame(f.HEADERS, 0, 1, q.enc.encode(REQ)))
    for _ in range(10):
        ev = q.feed(f.frame(f.CONTINUATION, 0, 1, b"\x00" * 16000))
        if ev:
            break
    assert isinstance(ev[-1], h2.ConnectionFailed)
    assert q.goaway_code() == ErrorCode.ENHANCE_YOUR_CALM


def test_padding_and_priority_fields() -> None:
    p = Peer()
    block = p.enc.encode(REQ)
    payload = b"\x03" + struct.pack(">IB", 0, 16) + block + b"\x00\x00\x00"
    ev = p.feed(f.frame(f.HEADERS, f.FLAG_END_HEADERS | f.FLAG_PADDED | f.FLAG_PRIORITY, 1, payload))
    assert isinstance(ev[0], h2.RequestReceived) and ev[0].headers[2] == (b":path", b"/a.B/C")
    ev = p.feed(f.frame(f.DATA, f.FLAG_PADDED | f.FLAG_END_STREAM, 1, b"\x04hello\x00\x00\x00\x00"))
    d = ev[0]
    assert isinstance(d, h2.DataReceived) and d.data == b"hello" and d.flow_len == 10 and d.end_stream
    # padding longer than the DATA payload
    p.headers(3)
    assert connection_error(p, f.frame(f.DATA, f.FLAG_PADDED, 3, b"\x05abc")) == ErrorCode.PROTOCOL_ERROR


@pytest.mark.parametrize(
    "make,code",
    [
        (lambda p: p.feed(f.window_update(1, 0)), ErrorCode.PROTOCOL_ERROR),
        (lambda p: p.feed(f.window_update(1, 2**31 - 1)), ErrorCode.FLOW_CONTROL_ERROR),
        (lambda p: p.feed(f.frame(f.PRIORITY, 0, 1, struct.pack(">IB", 1, 0))), ErrorCode.PROTOCOL_ERROR),
        (lambda p: p.feed(f.frame(f.PRIORITY, 0, 1, b"\x00")), ErrorCode.FRAME_SIZE_ERROR),
        (lambda p: p.headers(1, [("x-trailer", "1")]), ErrorCode.PROTOCOL_ERROR),  # trailers without END_STREAM
    ],
)
def test_stream_errors_reset_only_the_stream(make: object, code: int) -> None:
    p = Peer()
    p.headers(1)
    p.headers(3)
    ev = make(p)  # type: ignore[operator]
    assert any(isinstance(e, h2.StreamReset) and e.stream_id == 1 and not e.remote for e in ev)
    assert p.rst_code(1) == code
    assert 3 in p.conn.streams and not p.conn.failed


def test_bad_request_headers_are_stream_errors() -> None:
    p = Peer()
    p.headers(1, REQ + [("X-Upper", "1")])
    assert p.rst_code(1) == ErrorCode.PROTOCOL_ERROR
    p.headers(3, REQ + [("connection", "close")])
    assert p.rst_code(3) == ErrorCode.PROTOCOL_ERROR
    p.headers(5, [(":method", "POST"), (":path", "/x")])  # no :scheme
    assert p.rst_code(5) == ErrorCode.PROTOCOL_ERROR
    p.headers(7, [("a", "b")] + REQ)  # pseudo-header after a regular one
    assert p.rst_code(7) == ErrorCode.PROTOCOL_ERROR
    ev = p.headers(9)
    assert isinstance(ev[0], h2.RequestReceived) and not p.conn.failed


def test_data_after_end_stream_is_stream_closed() -> None:
    p = Peer()
    p.headers(1, flags=f.FLAG_END_HEADERS | f.FLAG_END_STREAM)
    p.feed(f.frame(f.DATA, 0, 1, b"x"))
    assert p.rst_code(1) == ErrorCode.STREAM_CLOSED


def test_headers_on_a_closed_stream_is_a_connection_error() -> None:
    p = Peer()
    p.headers(3)
    p.conn.send_headers(3, b"\x88", end_stream=True)
    assert connection_error(p, f.frame(f.HEADERS, f.FLAG_END_HEADERS, 1, p.enc.encode(REQ))) == ErrorCode.STREAM_CLOSED


def test_frames_after_our_reset_are_ignored() -> None:
    p = Peer()
    p.headers(1)
    p.conn.reset_stream(1, ErrorCode.CANCEL)
    p.conn.data_to_send()
    assert p.feed(f.frame(f.DATA, 0, 1, b"late") + f.window_update(1, 5) + f.rst_stream(1, 8)) == []
    assert not any(fr[0] == f.RST_STREAM for fr in p.frames)


def test_unknown_frame_types_are_ignored() -> None:
    p = Peer()
    assert p.feed(f.frame(0xEE, 0xFF, 0, b"whatever") + f.frame(0x0B, 0, 1, b"")) == []
    assert isinstance(p.headers(1)[0], h2.RequestReceived)


def test_receive_windows_are_enforced() -> None:
    p = Peer(local=h2.H2Settings(initial_window_size=65535, connection_window=100_000))
    p.headers(1)
    p.headers(3)
    for _ in range(3):
        p.feed(f.frame(f.DATA, 0, 1, b"x" * 16384))
    p.feed(f.frame(f.DATA, 0, 1, b"x" * 16384))
    assert p.rst_code(1) == ErrorCode.FLOW_CONTROL_ERROR
    assert 3 in p.conn.streams
    # the connection window counted those 65536 bytes; only 34464 are left
    p.feed(f.frame(f.DATA, 0, 3, b"x" * 16384) + f.frame(f.DATA, 0, 3, b"x" * 16384))
    assert connection_error(p, f.frame(f.DATA, 0, 3, b"x" * 2000)) == ErrorCode.FLOW_CONTROL_ERROR


def test_consumed_data_is_credited_back() -> None:
    p = Peer(local=h2.H2Settings(initial_window_size=65535, connection_window=65535))
    p.headers(1)
    for _ in range(10):
        ev = p.feed(f.frame(f.DATA, 0, 1, b"x" * 16384))
        d = ev[0]
        assert isinstance(d, h2.DataReceived)
        p.conn.acknowledge_received_data(1, d.flow_len)
        p.frames = parse(p.conn.data_to_send())
    assert not p.conn.failed and 1 in p.conn.streams


def test_send_respects_windows_frame_size_and_trailers_wait() -> None:
    p = Peer(settings={f.SETTINGS_INITIAL_WINDOW_SIZE: 100})
    p.headers(1, flags=f.FLAG_END_HEADERS | f.FLAG_END_STREAM)
    c = p.conn
    c.send_headers(1, b"\x88")
    c.send_data(1, b"a" * 1000)
    c.send_headers(1, b"\x40\x01x\x01y", end_stream=True)
    out = parse(c.data_to_send())
    data = [fr for fr in out if fr[0] == f.DATA]
    assert sum(len(fr[3]) for fr in data) == 100
    assert not any(fr[0] == f.HEADERS and fr[1] & f.FLAG_END_STREAM for fr in out)
    assert c.buffered(1) == 900
    p.feed(f.window_update(1, 900))
    out = p.frames
    assert sum(len(fr[3]) for fr in out if fr[0] == f.DATA) == 900
    assert out[-1][0] == f.HEADERS and out[-1][1] & f.FLAG_END_STREAM
    assert 1 not in c.streams


def test_initial_window_change_and_connection_window() -> None:
    p = Peer()
    p.headers(1, flags=f.FLAG_END_HEADERS | f.FLAG_END_STREAM)
    c = p.conn
    c.send_data(1, b"b" * 100_000)
    out = parse(c.data_to_send())
    sizes = [len(fr[3]) for fr in out if fr[0] == f.DATA]
    assert sum(sizes) == 65535 and max(sizes) <= 16384
    p.feed(f.frame(f.SETTINGS, 0, 0, struct.pack(">HI", f.SETTINGS_INITIAL_WINDOW_SIZE, 1 << 20)))
    assert not any(fr[0] == f.DATA for fr in p.frames)  # the connection window still holds it back
    p.feed(f.window_update(0, 1 << 20))
    assert sum(len(fr[3]) for fr in p.frames if fr[0] == f.DATA) == 100_000 - 65535


def test_peer_max_frame_size_splits_headers_into_continuations() -> None:
    p = Peer()
    p.headers(1, flags=f.FLAG_END_HEADERS | f.FLAG_END_STREAM)
    big = f.hpack_literal(b"x-big", b"v" * 40000)
    p.conn.send_headers(1, big)
    out = parse(p.conn.data_to_send())
    assert [fr[0] for fr in out] == [f.HEADERS, f.CONTINUATION, f.CONTINUATION]
    assert out[-1][1] & f.FLAG_END_HEADERS and not out[0][1] & f.FLAG_END_HEADERS
    assert hpack.Decoder().decode(b"".join(fr[3] for fr in out)) == [("x-big", "v" * 40000)]


def test_ping_is_acked_with_its_payload() -> None:
    p = Peer()
    ev = p.feed(f.ping(b"abcdefgh"))
    assert isinstance(ev[0], h2.PingReceived)
    assert p.frames == [(f.PING, f.FLAG_ACK, 0, b"abcdefgh")]


def test_graceful_goaway_refuses_newer_streams() -> None:
    p = Peer()
    p.headers(1)
    p.conn.close()
    last, code = struct.unpack(">II", parse(p.conn.data_to_send())[0][3][:8])
    assert (last, code) == (1, 0)
    assert p.headers(3) == []
    ev = p.feed(f.frame(f.DATA, f.FLAG_END_STREAM, 1, b"x"))
    assert isinstance(ev[0], h2.DataReceived)


def test_too_many_streams_are_refused() -> None:
    p = Peer(local=h2.H2Settings(max_concurrent_streams=2))
    p.headers(1)
    p.headers(3)
    p.headers(5)
    assert p.rst_code(5) == ErrorCode.REFUSED_STREAM
    assert {1, 3} == set(p.conn.streams)


def test_lower_header_table_size_is_signalled() -> None:
    p = Peer(settings={f.SETTINGS_HEADER_TABLE_SIZE: 0})
    p.headers(1, flags=f.FLAG_END_HEADERS | f.FLAG_END_STREAM)
    p.conn.send_headers(1, b"\x88", end_stream=True)
    out = parse(p.conn.data_to_send())
    assert out[0][3] == b"\x20\x88"


def test_a_block_of_indexed_fields_decodes_as_hpack_does() -> None:
    """A repeated request's header block is all one-byte indexes into the
    tables (looked up directly, without the HPACK decoder): the same headers
    come out, as bytes, and the size limit on the header list still holds."""
    p = Peer(local=h2.H2Settings(max_header_list_size=600))
    headers = [*REQ, ("grpc-timeout", "9999960u"), ("x-value", "v" * 40)]
    want = [(n.encode(), v.encode()) for n, v in headers]
    (first,) = p.headers(1, headers)  # literals: they enter the dynamic table
    assert isinstance(first, h2.RequestReceived) and first.headers == want
    block = p.enc.encode(headers)
    assert all(b & 0x80 for b in block) and len(block) == len(headers)  # all indexed now

    def not_needed(data: bytes, raw: bool = False) -> None:
        raise AssertionError("the HPACK decoder ran for a block of indexed fields")

    real_decode = p.conn.decoder.decode
    p.conn.decoder.decode = not_needed  # type: ignore[method-assign,assignment]
    (again,) = p.feed(f.frame(f.HEADERS, f.FLAG_END_HEADERS, 3, block))
    assert isinstance(again, h2.RequestReceived) and again.headers == want
    assert all(type(n) is bytes and type(v) is bytes for n, v in again.headers)
    p.conn.decoder.decode = real_decode  # type: ignore[method-assign]
    # the same entries repeated past the list's limit: hpack's error, as before
    too_many = bytes([block[-1]]) * 10
    assert connection_error(p, f.frame(f.HEADERS, f.FLAG_END_HEADERS, 5, too_many)) == ErrorCode.COMPRESSION_ERROR
