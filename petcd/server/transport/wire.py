"""The peer port's wire format, as pure functions: no sockets, no loop, no clock.

Plain TCP (or TLS), big-endian:

- an opening, once per connection, from the dialer: either the raft
  handshake, ``b"PETCDRAFT1"``, u64 cluster id, u64 sender member id, u64
  receiver member id; or the call handshake, the same with
  ``b"PETCDCALL1"``, after which the connection carries requests and their
  answers (petcd/server/transport/call_wire.py); or ``b"PETCDMEMB1"``, a
  one-shot request for the cluster's member list (asked by a member joining
  a running cluster; see petcd/server/join.py).
- after the raft handshake, frames: u32 length + an etcd raftpb ``Message``,
  encoded with its type field first (as protobuf encoders write fields in
  number order), so the first two bytes of a frame name its type.
- the acceptor answers each MsgSnap it has delivered with one byte,
  ``SNAP_ACK``. Nothing else ever flows from acceptor to dialer.

What a peer sends is bounded before it is buffered or parsed (``read_frame``):
a frame must start with a known message type; a snapshot frame may be up to
4 GiB, a MsgApp or MsgProp up to ``max_message_bytes`` holding at most
MAX_ENTRIES_PER_MESSAGE entries and no snapshot, any other message 64 KiB.
Every message's ``from`` must be the member that opened the connection (but
on what followers forward: a MsgProp or MsgReadIndex names the member that
made it, a MsgTransferLeader its transferee; ``check_sender``).

Snapshot data is neither copied on the sending side nor run through protobuf
on either side (``snapshot_frame``, ``decode_snapshot``).
"""

from __future__ import annotations

import dataclasses
import struct
from dataclasses import dataclass
from enum import Enum

from petcd.proto import raft_pb2
from petcd.raft import Message, MessageType, Snapshot
from petcd.raft.bounds import FORWARDED, MAX_ENTRIES_PER_MESSAGE
from petcd.varint import varint

MAGIC = b"PETCDRAFT1"
# A one-shot request on the peer port: "who is in this cluster?", asked by a
# member joining a running cluster (etcd asks its peers' /members).
MEMBERS_MAGIC = b"PETCDMEMB1"
# A connection of requests and answers between members (what a follower asks
# its leader; probes), opened with the same handshake as raft's.
CALL_MAGIC = b"PETCDCALL1"
_MAGICS = (MAGIC, CALL_MAGIC, MEMBERS_MAGIC)
_HANDSHAKE = struct.Struct(">10sQQQ")
HANDSHAKE_SIZE = _HANDSHAKE.size
_LEN = struct.Struct(">I")
pack_length = _LEN.pack
MAX_FRAME = 0xFFFF_FFFF
SNAP_ACK = b"\x01"

# Snapshot data at least this big is written straight from the caller's bytes
# object instead of being copied through protobuf (see snapshot_frame).
_SPLICE_MIN = 64 << 10
# Received frames at least this big are parsed through a memoryview rather than a copy.
_VIEW_MIN = 64 << 10
# How an encoded MsgSnap starts: field 1 (type), varint 7.
_MSGSNAP_PREFIX = b"\x08\x07"

# Protobuf keys (field number << 3 | wire type 2) of Message.snapshot, Message.entries and Snapshot.data.
_KEY_MESSAGE_SNAPSHOT = b"\x4a"
_KEY_MESSAGE_ENTRIES = b"\x3a"
_KEY_SNAPSHOT_DATA = b"\x0a"
# Key of Message.type (field 1, varint): every frame starts with it.
_KEY_MESSAGE_TYPE = 0x08

