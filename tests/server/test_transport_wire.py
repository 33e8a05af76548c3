"""The peer wire format (petcd/server/transport/wire.py) without sockets: the
opening, the handshake, frames in and out, and the bounds on what a peer may send."""

from __future__ import annotations

import re
import struct

import pytest

from petcd.raft import ConfState, Entry, Message, MessageType, Snapshot, SnapshotMetadata
from petcd.raft.bounds import MAX_ENTRIES_PER_MESSAGE
from petcd.server.transport.wire import (
    HANDSHAKE_SIZE,
    MAGIC,
    MAX_CONTROL_FRAME,
    MAX_FRAME,
    MEMBERS_MAGIC,
    FrameError,
    Handshake,
    Opening,
    check_sender,
    classify_opening,
    decode_message,
    frame_limit,
    read_frame,
    snapshot_frame,
)

LIMIT = 1 << 20


def frame(body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + body


def heartbeat(frm: int, to: int, commit: int = 0) -> Message:
    return Message(MessageType.MsgHeartbeat, to=to, from_=frm, term=3, commit=commit)


def read_all(buf: bytearray, limit: int = LIMIT) -> tuple[list[Message], int | None]:
    """Every whole frame in buf, and how many bytes the next one needs (None if buf ended on a frame)."""
    out: list[Message] = []
    off = 0
    while True:
        got = read_frame(buf, off, limit)
        if isinstance(got, int):
            return out, (got if off < len(buf) or got != 4 else None)
        msg, off = got
        out.append(msg)


# ---- opening and handshake -----------------------------------------------------------------------


def test_opening_is_classified_from_its_first_bytes() -> None:
    assert classify_opening(b"") is Opening.UNDECIDED
    assert classify_opening(b"PETCD") is Opening.UNDECIDED  # both magics start so
    assert classify_opening(b"PETCDR") is Opening.UNDECIDED
    assert classify_opening(MAGIC) is Opening.RAFT
    assert classify_opening(MAGIC + b"\x00" * 24) is Opening.RAFT
    assert classify_opening(b"PETCDM") is Opening.UNDECIDED
    assert classify_opening(MEMBERS_MAGIC) is Opening.MEMBERS
    for bad in (b"G", b"GET / HTTP/1.1\r\n", b"PETCDX", MAGIC[:5] + b"XYZ", b"\x16\x03\x01"):
        assert classify_opening(bad) is Opening.BAD, bad


def test_handshake_round_trips_and_has_a_fixed_size() -> None:
    hs = Handshake(0xC1, 0xA1, 2**64 - 1)
    raw = hs.encode()
    assert len(raw) == HANDSHAKE_SIZE == len(MAGIC) + 24
    assert raw.startswith(MAGIC)
    assert Handshake.decode(raw) == hs
    assert Handshake.decode(bytearray(raw + b"trailing")) == hs
    with pytest.raises(FrameError):
        Handshake.decode(b"X" * HANDSHAKE_SIZE)


# ---- frames ---------------------------------------------------------------------------------------


def test_frames_read_back_in_order_whole_or_fed_byte_by_byte() -> None:
    msgs = [heartbeat(0xA1, 0xB2, i) for i in range(5)]
    msgs.append(Message(MessageType.MsgApp, to=0xB2, from_=0xA1, term=3, index=4, log_term=3,
                        entries=[Entry(3, 5, data=b"x" * 1000)]))
    wire = b"".join(frame(m.to_bytes()) for m in msgs)
    got, need = read_all(bytearray(wire))
    assert got == msgs and need is None
    # Fed one byte at a time, as a slow socket would: never a message before its last byte,
    # and `need` never asks for more than the frame in progress.
    buf = bytearray()
    out: list[Message] = []
    for b in wire:
        buf.append(b)
        while True:
            got1 = read_frame(buf, 0, LIMIT)
            if isinstance(got1, int):
                assert got1 > len(buf) or got1 == 4 and not buf
                break
            msg, off = got1
            out.append(msg)
            del buf[:off]
    assert out == msgs and not buf


def test_read_frame_asks_for_the_type_before_the_body() -> None:
    body = heartbeat(0xA1, 0xB2).to_bytes()
    wire = frame(body)
    assert read_frame(bytearray(wire[:3]), 0, LIMIT) == 4
    assert read_frame(bytearray(wire[:5]), 0, LIMIT) == 6
    assert read_frame(bytearray(wire[:6]), 0, LIMIT) == 4 + len(body)


@pytest.mark.parametrize(
    ("head", "reason"),
    [
        (struct.pack(">I", 0), "0 bytes cannot hold a raft message"),
        (struct.pack(">I", 1) + b"\x08", "1 bytes cannot hold a raft message"),
        (struct.pack(">I", 9) + b"\x08\x63", "does not start with a raft message type"),
        (struct.pack(">I", 9) + b"\x10\x03", "does not start with a raft message type"),
        (struct.pack(">I", 100 << 20) + b"\x08\x08", f"a MsgHeartbeat of {100 << 20} bytes (at most 65536)"),
        (struct.pack(">I", LIMIT + 1) + b"\x08\x03", f"a MsgApp of {LIMIT + 1} bytes (at most {LIMIT})"),
        (struct.pack(">I", MAX_FRAME) + b"\x08\x02", "a MsgProp of 4294967295 bytes"),
    ],
)
def test_frames_out_of_bounds_are_refused_from_six_bytes(head: bytes, reason: str) -> None:
    with pytest.raises(FrameError, match=re.escape(reason)):
        read_frame(bytearray(head), 0, LIMIT)


def test_a_snapshot_frame_may_be_as_big_as_a_frame_can_be() -> None:
    assert read_frame(bytearray(struct.pack(">I", MAX_FRAME) + b"\x08\x07"), 0, LIMIT) == 4 + MAX_FRAME
    assert frame_limit(MessageType.MsgSnap, LIMIT) == MAX_FRAME
    assert frame_limit(MessageType.MsgApp, LIMIT) == frame_limit(MessageType.MsgProp, LIMIT) == LIMIT
    assert frame_limit(MessageType.MsgHeartbeat, LIMIT) == MAX_CONTROL_FRAME


def test_entry_count_and_stray_snapshots_are_bounded_before_parsing() -> None:
    head = Message(MessageType.MsgApp, to=2, from_=1, term=3, index=1, log_term=3).to_bytes()
    ok = bytearray(frame(head + b"\x3a\x00" * MAX_ENTRIES_PER_MESSAGE))
    msg, _ = read_frame(ok, 0, 64 << 20)  # type: ignore[misc]
    assert len(msg.entries) == MAX_ENTRIES_PER_MESSAGE
    with pytest.raises(FrameError, match=f"more than {MAX_ENTRIES_PER_MESSAGE} entries"):
        read_frame(bytearray(frame(head + b"\x3a\x00" * (MAX_ENTRIES_PER_MESSAGE + 1))), 0, 64 << 20)
    with pytest.raises(FrameError, match="a snapshot in a message that is not"):
        read_frame(bytearray(frame(head + b"\x3a\x00" * 40_000 + b"\x4a\x03\x12\x01\x00")), 0, 64 << 20)


def test_garbage_bodies_are_frame_errors_not_crashes() -> None:
    for body in (b"\x08\x08\xff", b"\x08\x08\x12\xff\xff\xff\xff\x0f", b"\x08\x08" + b"\xff" * 20):
        with pytest.raises(FrameError):
            read_frame(bytearray(frame(body)), 0, LIMIT)


def test_sender_must_be_the_connections_member_unless_forwarded() -> None:
    check_sender(heartbeat(0xA1, 0xB2), 0xA1)
    with pytest.raises(FrameError, match="a MsgHeartbeat from member c3 on a1's connection"):
        check_sender(heartbeat(0xC3, 0xB2), 0xA1)
    for kind in (MessageType.MsgProp, MessageType.MsgReadIndex, MessageType.MsgTransferLeader):
        check_sender(Message(kind, to=0xB2, from_=0xC3), 0xA1)


# ---- snapshots ------------------------------------------------------------------------------------


def test_spliced_snapshot_frame_decodes_to_the_same_message() -> None:
    meta = SnapshotMetadata(ConfState([1, 2], learners=[3]), index=77, term=5)
    for data in (b"", b"small", b"\x00\xff" * 100_000):
        msg = Message(MessageType.MsgSnap, to=2, from_=1, term=5, snapshot=Snapshot(data, meta), context=b"c")
        pieces = snapshot_frame(msg)
        wire = b"".join(pieces)
        (size,) = struct.unpack(">I", wire[:4])
        assert size == len(wire) - 4
        assert Message.from_bytes(wire[4:]) == msg
        # What the receiver makes of it (big MsgSnap frames take the copy-once path), and of
        # protobuf's own encoding of the same message.
        for body in (wire[4:], msg.to_bytes()):
            buf = bytearray(b"pad" + body)
            assert decode_message(buf, 3, len(buf)) == msg
        assert read_frame(bytearray(wire), 0, LIMIT) == (msg, len(wire))
        if len(data) >= 100_000:
            assert pieces[-1] is data  # written from the caller's bytes, not copied


def test_truncated_snapshot_frame_is_a_frame_error() -> None:
    msg = Message(MessageType.MsgSnap, to=2, from_=1, term=5, snapshot=Snapshot(b"d" * 100_000))
    body = bytearray(b"".join(snapshot_frame(msg))[4:])
    with pytest.raises(FrameError):
        decode_message(body, 0, len(body) - 10)


def test_snapshot_metadata_is_bounded_apart_from_its_data() -> None:
    big_meta = Message(MessageType.MsgSnap, to=2, from_=1, term=3, snapshot=Snapshot(
        b"d" * 70_000, SnapshotMetadata(ConfState(voters=list(range(1, 400_000))), 9, 3))).to_bytes()
    with pytest.raises(FrameError, match="bytes besides its data"):
        read_frame(bytearray(frame(big_meta)), 0, LIMIT)
