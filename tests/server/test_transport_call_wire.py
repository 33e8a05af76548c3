"""The call connection's wire format (petcd/server/transport/call_wire.py and
the call opening in wire.py) without sockets: frames both ways, byte by byte,
and the bounds on what a peer may send."""

from __future__ import annotations

import struct

import pytest

from petcd.server.transport.call_wire import (
    ERROR,
    HEAD_SIZE,
    MAX_CALL_BODY,
    MAX_ERROR_BYTES,
    OK,
    PING,
    Answer,
    Call,
    encode_answer,
    encode_call,
    encode_error,
    read_answer,
    read_call,
)
from petcd.server.transport.wire import (
    CALL_MAGIC,
    HANDSHAKE_SIZE,
    MAGIC,
    MEMBERS_MAGIC,
    FrameError,
    Handshake,
    Opening,
    classify_opening,
)

LIMIT = 1 << 20


def test_the_call_opening_is_told_apart_from_the_others() -> None:
    assert classify_opening(CALL_MAGIC) is Opening.CALL
    assert classify_opening(CALL_MAGIC[:6]) is Opening.UNDECIDED  # "PETCDC": only the call magic starts so
    assert classify_opening(MAGIC) is Opening.RAFT
    assert classify_opening(MEMBERS_MAGIC) is Opening.MEMBERS
    assert classify_opening(b"PETCDCALX") is Opening.BAD
    hs = Handshake(0xC1, 0xA, 0xB, CALL_MAGIC)
    raw = hs.encode()
    assert len(raw) == HANDSHAKE_SIZE and raw.startswith(CALL_MAGIC)
    assert Handshake.decode(raw) == hs
    assert Handshake.decode(Handshake(0xC1, 0xA, 0xB).encode()).magic == MAGIC
    with pytest.raises(FrameError):
        Handshake.decode(MEMBERS_MAGIC + bytes(24))


def test_calls_round_trip_byte_by_byte() -> None:
    calls = [Call(PING, 1, b""), Call(1, 2, b"\x08\x2a"), Call(255, (1 << 64) - 1, b"x" * MAX_CALL_BODY)]
    stream = b"".join(encode_call(c.kind, c.call_id, c.body) for c in calls)
    assert len(encode_call(1, 7, b"ab")) == HEAD_SIZE + 2
    # fed one byte at a time, each call comes out exactly once, when its last byte is in
    buf = bytearray()
    got: list[Call] = []
    for byte in stream:
        buf.append(byte)
        while True:
            r = read_call(buf, 0)
            if isinstance(r, int):
                assert r > len(buf)  # it always asks for more than it has
                break
            call, off = r
            got.append(call)
            del buf[:off]
    assert got == calls and not buf


def test_answers_round_trip_and_errors_carry_the_message() -> None:
    frames = encode_answer(9, b"\x10\x3c") + encode_error(10, "etcdserver: requested lease not found")
    first, off = read_answer(frames, 0, LIMIT)  # type: ignore[misc]
    assert first == Answer(9, True, b"\x10\x3c")
    second, end = read_answer(frames, off, LIMIT)  # type: ignore[misc]
    assert (second.call_id, second.ok, second.message) == (10, False, "etcdserver: requested lease not found")
    assert end == len(frames)
    assert read_answer(frames, end, LIMIT) == 4
    assert read_answer(frames[:3], 0, LIMIT) == 4
    assert read_answer(frames[:HEAD_SIZE - 1], 0, LIMIT) == HEAD_SIZE
    assert read_answer(frames[:HEAD_SIZE], 0, LIMIT) == HEAD_SIZE + 2


def test_a_long_error_message_is_cut_on_a_character_boundary() -> None:
    frame = encode_error(1, "é" * MAX_ERROR_BYTES)
    answer, _ = read_answer(frame, 0, LIMIT)  # type: ignore[misc]
    assert not answer.ok and len(answer.body) <= MAX_ERROR_BYTES
    assert answer.message == "é" * (MAX_ERROR_BYTES // 2)


def test_calls_out_of_bounds_are_refused_from_their_length_alone() -> None:
    with pytest.raises(FrameError):
        encode_call(1, 1, b"x" * (MAX_CALL_BODY + 1))
    with pytest.raises(FrameError):
        encode_call(256, 1, b"")
    # the length of a too-big call is enough: nothing more is buffered first
    with pytest.raises(FrameError, match="at most"):
        read_call(struct.pack(">I", 9 + MAX_CALL_BODY + 1), 0)
    with pytest.raises(FrameError, match="cannot hold"):
        read_call(struct.pack(">I", 8) + bytes(8), 0)
    with pytest.raises(FrameError, match="cannot hold"):
        read_call(struct.pack(">I", 0), 0)


def test_answers_out_of_bounds_are_refused() -> None:
    with pytest.raises(FrameError, match="at most"):
        read_answer(struct.pack(">I", 9 + LIMIT + 1), 0, LIMIT)
    with pytest.raises(FrameError, match="head byte"):
        read_answer(struct.pack(">IBQ", 9, 7, 1), 0, LIMIT)
    with pytest.raises(FrameError, match="error message"):
        read_answer(struct.pack(">IBQ", 9 + MAX_ERROR_BYTES + 1, ERROR, 1), 0, LIMIT)
    # an OK answer may be as big as the reader allows
    big = encode_answer(3, b"k" * LIMIT)
    assert big[4] == OK
    answer, end = read_answer(big, 0, LIMIT)  # type: ignore[misc]
    assert answer.ok and len(answer.body) == LIMIT and end == len(big)