# Frame size limits by message type. Entries travel in MsgApp (at most
# max_size_per_msg bytes of them plus one entry, which may be as big as the
# largest request) and in MsgProp (one forwarded request); snapshots in
# MsgSnap; every other message is a few dozen bytes plus a read-index context.
DEFAULT_MAX_MESSAGE_BYTES = 64 << 20
MAX_CONTROL_FRAME = 64 << 10
# The snapshot frame, apart from its data (metadata: a term, an index, a member list).
MAX_SNAPSHOT_META = 1 << 20
# Entry-carrying frames bigger than this are scanned before parsing, so a frame
# of millions of empty entries is refused instead of parsed into gigabytes of objects.
_SCAN_MIN = 64 << 10
_WIRE_TYPES = frozenset(int(t) for t in MessageType if t != MessageType.MsgHup)
_ENTRY_TYPES = frozenset({int(MessageType.MsgApp), int(MessageType.MsgProp)})


class TransportError(Exception):
    """Base of the peer transport's own failures."""


class BadURLError(TransportError, ValueError):
    """A listen or peer URL the transport cannot use."""


class FrameError(TransportError):
    """A peer sent bytes that are not a handshake or frame of this protocol."""


# ---- the opening ---------------------------------------------------------------------------------


class Opening(Enum):
    """What the first bytes of an inbound connection are."""

    UNDECIDED = "undecided"  # a prefix of a magic: wait for more
    RAFT = "raft"  # the raft magic (the rest of the handshake may still be coming)
    CALL = "call"  # the call magic (likewise)
    MEMBERS = "members"  # the member-list request
    BAD = "bad"  # not this protocol


def classify_opening(buf: bytes | bytearray) -> Opening:
    """What an inbound connection that has sent buf so far is asking for."""
    if buf[: len(MEMBERS_MAGIC)] == MEMBERS_MAGIC:
        return Opening.MEMBERS
    if buf[: len(MAGIC)] == MAGIC:
        return Opening.RAFT
    if buf[: len(CALL_MAGIC)] == CALL_MAGIC:
        return Opening.CALL
    if any(buf[: len(m)] == m[: len(buf)] for m in _MAGICS):
        return Opening.UNDECIDED
    return Opening.BAD


@dataclass(slots=True, frozen=True)
class Handshake:
    """The raft or call handshake: who is dialing whom, in which cluster, for what (the magic)."""

    cluster_id: int
    from_id: int
    to_id: int
    magic: bytes = MAGIC

    def encode(self) -> bytes:
        return _HANDSHAKE.pack(self.magic, self.cluster_id, self.from_id, self.to_id)

    @staticmethod
    def decode(buf: bytes | bytearray) -> Handshake:
        """The handshake at the start of buf (which holds at least HANDSHAKE_SIZE bytes, MAGIC or CALL_MAGIC first)."""
        magic, cluster_id, from_id, to_id = _HANDSHAKE.unpack_from(buf, 0)
        if magic not in (MAGIC, CALL_MAGIC):
            raise FrameError("bad handshake: wrong magic")
        return Handshake(cluster_id, from_id, to_id, magic)


# ---- sending -------------------------------------------------------------------------------------


def frame_limit(kind: int, max_message_bytes: int) -> int:
    """The largest frame a message of type kind may take."""
    if kind == MessageType.MsgSnap:
        return MAX_FRAME
    if kind in _ENTRY_TYPES:
        return max_message_bytes
    return MAX_CONTROL_FRAME


def snapshot_frame(msg: Message) -> list[bytes]:
    """The frame of a MsgSnap as pieces to write in order; the last piece may be the snapshot data itself.

    Big snapshot data is not run through protobuf (which would copy it three
    times on the loop): the message is encoded with empty snapshot data, and
    the data follows as a second occurrence of the snapshot field. Protobuf
    parsers merge repeated occurrences of a message field, so the bytes decode
    to exactly ``msg``.
    """
    snap = msg.snapshot
    if snap is None or len(snap.data) < _SPLICE_MIN:
        body = msg.to_bytes()
        if len(body) > MAX_FRAME:
            raise FrameError(f"message of {len(body)} bytes exceeds the frame limit")
        return [_LEN.pack(len(body)), body]
    data = snap.data
    head = dataclasses.replace(msg, snapshot=Snapshot(b"", snap.metadata)).to_bytes()
    inner = _KEY_SNAPSHOT_DATA + varint(len(data))
    outer = _KEY_MESSAGE_SNAPSHOT + varint(len(inner) + len(data))
    size = len(head) + len(outer) + len(inner) + len(data)
    if size > MAX_FRAME:
        raise FrameError(f"snapshot message of {size} bytes exceeds the frame limit")
    return [_LEN.pack(size), head + outer + inner, data]


