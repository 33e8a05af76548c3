"""Raft's data types: what goes over the wire between members and into the WAL.

In memory they are plain slotted dataclasses (cheap to build and read in the
hot path); on the wire and on disk they are etcd's raftpb protobuf messages,
with etcd's field numbers. ``to_pb``/``from_pb`` and ``to_bytes``/``from_bytes``
convert between the two.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum
from typing import cast

from petcd.proto import raft_pb2 as pb

# Bytes an entry takes on the wire besides its data (term, index, type, framing),
# roughly: what message size caps count.
ENTRY_OVERHEAD = 12


class MessageType(IntEnum):
    MsgHup = 0
    MsgBeat = 1
    MsgProp = 2
    MsgApp = 3
    MsgAppResp = 4
    MsgVote = 5
    MsgVoteResp = 6
    MsgSnap = 7
    MsgHeartbeat = 8
    MsgHeartbeatResp = 9
    MsgUnreachable = 10
    MsgSnapStatus = 11
    MsgCheckQuorum = 12
    MsgTransferLeader = 13
    MsgTimeoutNow = 14
    MsgReadIndex = 15
    MsgReadIndexResp = 16
    MsgPreVote = 17
    MsgPreVoteResp = 18


class EntryType(IntEnum):
    EntryNormal = 0
    EntryConfChange = 1
    EntryConfChangeV2 = 2


class ConfChangeType(IntEnum):
    ConfChangeAddNode = 0
    ConfChangeRemoveNode = 1
    ConfChangeUpdateNode = 2
    ConfChangeAddLearnerNode = 3


class StateType(IntEnum):
    """A node's role; the numbers are etcd's StateType values."""

    Follower = 0
    Candidate = 1
    Leader = 2
    PreCandidate = 3


@dataclass(slots=True)
class Entry:
    term: int = 0
    index: int = 0
    type: EntryType = EntryType.EntryNormal
    data: bytes = b""

    def to_pb(self) -> pb.Entry:
        return pb.Entry(Type=cast(pb.EntryType, int(self.type)), Term=self.term, Index=self.index, Data=self.data)

    @classmethod
    def from_pb(cls, m: pb.Entry) -> Entry:
        # a table, not EntryType(...): the enum call cost more than the rest
        try:
            kind = _ENTRY_TYPES[m.Type]
        except IndexError:
            raise ValueError(f"{m.Type} is not a valid EntryType") from None
        return cls(m.Term, m.Index, kind, m.Data)

    def to_bytes(self) -> bytes:
        return self.to_pb().SerializeToString()

    @classmethod
    def from_bytes(cls, b: bytes) -> Entry:
        m = pb.Entry()
        m.ParseFromString(b)
        return cls.from_pb(m)

    def size(self) -> int:
        """Approximate encoded size, used for message size caps."""
        return len(self.data) + ENTRY_OVERHEAD


@dataclass(slots=True)
class HardState:
    term: int = 0
    vote: int = 0
    commit: int = 0

    def is_empty(self) -> bool:
        return self.term == 0 and self.vote == 0 and self.commit == 0

    def to_pb(self) -> pb.HardState:
        return pb.HardState(term=self.term, vote=self.vote, commit=self.commit)

    @classmethod
    def from_pb(cls, m: pb.HardState) -> HardState:
        return cls(m.term, m.vote, m.commit)

    def to_bytes(self) -> bytes:
        return self.to_pb().SerializeToString()

    @classmethod
    def from_bytes(cls, b: bytes) -> HardState:
        m = pb.HardState()
        m.ParseFromString(b)
        return cls.from_pb(m)


@dataclass(slots=True)
class ConfState:
    voters: list[int] = field(default_factory=list)
    learners: list[int] = field(default_factory=list)
    voters_outgoing: list[int] = field(default_factory=list)
    learners_next: list[int] = field(default_factory=list)
    auto_leave: bool = False

    def to_pb(self) -> pb.ConfState:
        return pb.ConfState(
            voters=self.voters,
            learners=self.learners,
            voters_outgoing=self.voters_outgoing,
            learners_next=self.learners_next,
            auto_leave=self.auto_leave,
        )

    @classmethod
    def from_pb(cls, m: pb.ConfState) -> ConfState:
        return cls(list(m.voters), list(m.learners), list(m.voters_outgoing), list(m.learners_next), m.auto_leave)

    def to_bytes(self) -> bytes:
        return self.to_pb().SerializeToString()

    @classmethod
    def from_bytes(cls, b: bytes) -> ConfState:
        m = pb.ConfState()
        m.ParseFromString(b)
        return cls.from_pb(m)


@dataclass(slots=True)
class SnapshotMetadata:
    conf_state: ConfState = field(default_factory=ConfState)
    index: int = 0
    term: int = 0

    def to_pb(self) -> pb.SnapshotMetadata:
        return pb.SnapshotMetadata(conf_state=self.conf_state.to_pb(), index=self.index, term=self.term)

    @classmethod
    def from_pb(cls, m: pb.SnapshotMetadata) -> SnapshotMetadata:
        return cls(ConfState.from_pb(m.conf_state), m.index, m.term)


@dataclass(slots=True)
class Snapshot:
    data: bytes = b""
    metadata: SnapshotMetadata = field(default_factory=SnapshotMetadata)

    def is_empty(self) -> bool:
        return self.metadata.index == 0

    def to_pb(self) -> pb.Snapshot:
        return pb.Snapshot(data=self.data, metadata=self.metadata.to_pb())

    @classmethod
    def from_pb(cls, m: pb.Snapshot) -> Snapshot:
        return cls(m.data, SnapshotMetadata.from_pb(m.metadata))

    def to_bytes(self) -> bytes:
        return self.to_pb().SerializeToString()

    @classmethod
    def from_bytes(cls, b: bytes) -> Snapshot:
        m = pb.Snapshot()
        m.ParseFromString(b)
        return cls.from_pb(m)


@dataclass(slots=True)
class ConfChange:
    type: ConfChangeType = ConfChangeType.ConfChangeAddNode
    node_id: int = 0
    context: bytes = b""
    id: int = 0

    def to_pb(self) -> pb.ConfChange:
        return pb.ConfChange(id=self.id, type=cast(pb.ConfChangeType, int(self.type)), node_id=self.node_id, context=self.context)

    @classmethod
    def from_pb(cls, m: pb.ConfChange) -> ConfChange:
        return cls(ConfChangeType(m.type), m.node_id, m.context, m.id)

    def to_bytes(self) -> bytes:
        return self.to_pb().SerializeToString()

    @classmethod
    def from_bytes(cls, b: bytes) -> ConfChange:
        m = pb.ConfChange()
        m.ParseFromString(b)
        return cls.from_pb(m)


@dataclass(slots=True)
class Message:
    type: MessageType = MessageType.MsgHup
    to: int = 0
    from_: int = 0
    term: int = 0
    log_term: int = 0
    index: int = 0
    entries: list[Entry] = field(default_factory=list)
    commit: int = 0
    vote: int = 0
    snapshot: Snapshot | None = None
    reject: bool = False
    reject_hint: int = 0
    context: bytes = b""

    def to_pb(self) -> pb.Message:
        m = pb.Message(
            type=cast(pb.MessageType, int(self.type)),
            to=self.to,
            term=self.term,
            logTerm=self.log_term,
            index=self.index,
            entries=[e.to_pb() for e in self.entries],
            commit=self.commit,
            vote=self.vote,
            reject=self.reject,
            rejectHint=self.reject_hint,
            context=self.context,
        )
        # "from" is a Python keyword, so the generated field is set by name.
        setattr(m, "from", self.from_)
        if self.snapshot is not None:
            m.snapshot.CopyFrom(self.snapshot.to_pb())
        return m

    @classmethod
    def from_pb(cls, m: pb.Message) -> Message:
        try:
            kind = _MESSAGE_TYPES[m.type]
        except IndexError:
            raise ValueError(f"{m.type} is not a valid MessageType") from None
        try:
            # Entry.from_pb inlined: this runs for every entry a member receives
            entries = [Entry(e.Term, e.Index, _ENTRY_TYPES[e.Type], e.Data) for e in m.entries]
        except IndexError:
            bad = next(e.Type for e in m.entries if not 0 <= e.Type < len(_ENTRY_TYPES))
            raise ValueError(f"{bad} is not a valid EntryType") from None
        return cls(
            type=kind,
            to=m.to,
            from_=getattr(m, "from"),
            term=m.term,
            log_term=m.logTerm,
            index=m.index,
            entries=entries,
            commit=m.commit,
            vote=m.vote,
            snapshot=Snapshot.from_pb(m.snapshot) if m.HasField("snapshot") else None,
            reject=m.reject,
            reject_hint=m.rejectHint,
            context=m.context,
        )

    def to_bytes(self) -> bytes:
        return self.to_pb().SerializeToString()

    @classmethod
    def from_bytes(cls, b: bytes) -> Message:
        m = pb.Message()
        m.ParseFromString(b)
        return cls.from_pb(m)


# Enum members by value, for decoding: indexing a tuple is far cheaper than
# calling the enum class, and this runs for every entry a member receives.
_ENTRY_TYPES = tuple(EntryType)
_MESSAGE_TYPES = tuple(MessageType)
assert all(t.value == i for i, t in enumerate(_ENTRY_TYPES))
assert all(t.value == i for i, t in enumerate(_MESSAGE_TYPES))
