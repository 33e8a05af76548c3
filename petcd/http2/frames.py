"""HTTP/2 wire constants (RFC 9113) and the small encoders the server needs:
frame headers packed with struct, and HPACK output that never touches a
dynamic table (literals without indexing and static-table references), so
response header blocks can be encoded once and reused on every connection."""

from __future__ import annotations

import struct
from enum import IntEnum

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

# frame types
DATA = 0x0
HEADERS = 0x1
PRIORITY = 0x2
RST_STREAM = 0x3
SETTINGS = 0x4
PUSH_PROMISE = 0x5
PING = 0x6
GOAWAY = 0x7
WINDOW_UPDATE = 0x8
CONTINUATION = 0x9

# flags
FLAG_END_STREAM = 0x1
FLAG_ACK = 0x1
FLAG_END_HEADERS = 0x4
FLAG_PADDED = 0x8
FLAG_PRIORITY = 0x20

# settings identifiers
SETTINGS_HEADER_TABLE_SIZE = 0x1
SETTINGS_ENABLE_PUSH = 0x2
SETTINGS_MAX_CONCURRENT_STREAMS = 0x3
SETTINGS_INITIAL_WINDOW_SIZE = 0x4
SETTINGS_MAX_FRAME_SIZE = 0x5
SETTINGS_MAX_HEADER_LIST_SIZE = 0x6

DEFAULT_WINDOW = 65535
DEFAULT_MAX_FRAME_SIZE = 16384
MAX_FRAME_SIZE_LIMIT = (1 << 24) - 1
MAX_WINDOW = (1 << 31) - 1
FRAME_HEADER_LEN = 9


class ErrorCode(IntEnum):
    """RFC 9113 section 7."""

    NO_ERROR = 0x0
    PROTOCOL_ERROR = 0x1
    INTERNAL_ERROR = 0x2
    FLOW_CONTROL_ERROR = 0x3
    SETTINGS_TIMEOUT = 0x4
    STREAM_CLOSED = 0x5
    FRAME_SIZE_ERROR = 0x6
    REFUSED_STREAM = 0x7
    CANCEL = 0x8
    COMPRESSION_ERROR = 0x9
    CONNECT_ERROR = 0xA
    ENHANCE_YOUR_CALM = 0xB
    INADEQUATE_SECURITY = 0xC
    HTTP_1_1_REQUIRED = 0xD


_HEADER = struct.Struct(">HBBBI")  # length as 16 + 8 bits, type, flags, stream id
_U32 = struct.Struct(">I")
_GOAWAY = struct.Struct(">II")
_SETTING = struct.Struct(">HI")


def frame(ftype: int, flags: int, stream_id: int, payload: bytes = b"") -> bytes:
    """One whole frame."""
    n = len(payload)
    return _HEADER.pack(n >> 8, n & 0xFF, ftype, flags, stream_id) + payload


def frame_header(length: int, ftype: int, flags: int, stream_id: int) -> bytes:
    return _HEADER.pack(length >> 8, length & 0xFF, ftype, flags, stream_id)


def settings_frame(settings: dict[int, int]) -> bytes:
    return frame(SETTINGS, 0, 0, b"".join(_SETTING.pack(k, v) for k, v in settings.items()))


def window_update(stream_id: int, increment: int) -> bytes:
    return frame(WINDOW_UPDATE, 0, stream_id, _U32.pack(increment))


def rst_stream(stream_id: int, code: int) -> bytes:
    return frame(RST_STREAM, 0, stream_id, _U32.pack(code))


def goaway(last_stream_id: int, code: int, debug: bytes = b"") -> bytes:
    return frame(GOAWAY, 0, 0, _GOAWAY.pack(last_stream_id, code) + debug)


def ping(opaque: bytes, ack: bool = False) -> bytes:
    return frame(PING, FLAG_ACK if ack else 0, 0, opaque)


# --- HPACK output (RFC 7541) without a dynamic table -------------------------


def hpack_int(value: int, prefix_bits: int, first: int) -> bytes:
    """An HPACK integer with an N-bit prefix; first holds the pattern bits."""
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes((first | value,))
    out = bytearray((first | limit,))
    value -= limit
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def hpack_string(s: bytes) -> bytes:
    """A raw (not Huffman-coded) string literal."""
    return hpack_int(len(s), 7, 0) + s


def hpack_literal(name: bytes, value: bytes) -> bytes:
    """A 'literal header field without indexing, new name' representation:
    leaves the peer's dynamic table untouched, so it can be reused freely."""
    return b"\x00" + hpack_string(name) + hpack_string(value)


def hpack_literal_indexed_name(static_index: int, value: bytes) -> bytes:
    """A 'literal without indexing' whose name is a static table entry."""
    return hpack_int(static_index, 4, 0) + hpack_string(value)


STATUS_200 = b"\x88"  # static table entry 8, ':status: 200'
CONTENT_TYPE_INDEX = 31  # static table entry 31, 'content-type'