# ---- receiving -----------------------------------------------------------------------------------


def _read_varint(buf: bytearray, pos: int, end: int) -> tuple[int, int]:
    """(value, position after it) of the protobuf varint at pos."""
    value = shift = 0
    while pos < end and shift < 64:
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, pos
        shift += 7
    raise FrameError("bad frame: truncated or overlong varint")


def _skip_field(buf: bytearray, pos: int, end: int, wire_type: int) -> int:
    """The position after the value of a field of wire_type that starts at pos."""
    if wire_type == 0:
        _, pos = _read_varint(buf, pos, end)
    elif wire_type == 1:
        pos += 8
    elif wire_type == 2:
        n, pos = _read_varint(buf, pos, end)
        pos += n
    elif wire_type == 5:
        pos += 4
    else:
        raise FrameError(f"bad frame: wire type {wire_type}")
    if pos > end:
        raise FrameError("bad frame: truncated field")
    return pos


def decode_snapshot(buf: bytearray, start: int, stop: int) -> Message:
    """Decode a big MsgSnap frame copying its snapshot data once, not three times.

    The counterpart of snapshot_frame: the frame is re-encoded without the
    data (a few hundred bytes) and parsed by protobuf, and the data is copied
    straight out of the receive buffer. For 20 MiB this keeps the loop stall
    to a few milliseconds instead of tens.
    """
    rest: list[bytes] = []
    data: tuple[int, int] | None = None
    pos = start
    meta = 0  # bytes of the frame that are not snapshot data
    while pos < stop:
        if meta > MAX_SNAPSHOT_META:
            raise FrameError(f"bad frame: a snapshot message with more than {MAX_SNAPSHOT_META} bytes besides its data")
        field_start = pos
        key, pos = _read_varint(buf, pos, stop)
        if key != _KEY_MESSAGE_SNAPSHOT[0]:
            pos = _skip_field(buf, pos, stop, key & 7)
            meta += pos - field_start
            if meta <= MAX_SNAPSHOT_META:
                rest.append(bytes(buf[field_start:pos]))
            continue
        n, pos = _read_varint(buf, pos, stop)
        sub_stop = pos + n
        if sub_stop > stop:
            raise FrameError("bad frame: truncated snapshot")
        inner: list[bytes] = []
        while pos < sub_stop:
            inner_start = pos
            key, pos = _read_varint(buf, pos, sub_stop)
            if key == _KEY_SNAPSHOT_DATA[0]:
                n, pos = _read_varint(buf, pos, sub_stop)
                if pos + n > sub_stop:
                    raise FrameError("bad frame: truncated snapshot data")
                data = (pos, pos + n)  # a repeated scalar field: the last one wins, as in protobuf
                pos += n
            else:
                pos = _skip_field(buf, pos, sub_stop, key & 7)
                meta += pos - inner_start
                if meta > MAX_SNAPSHOT_META:
                    raise FrameError(
                        f"bad frame: a snapshot message with more than {MAX_SNAPSHOT_META} bytes besides its data")
                inner.append(bytes(buf[inner_start:pos]))
        body = b"".join(inner)
        rest.append(_KEY_MESSAGE_SNAPSHOT + varint(len(body)) + body)
    pb = raft_pb2.Message()
    try:
        pb.ParseFromString(b"".join(rest))
        msg = Message.from_pb(pb)
    except Exception as exc:  # protobuf's DecodeError, or ValueError for an unknown enum value
        raise FrameError(f"bad frame: {exc}") from None
    if data is not None and msg.snapshot is not None:
        with memoryview(buf) as whole, whole[data[0] : data[1]] as view:
            msg.snapshot.data = bytes(view)
    return msg


