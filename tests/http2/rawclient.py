"""A deliberately simple blocking HTTP/2 client for tests that need to
control every frame (flow control, protocol errors, fuzzing)."""

from __future__ import annotations

import socket
import struct
import time
from dataclasses import dataclass

import hpack

from petcd.http2 import frames as f
from petcd.http2.grpc import frame_message


@dataclass
class Frame:
    type: int
    flags: int
    stream_id: int
    payload: bytes


class RawClient:
    def __init__(self, addr: tuple[str, int], settings: dict[int, int] | None = None, timeout: float = 10.0) -> None:
        self.sock = socket.create_connection(addr, timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""
        self.enc = hpack.Encoder()
        self.dec = hpack.Decoder()
        self.closed = False
        self.sock.sendall(f.PREFACE + f.settings_frame(settings or {}))

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def send_frame(self, ftype: int, flags: int, sid: int, payload: bytes = b"") -> None:
        self.send(f.frame(ftype, flags, sid, payload))

    def request(
        self, sid: int, path: str, body: bytes | None = None, extra: list[tuple[str, str]] | None = None,
        end: bool = True,
    ) -> None:
        """HEADERS (+ a DATA with one gRPC message) for a gRPC call."""
        headers = [
            (":method", "POST"), (":scheme", "http"), (":path", path), (":authority", "test"),
            ("content-type", "application/grpc"), ("te", "trailers"),
        ] + (extra or [])
        block = self.enc.encode(headers)
        if body is None:
            self.send_frame(f.HEADERS, f.FLAG_END_HEADERS | (f.FLAG_END_STREAM if end else 0), sid, block)
            return
        self.send_frame(f.HEADERS, f.FLAG_END_HEADERS, sid, block)
        self.send_frame(f.DATA, f.FLAG_END_STREAM if end else 0, sid, frame_message(body))

    def read_frame(self, timeout: float = 10.0) -> Frame | None:
        """The next frame, or None when the server closed the connection."""
        deadline = time.monotonic() + timeout
        while True:
            if len(self.buf) >= 9:
                length = int.from_bytes(self.buf[:3], "big")
                if len(self.buf) >= 9 + length:
                    ftype, flags, sid = self.buf[3], self.buf[4], struct.unpack(">I", self.buf[5:9])[0] & 0x7FFFFFFF
                    payload = self.buf[9 : 9 + length]
                    self.buf = self.buf[9 + length :]
                    return Frame(ftype, flags, sid, payload)
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no frame from the server")
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(65536)
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                self.closed = True
                return None
            self.buf += chunk

    def until(self, ftype: int, sid: int | None = None, timeout: float = 10.0) -> Frame:
        """Skip frames until one of ftype (on sid, if given)."""
        while True:
            fr = self.read_frame(timeout)
            if fr is None:
                raise ConnectionError("closed before the frame came")
            if fr.type == ftype and (sid is None or fr.stream_id == sid):
                return fr

    def goaway(self, timeout: float = 10.0) -> tuple[int, int, bytes]:
        """(last stream id, error code, debug) of the server's GOAWAY."""
        fr = self.until(f.GOAWAY, timeout=timeout)
        last, code = struct.unpack(">II", fr.payload[:8])
        return last, code, fr.payload[8:]

    def response(self, sid: int, timeout: float = 10.0, ack: bool = True) -> tuple[dict[str, str], bytes]:
        """All headers (initial and trailers merged) and DATA of a stream,
        crediting DATA back so big responses flow."""
        headers: dict[str, str] = {}
        data = b""
        while True:
            fr = self.read_frame(timeout)
            if fr is None:
                raise ConnectionError("closed mid-response")
            if fr.stream_id != sid:
                if fr.type == f.HEADERS:
                    self.dec.decode(fr.payload)
                continue
            if fr.type == f.HEADERS:
                for k, v in self.dec.decode(fr.payload):
                    headers[str(k)] = str(v)
            elif fr.type == f.DATA:
                data += fr.payload
                if ack and fr.payload:
                    self.send(f.window_update(0, len(fr.payload)) + f.window_update(sid, len(fr.payload)))
            elif fr.type == f.RST_STREAM:
                headers["rst"] = str(struct.unpack(">I", fr.payload)[0])
                return headers, data
            if fr.flags & f.FLAG_END_STREAM:
                return headers, data

    def close(self) -> None:
        self.sock.close()
