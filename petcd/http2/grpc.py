"""gRPC over HTTP/2, the parts that are not I/O: status codes, the error a
handler raises to end a call, the 5-byte length-prefixed message framing,
request metadata, ``grpc-timeout``, and the pre-encoded response header and
trailer blocks (status with a percent-encoded ``grpc-message``)."""

from __future__ import annotations

import base64
import struct
import zlib
from collections.abc import Callable, Iterable
from enum import IntEnum
from functools import lru_cache
from typing import Any

from petcd import stats
from petcd.http2 import frames as f


class StatusCode(IntEnum):
    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    OUT_OF_RANGE = 11
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    DATA_LOSS = 15
    UNAUTHENTICATED = 16


class RpcError(Exception):
    """Ends a call with a gRPC status; what handlers raise (petcd's own
    errors are turned into these in one place, petcd/api/errors.py)."""

    def __init__(self, code: StatusCode, message: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    def __repr__(self) -> str:
        return f"RpcError({self.code.name}, {self.message!r})"


_PREFIX = struct.Struct(">BI")
# etcd_network_client_grpc_{sent,received}_bytes_total: this framing is the
# client port's alone (peers speak raft's HTTP), so every message framed here
# went to a client and every one decoded came from one
_BYTES = stats.CLIENT_GRPC


def frame_message(payload: bytes) -> bytes:
    """A gRPC message on the wire: uncompressed flag, length, payload
    (counted as sent to a client)."""
    n = len(payload)
    _BYTES.sent += n
    return _PREFIX.pack(0, n) + payload


def frame_messages(messages: Iterable[Any], encode: Callable[[Any], bytes]) -> bytes:
    """frame_message of each message (bytes as they are, anything else
    through encode), in one string (counted as sent to a client)."""
    pack = _PREFIX.pack
    parts: list[bytes] = []
    total = 0
    for m in messages:
        if type(m) is not bytes:
            m = encode(m)
        n = len(m)
        total += n
        parts += (pack(0, n), m)
    _BYTES.sent += total
    return b"".join(parts)


class Messages(list):  # type: ignore[type-arg]
    """Several messages a streaming handler yields at once (each a message
    or its encoding): they go out in order, in one write, as separate gRPC
    messages. A watch stream answers a revision for many watchers this way."""


# grpc-go's wording, since etcd (the spec) is a grpc-go server
def too_large(size: int, limit: int) -> RpcError:
    return RpcError(StatusCode.RESOURCE_EXHAUSTED, f"grpc: received message larger than max ({size} vs. {limit})")


def _gunzip(data: bytes) -> bytes:
    return zlib.decompress(data, 47)  # gzip or zlib header, auto-detected


def _inflate(data: bytes) -> bytes:
    try:
        return zlib.decompress(data)
    except zlib.error:
        return zlib.decompress(data, -15)  # raw deflate


DECOMPRESSORS: dict[bytes, Callable[[bytes], bytes]] = {b"gzip": _gunzip, b"deflate": _inflate}


class MessageReader:
    """Reassembles length-prefixed messages from DATA payloads; refuses one
    larger than limit as soon as its prefix arrives (so it is never
    buffered)."""

    __slots__ = ("buf", "limit", "decompress")

    def __init__(self, limit: int, decompress: Callable[[bytes], bytes] | None) -> None:
        self.buf = bytearray()
        self.limit = limit
        self.decompress = decompress

    def feed(self, data: bytes, max_messages: int = 1 << 62) -> list[bytes]:
        """The messages completed by data, at most max_messages of them (the
        rest stays buffered for the next call; each counted as received from
        a client, decompressed); raises RpcError."""
        pending = self.buf
        buf: bytes | bytearray
        if pending:
            pending += data
            buf = pending
        else:
            buf = data
        out: list[bytes] = []
        got = 0
        pos = 0
        n = len(buf)
        while n - pos >= 5 and len(out) < max_messages:
            flag, size = _PREFIX.unpack_from(buf, pos)
            if size > self.limit:
                raise too_large(size, self.limit)
            if n - pos - 5 < size:
                break
            msg = bytes(buf[pos + 5 : pos + 5 + size])
            pos += 5 + size
            if flag:
                if flag != 1:
                    raise RpcError(StatusCode.INTERNAL, f"grpc: invalid message compression flag {flag}")
                if self.decompress is None:
                    raise RpcError(StatusCode.INTERNAL, "grpc: compressed flag set with identity or empty encoding")
                try:
                    msg = self.decompress(msg)
                except zlib.error as exc:
                    raise RpcError(StatusCode.INTERNAL, f"grpc: failed to decompress the received message: {exc}") from None
                if len(msg) > self.limit:
                    raise too_large(len(msg), self.limit)
            out.append(msg)
            got += len(msg)
        _BYTES.received += got
        if buf is pending:
            del pending[:pos]
        elif pos < n:
            pending += buf[pos:]
        return out

    @property
    def partial(self) -> bool:
        return bool(self.buf)


_UNITS = {b"H": 3600.0, b"M": 60.0, b"S": 1.0, b"m": 1e-3, b"u": 1e-6, b"n": 1e-9}


def parse_timeout(value: bytes) -> float:
    """Seconds from a grpc-timeout value ('100m', '5S'); raises RpcError."""
    unit = _UNITS.get(value[-1:])
    digits = value[:-1]
    if unit is None or not digits.isdigit() or len(digits) > 8:
        raise RpcError(StatusCode.INTERNAL, f"malformed time-out: {value.decode('latin-1')!r}")
    return int(digits) * unit


# Header names that are transport, not metadata.
_RESERVED = frozenset(
    (b"content-type", b"te", b"grpc-timeout", b"grpc-encoding", b"grpc-accept-encoding", b"user-agent", b"host")
)


def metadata(headers: list[tuple[bytes, bytes]]) -> list[tuple[str, str | bytes]]:
    """The call's metadata as grpc presents it: lowercase keys, text values,
    binary ('-bin') values base64-decoded."""
    out: list[tuple[str, str | bytes]] = []
    for name, value in headers:
        if name[:1] == b":" or name in _RESERVED:
            continue
        key = name.decode("latin-1")
        if key.endswith("-bin"):
            try:
                out.append((key, base64.b64decode(value + b"=" * (-len(value) % 4))))
            except ValueError:
                continue
        else:
            out.append((key, value.decode("latin-1")))
    return out


def percent_encode(message: str) -> bytes:
    """grpc-message encoding: printable ASCII but '%' as is, the rest %XX
    of its UTF-8."""
    raw = message.encode("utf-8", "replace")
    if all(0x20 <= b <= 0x7E and b != 0x25 for b in raw):
        return raw
    return b"".join(bytes((b,)) if 0x20 <= b <= 0x7E and b != 0x25 else b"%%%02X" % b for b in raw)


def percent_decode(value: bytes) -> str:
    out = bytearray()
    i = 0
    while i < len(value):
        c = value[i]
        if c == 0x25 and i + 2 < len(value) + 0 and _ishex(value[i + 1 : i + 3]):
            out.append(int(value[i + 1 : i + 3], 16))
            i += 3
        else:
            out.append(c)
            i += 1
    return out.decode("utf-8", "replace")


def _ishex(b: bytes) -> bool:
    return len(b) == 2 and all(c in b"0123456789abcdefABCDEF" for c in b)


RESPONSE_HEADERS = f.STATUS_200 + f.hpack_literal_indexed_name(f.CONTENT_TYPE_INDEX, b"application/grpc")
OK_TRAILERS = f.hpack_literal(b"grpc-status", b"0")


@lru_cache(maxsize=512)
def trailers(code: int, message: str = "") -> bytes:
    """The trailer block for a status."""
    block = f.hpack_literal(b"grpc-status", str(int(code)).encode())
    if message:
        block += f.hpack_literal(b"grpc-message", percent_encode(message))
    return block


def trailers_only(code: int, message: str = "") -> bytes:
    """A whole error response in one header block (no response messages)."""
    return RESPONSE_HEADERS + trailers(code, message)


def http_error(status: int, code: int, message: str) -> bytes:
    """A non-200 response (not gRPC at all: wrong method or content type)."""
    return (
        f.hpack_literal_indexed_name(8, str(status).encode())
        + f.hpack_literal_indexed_name(f.CONTENT_TYPE_INDEX, b"application/grpc")
        + trailers(code, message)
    )
