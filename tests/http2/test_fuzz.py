"""A seeded frame-level fuzzer: truncated frames, oversized lengths, bad
HPACK, frames on closed and idle streams, SETTINGS out of range,
WINDOW_UPDATE of 0 or past 2^31-1, CONTINUATION floods, and random frames.
The connection state machine never raises, the server never crashes, a bad
connection gets its error and the others keep working.

PETCD_FUZZ_SECONDS (default 3) sets how long each fuzz loop runs;
PETCD_FUZZ_SEED picks the seed (printed on failure)."""

from __future__ import annotations

import logging
import os
import random
import socket
import struct
import time
from typing import Any

import hpack
import pytest

from petcd.http2 import connection as h2
from petcd.http2 import frames as f
from petcd.http2.grpc import frame_message
from tests.http2.conftest import BytesValue, Served
from tests.http2.rawclient import RawClient

SECONDS = float(os.environ.get("PETCD_FUZZ_SECONDS", "3"))
SEED = int(os.environ.get("PETCD_FUZZ_SEED", "20261201"))
PATHS = ["/test.Echo/Unary", "/test.Echo/Stream", "/test.Echo/Bidi", "/test.Echo/Slow", "/nope/x", "bad"]


class FrameGen:
    """Frames, mostly plausible, some broken on purpose."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.enc = hpack.Encoder()
        self.next_sid = 1

    def sid(self) -> int:
        r = self.rng.random()
        if r < 0.6:
            return max(1, self.next_sid - 2 * self.rng.randrange(0, 3))
        if r < 0.8:
            return self.rng.randrange(0, 20)
        return self.rng.choice([0, 2, 2**31 - 1, self.next_sid + 100])

    def headers_block(self) -> bytes:
        rng = self.rng
        hs = [(":method", rng.choice(["POST", "POST", "GET"])), (":scheme", "http"),
              (":path", rng.choice(PATHS)), (":authority", "fuzz"),
              ("content-type", rng.choice(["application/grpc", "application/grpc+proto", "text/plain"]))]
        if rng.random() < 0.2:
            hs.append(("grpc-timeout", rng.choice(["1m", "10S", "x", "99999999999H"])))
        if rng.random() < 0.1:
            hs.append(("grpc-encoding", rng.choice(["gzip", "snappy", "identity"])))
        if rng.random() < 0.1:
            hs.append((rng.choice(["Upper", "connection", "te"]), "x"))
        if rng.random() < 0.1:
            rng.shuffle(hs)
        return self.enc.encode(hs)

    def one(self) -> bytes:
        rng = self.rng
        kind = rng.random()
        if kind < 0.25:
            sid = self.next_sid
            self.next_sid += 2
            block = self.headers_block()
            flags = f.FLAG_END_HEADERS | (f.FLAG_END_STREAM if rng.random() < 0.2 else 0)
            out = f.frame(f.HEADERS, flags, sid, block)
            if rng.random() < 0.7:
                body = BytesValue(value=rng.choice([b"1", b"3:10", b"0.01", b"x" * rng.randrange(0, 300)]))
                msg = frame_message(body.SerializeToString())
                if rng.random() < 0.1:
                    msg = b"\x01" + msg[1:]  # compressed flag without an encoding
                if rng.random() < 0.1:
                    msg = msg[:5][:1] + struct.pack(">I", 2**31) + msg[5:]  # huge message length
                out += f.frame(f.DATA, f.FLAG_END_STREAM if rng.random() < 0.8 else 0, sid, msg)
            return out
        if kind < 0.35:  # a header block split into CONTINUATIONs, maybe flooded or interrupted
            sid = self.next_sid
            self.next_sid += 2
            block = self.headers_block()
            cut = rng.randrange(0, len(block) + 1)
            out = f.frame(f.HEADERS, 0, sid, block[:cut])
            for _ in range(rng.choice([0, 1, 5, 200])):
                out += f.frame(f.CONTINUATION, 0, sid, rng.randbytes(rng.randrange(0, 16000)))
            if rng.random() < 0.2:
                out += f.ping(b"interupt")
            return out + f.frame(f.CONTINUATION, f.FLAG_END_HEADERS, rng.choice([sid, sid + 2]), block[cut:])
        if kind < 0.45:
            settings = b"".join(
                struct.pack(">HI", rng.randrange(0, 10), rng.choice([0, 1, 2, 100, 16384, 65535, 2**24, 2**31 - 1, 2**31, 2**32 - 1]))
                for _ in range(rng.randrange(0, 4))
            )
            if rng.random() < 0.1:
                settings += b"\x00"
            return f.frame(f.SETTINGS, rng.choice([0, 0, 0, f.FLAG_ACK]), rng.choice([0, 0, 0, 1]), settings)
        if kind < 0.55:
            inc = rng.choice([0, 1, 1000, 65535, 2**31 - 1, 2**31 + 5])
            payload = struct.pack(">I", inc & 0xFFFFFFFF)
            if rng.random() < 0.05:
                payload = payload[:3]
            return f.frame(f.WINDOW_UPDATE, 0, rng.choice([0, self.sid()]), payload)
        if kind < 0.62:
            return f.frame(f.HEADERS, f.FLAG_END_HEADERS, self.sid() | 1, rng.randbytes(rng.randrange(1, 30)))  # bad HPACK
        if kind < 0.7:
            ln = rng.choice([0, 3, 8, 20])
            return f.frame(f.PING, rng.choice([0, 1]), rng.choice([0, 0, 1]), rng.randbytes(ln))
        if kind < 0.78:
            flags = rng.choice([0, f.FLAG_END_STREAM, f.FLAG_PADDED, f.FLAG_PADDED | f.FLAG_END_STREAM])
            payload = rng.randbytes(rng.randrange(0, 100))
            return f.frame(f.DATA, flags, self.sid(), payload)
        if kind < 0.83:
            return f.frame(f.RST_STREAM, 0, self.sid(), rng.randbytes(rng.choice([4, 4, 1])))
        if kind < 0.87:
            return f.frame(f.PRIORITY, 0, self.sid(), rng.randbytes(rng.choice([5, 5, 4])))
        if kind < 0.9:
            return f.frame_header(rng.choice([16385, 2**24 - 1]), rng.randrange(0, 10), 0, self.sid())  # oversized
        if kind < 0.93:
            return f.goaway(rng.randrange(0, 10), rng.randrange(0, 14), b"fuzz")
        return f.frame(rng.randrange(0, 256), rng.randrange(0, 256), self.sid(), rng.randbytes(rng.randrange(0, 40)))


def test_state_machine_never_raises() -> None:
    rng = random.Random(SEED)
    deadline = time.monotonic() + SECONDS
    runs = 0
    while time.monotonic() < deadline or runs < 50:
        runs += 1
        seed = rng.randrange(2**32)
        r = random.Random(seed)
        gen = FrameGen(r)
        conn = h2.H2Connection(h2.H2Settings(initial_window_size=r.choice([65535, 1 << 20]), max_header_block=r.choice([4096, 1 << 20])))
        conn.initiate()
        wire = f.PREFACE + f.settings_frame({}) if r.random() < 0.95 else r.randbytes(30)
        wire += b"".join(gen.one() for _ in range(r.randrange(1, 40)))
        if r.random() < 0.3:
            wire = wire[: r.randrange(0, len(wire) + 1)]  # truncated
        pos = 0
        try:
            while pos < len(wire):
                step = r.choice([1, 7, 100, 10_000, len(wire)])
                for ev in conn.receive_data(wire[pos : pos + step]):
                    # act as a server would: answer, credit, reset
                    if isinstance(ev, h2.RequestReceived):
                        conn.send_headers(ev.stream_id, b"\x88")
                        if r.random() < 0.5:
                            conn.send_data(ev.stream_id, b"z" * r.choice([10, 70_000]))
                        if r.random() < 0.7:
                            conn.send_headers(ev.stream_id, b"\x40\x01a\x01b", end_stream=True)
                    elif isinstance(ev, h2.DataReceived):
                        conn.acknowledge_received_data(ev.stream_id, ev.flow_len)
                        if r.random() < 0.1:
                            conn.reset_stream(ev.stream_id)
                pos += step
                conn.data_to_send()
                if r.random() < 0.05:
                    conn.close()
        except Exception as exc:  # pragma: no cover - the failure report
            pytest.fail(f"H2Connection raised {exc!r} (case seed {seed})")
        # windows never go past the limit
        if not conn.failed:
            assert conn.conn_send_window <= f.MAX_WINDOW
            for st in conn.streams.values():
                assert st.send_window <= f.MAX_WINDOW


def _send_quietly(sock: socket.socket, data: bytes) -> None:
    try:
        sock.sendall(data)
    except OSError:
        pass  # the server may already have closed a connection it found bad


def _drain(sock: socket.socket, timeout: float) -> bytes:
    sock.settimeout(timeout)
    got = b""
    try:
        while chunk := sock.recv(65536):
            got += chunk
            if len(got) > 1 << 20:
                break
    except (TimeoutError, OSError):
        pass
    return got


def test_server_survives_fuzzed_connections(served: Served, caplog: Any) -> None:
    errors: list[Any] = []
    served.call(lambda: served.loop.set_exception_handler(lambda loop, ctx: errors.append(ctx)))
    caplog.set_level(logging.ERROR, logger="petcd.http2")
    good = RawClient(served.addr)
    sid = 1
    rng = random.Random(SEED + 1)
    deadline = time.monotonic() + SECONDS
    n = 0
    goaways = 0
    while time.monotonic() < deadline or n < 40:
        n += 1
        gen = FrameGen(random.Random(rng.randrange(2**32)))
        with socket.create_connection(served.addr, timeout=5) as s:
            wire = f.PREFACE + f.settings_frame({}) + b"".join(gen.one() for _ in range(rng.randrange(1, 30)))
            if rng.random() < 0.3:
                wire = wire[: rng.randrange(0, len(wire) + 1)]
            _send_quietly(s, wire)
            got = _drain(s, 0.05)
            goaways += got.count(bytes((f.GOAWAY,)))
        if n % 10 == 0:  # the well-behaved connection keeps working throughout
            good.request(sid, "/test.Echo/Unary", BytesValue(value=b"%d" % n).SerializeToString())
            headers, data = good.response(sid)
            assert headers["grpc-status"] == "0"
            assert BytesValue.FromString(data[5:]).value == b"%d" % n
            sid += 2
    good.close()
    assert goaways > 0  # the broken connections did get their errors
    assert errors == [], errors
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.records
    assert served.thread.is_alive()
    # and a fresh client still gets served
    c = RawClient(served.addr)
    c.request(1, "/test.Echo/Unary", b"")
    assert c.response(1)[0]["grpc-status"] == "0"
    c.close()
