"""Restart from storage, and the raftpb wire form of the data types."""

from __future__ import annotations

import random

from petcd.proto import raft_pb2
from petcd.raft import (
    ConfChange,
    ConfChangeType,
    Config,
    ConfState,
    Entry,
    EntryType,
    HardState,
    MemoryStorage,
    Message,
    MessageType,
    RawNode,
    Snapshot,
    SnapshotMetadata,
    StateType,
)
from tests.raft.cluster import Cluster


def test_a_restarted_member_keeps_term_vote_and_log_and_rejoins() -> None:
    c = Cluster([1, 2, 3])
    c.elect(1)
    for k in range(5):
        c.nodes[1].raw.propose(b"%d" % k)
    c.stabilize()
    old = c.nodes[3]
    hs = old.storage.hard_state
    storage = MemoryStorage()
    storage.set_hard_state(hs)
    storage.append(old.storage.entries(1, old.storage.last_index() + 1))
    raw = RawNode(Config(id=3, storage=storage, rng=random.Random(3), pre_vote=True, check_quorum=True))
    assert (raw.raft.term, raw.raft.vote, raw.raft.log.committed) == (hs.term, hs.vote, hs.commit)
    c.nodes[3] = type(old)(raw, storage)
    c.stabilize()  # replays committed entries, which re-applies the members
    assert c.data(3) == c.data(1)
    assert sorted(raw.raft.prs) == [1, 2, 3]
    c.nodes[1].raw.propose(b"again")
    c.stabilize()
    assert c.data(3)[-1] == b"again"


def test_types_round_trip_through_raftpb_with_etcd_field_numbers() -> None:
    snap = Snapshot(b"data", SnapshotMetadata(ConfState(voters=[1, 2], learners=[3]), 10, 2))
    m = Message(type=MessageType.MsgApp, to=2, from_=1, term=3, log_term=2, index=9, commit=8,
                entries=[Entry(3, 10, EntryType.EntryNormal, b"x")], snapshot=snap, reject=True, reject_hint=4,
                context=b"c")
    assert Message.from_bytes(m.to_bytes()) == m
    pb = raft_pb2.Message.FromString(m.to_bytes())
    assert pb.DESCRIPTOR.fields_by_name["type"].number == 1
    assert pb.DESCRIPTOR.fields_by_name["entries"].number == 7
    assert pb.DESCRIPTOR.fields_by_name["rejectHint"].number == 11
    assert getattr(pb, "from") == 1 and pb.logTerm == 2 and pb.commit == 8
    cc = ConfChange(ConfChangeType.ConfChangeAddLearnerNode, 7, b"ctx", 1)
    assert ConfChange.from_bytes(cc.to_bytes()) == cc
    assert HardState.from_bytes(HardState(4, 2, 9).to_bytes()) == HardState(4, 2, 9)
    assert Entry.from_bytes(Entry(1, 2, EntryType.EntryConfChange, b"z").to_bytes()).type == EntryType.EntryConfChange


def test_same_inputs_give_the_same_outputs() -> None:
    def run() -> list[tuple[int, int, int]]:
        c = Cluster([1, 2, 3, 4, 5], seed=11)
        c.tick(40)
        return [(i, n.raw.raft.term, int(n.raw.raft.state)) for i, n in c.nodes.items()]

    assert run() == run()
    assert any(s == StateType.Leader for _, _, s in run())
