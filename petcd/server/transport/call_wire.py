"""The call connection's frames, as pure functions: no sockets, no loop, no clock.

A call connection opens with the call handshake (``CALL_MAGIC``, then the
raft handshake's cluster id, sender and receiver; petcd/server/transport/wire.py).
After it, big-endian frames flow both ways::

    u32 length | u8 head | u64 call id | body        (length = 9 + len(body))

From the dialer, a call: ``head`` is the kind of request (``PING``, or one
the server defines: petcd/server/leader_client.py), ``body`` its protobuf.
From the acceptor, an answer to the call of that id, in any order: ``head``
is ``OK`` (``body``: the answer's protobuf) or ``ERROR`` (``body``: the
error's message, UTF-8, etcd's text for etcd's errors). Call ids are the
dialer's to choose; it never has two calls of one id in flight.

Bounds, checked as soon as a frame's first four bytes are in (before the
rest is buffered): a call's body at most MAX_CALL_BODY bytes (calls are ids
and flags), an error message at most MAX_ERROR_BYTES, an answer's body at
most what the reader allows (a lease's keys may be megabytes).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from petcd.server.transport.wire import FrameError

_HEAD = struct.Struct(">IBQ")
HEAD_SIZE = _HEAD.size  # 13: length, head byte, call id
_AFTER_LENGTH = HEAD_SIZE - 4

# The kind of call every member answers itself: an empty body, answered with an empty body.
PING = 0
# An answer's head byte.
OK = 0
ERROR = 1

MAX_CALL_BODY = 64 << 10
MAX_ERROR_BYTES = 4 << 10
MAX_CALL_ID = (1 << 64) - 1


@dataclass(slots=True, frozen=True)
class Call:
    """One request: its kind, the dialer's id for it, its encoded protobuf."""

    kind: int
    call_id: int
    body: bytes


@dataclass(slots=True, frozen=True)
class Answer:
    """The answer to the call of call_id: ok with a body, or not ok with an error message as body."""

    call_id: int
    ok: bool
    body: bytes

    @property
    def message(self) -> str:
        """The error's message (replacement characters for bytes that are not UTF-8)."""
        return self.body.decode("utf-8", "replace")


def _frame(head: int, call_id: int, body: bytes) -> bytes:
    return _HEAD.pack(_AFTER_LENGTH + len(body), head, call_id) + body


def encode_call(kind: int, call_id: int, body: bytes) -> bytes:
    """The frame of a call; FrameError if it breaks the bounds (the acceptor would hang up)."""
    if not 0 <= kind <= 0xFF:
        raise FrameError(f"call kind {kind} does not fit a byte")
    if len(body) > MAX_CALL_BODY:
        raise FrameError(f"a call of {len(body)} bytes (at most {MAX_CALL_BODY})")
    return _frame(kind, call_id, body)


def encode_answer(call_id: int, body: bytes) -> bytes:
    """The frame of a successful answer."""
    if _AFTER_LENGTH + len(body) > 0xFFFF_FFFF:
        raise FrameError(f"an answer of {len(body)} bytes exceeds the frame limit")
    return _frame(OK, call_id, body)


def encode_error(call_id: int, message: str) -> bytes:
    """The frame of a failed answer; a message over MAX_ERROR_BYTES is cut (on a character boundary)."""
    data = message.encode("utf-8")
    if len(data) > MAX_ERROR_BYTES:
        data = data[:MAX_ERROR_BYTES].decode("utf-8", "ignore").encode("utf-8")
    return _frame(ERROR, call_id, data)


def _head(buf: bytes | bytearray, off: int) -> tuple[int, int, int] | None:
    """(length, head byte, call id) of the frame at off, or None while fewer than HEAD_SIZE bytes are in."""
    if len(buf) - off < HEAD_SIZE:
        return None
    length, head, call_id = _HEAD.unpack_from(buf, off)
    return length, head, call_id


def _length(buf: bytes | bytearray, off: int) -> int | None:
    if len(buf) - off < 4:
        return None
    (length,) = struct.unpack_from(">I", buf, off)
    if length < _AFTER_LENGTH:
        raise FrameError(f"bad call frame: {length} bytes cannot hold a head and a call id")
    return int(length)


def read_call(buf: bytes | bytearray, off: int) -> tuple[Call, int] | int:
    """The call framed at off in buf, as (call, offset after it); or, when buf
    does not hold all of it yet, how many bytes from off it must hold before
    trying again. FrameError for a frame out of bounds, as soon as its length shows it."""
    length = _length(buf, off)
    if length is None:
        return 4
    if length - _AFTER_LENGTH > MAX_CALL_BODY:
        raise FrameError(f"bad call frame: a call of {length - _AFTER_LENGTH} bytes (at most {MAX_CALL_BODY})")
    stop = off + 4 + length
    if len(buf) < stop:
        return 4 + length
    got = _head(buf, off)
    assert got is not None
    _, kind, call_id = got
    return Call(kind, call_id, bytes(buf[off + HEAD_SIZE : stop])), stop


def read_answer(buf: bytes | bytearray, off: int, max_body: int) -> tuple[Answer, int] | int:
    """The answer framed at off in buf, as (answer, offset after it), or how
    many bytes from off buf must hold first (as read_call). An OK body may
    hold up to max_body bytes, an error message MAX_ERROR_BYTES; the head
    byte must be OK or ERROR."""
    length = _length(buf, off)
    if length is None:
        return 4
    size = length - _AFTER_LENGTH
    if size > max_body:
        raise FrameError(f"bad answer frame: {size} bytes (at most {max_body})")
    got = _head(buf, off)
    if got is None:
        return HEAD_SIZE
    _, head, call_id = got
    if head not in (OK, ERROR):
        raise FrameError(f"bad answer frame: head byte {head}")
    if head == ERROR and size > MAX_ERROR_BYTES:
        raise FrameError(f"bad answer frame: an error message of {size} bytes (at most {MAX_ERROR_BYTES})")
    stop = off + 4 + length
    if len(buf) < stop:
        return 4 + length
    return Answer(call_id, head == OK, bytes(buf[off + HEAD_SIZE : stop])), stop