def check_head(buf: bytearray, start: int, size: int, max_message_bytes: int) -> None:
    """Raise FrameError unless a frame of size bytes whose body starts at start
    begins with a known message type and is within that type's size limit."""
    if size < 2:
        raise FrameError(f"bad frame: {size} bytes cannot hold a raft message")
    if buf[start] != _KEY_MESSAGE_TYPE or buf[start + 1] not in _WIRE_TYPES:
        raise FrameError(f"bad frame: does not start with a raft message type (starts {bytes(buf[start:start + 2])!r})")
    kind = buf[start + 1]
    limit = frame_limit(kind, max_message_bytes)
    if size > limit:
        raise FrameError(f"bad frame: a {MessageType(kind).name} of {size} bytes (at most {limit})")


def check_fields(buf: bytearray, start: int, stop: int) -> None:
    """Raise FrameError if a big MsgApp/MsgProp frame holds more than
    MAX_ENTRIES_PER_MESSAGE entries or a snapshot, before protobuf sees it.

    Counting key bytes is a cheap upper bound (the bytes may also occur inside
    values); only when it is inconclusive are the top-level fields walked."""
    if buf.count(_KEY_MESSAGE_ENTRIES, start, stop) <= MAX_ENTRIES_PER_MESSAGE and \
            buf.count(_KEY_MESSAGE_SNAPSHOT, start, stop) == 0:
        return
    entries = 0
    pos = start
    while pos < stop:
        key, pos = _read_varint(buf, pos, stop)
        if key == _KEY_MESSAGE_ENTRIES[0]:
            entries += 1
            if entries > MAX_ENTRIES_PER_MESSAGE:
                raise FrameError(f"bad frame: more than {MAX_ENTRIES_PER_MESSAGE} entries")
        elif key == _KEY_MESSAGE_SNAPSHOT[0]:
            raise FrameError("bad frame: a snapshot in a message that is not a MsgSnap")
        pos = _skip_field(buf, pos, stop, key & 7)


def decode_message(buf: bytearray, start: int, stop: int) -> Message:
    """The raft message in buf[start:stop] (a frame's body); FrameError if it is not one."""
    if stop - start >= _VIEW_MIN and buf[start : start + 2] == _MSGSNAP_PREFIX:
        return decode_snapshot(buf, start, stop)
    if stop - start > _SCAN_MIN:
        check_fields(buf, start, stop)
    pb = raft_pb2.Message()
    try:
        if stop - start < _VIEW_MIN:
            pb.ParseFromString(buf[start:stop])  # type: ignore[arg-type]  # a small copy beats a view
        else:
            # A view, not a slice: the frame may be megabytes. The views are released on the way
            # out, so buf can be resized after.
            with memoryview(buf) as whole, whole[start:stop] as frame:
                pb.ParseFromString(frame)  # type: ignore[arg-type]
        return Message.from_pb(pb)
    except Exception as exc:  # protobuf's DecodeError, or ValueError for an unknown enum value
        raise FrameError(f"bad frame: {exc}") from None


def read_frame(buf: bytearray, off: int, max_message_bytes: int) -> tuple[Message, int] | int:
    """The next frame in buf at off, as (message, offset after it); or, when
    buf does not hold enough of it yet, how many bytes from off it must hold
    before trying again. FrameError for a frame out of bounds, as soon as its
    first six bytes show it (before the rest is buffered)."""
    end = len(buf)
    if end - off < 4:
        return 4
    (size,) = _LEN.unpack_from(buf, off)
    if size >= 2 and end - off < 6:
        return 6  # the type, to know the limit before buffering the rest
    check_head(buf, off + 4, size, max_message_bytes)
    stop = off + 4 + size
    if stop > end:
        return 4 + size
    return decode_message(buf, off + 4, stop), stop


def check_sender(msg: Message, peer_id: int) -> None:
    """FrameError unless msg may travel on the connection member peer_id opened."""
    if msg.from_ != peer_id and msg.type not in FORWARDED:
        raise FrameError(f"bad frame: a {msg.type.name} from member {msg.from_:x} on {peer_id:x}'s connection")
