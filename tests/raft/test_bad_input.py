"""Bad input from peers is ignored: no exception out of step, no broken state."""

from __future__ import annotations

from petcd.raft import Entry, Message, MessageType, StateType
from tests.raft.cluster import Cluster

MT = MessageType


def test_garbage_messages_are_ignored() -> None:
    c = Cluster([1, 2, 3])
    c.elect(1)
    c.nodes[1].raw.propose(b"ok")
    c.stabilize()
    n1 = c.nodes[1].raw
    before = (n1.raft.term, n1.raft.log.committed, n1.raft.state)
    bad = [
        Message(type=MT.MsgAppResp, to=1, from_=99, term=before[0], index=1000),  # unknown member
        Message(type=MT.MsgHeartbeatResp, to=1, from_=42, term=before[0]),
        Message(type=MT.MsgHup, to=1, from_=2),  # local type over the network
        Message(type=MT.MsgBeat, to=1, from_=2),
        Message(type=MT.MsgCheckQuorum, to=1, from_=2),
        Message(type=MT.MsgApp, to=1, from_=2, term=1, index=1),  # stale term
        Message(type=MT.MsgAppResp, to=7, from_=2, term=before[0], index=1000),  # not for us
        Message(type=MT.MsgAppResp, to=1, from_=2, term=before[0], index=-5),  # malformed
        Message(type=MT.MsgProp, to=1, from_=2),  # empty proposal
        Message(type=MT.MsgReadIndexResp, to=1, from_=2, term=before[0]),
        Message(type=MT.MsgSnap, to=1, from_=2, term=before[0]),  # no snapshot
    ]
    for m in bad:
        n1.step(m)
    assert n1.raft.state == StateType.Leader
    assert (n1.raft.term, n1.raft.log.committed) == before[:2]
    c.stabilize()
    c.nodes[1].raw.propose(b"still-serving")
    c.stabilize()
    assert c.data(3)[-1] == b"still-serving"


def test_duplicate_and_reordered_appends_are_harmless() -> None:
    c = Cluster([1, 2, 3])
    c.elect(1)
    n1 = c.nodes[1].raw
    for k in range(5):
        n1.propose(b"%d" % k)
    apps: list[Message] = []
    c.drop = lambda m: m.type == MT.MsgApp and m.to == 2 and (apps.append(m) or True)
    c.stabilize()
    c.drop = lambda m: False
    for m in reversed(apps + apps):
        c.nodes[2].raw.step(m)
    c.stabilize()
    c.tick(2)
    assert c.data(2) == c.data(1) == [b"%d" % k for k in range(5)]


def test_a_follower_never_overwrites_committed_entries() -> None:
    c = Cluster([1, 2, 3])
    c.elect(1)
    c.nodes[1].raw.propose(b"a")
    c.stabilize()
    n2 = c.nodes[2].raw
    committed = n2.raft.log.committed
    term = n2.raft.term
    rogue = Message(type=MT.MsgApp, to=2, from_=1, term=term, index=committed - 1,
                    log_term=n2.raft.log.term(committed - 1) or 0, entries=[Entry(term + 5, committed, data=b"evil")])
    n2.step(rogue)
    assert n2.raft.log.term(committed) == term
