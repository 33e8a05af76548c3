"""Membership changes through the log, one at a time (Raft §6, single-server)."""

from __future__ import annotations

import pytest

from petcd.raft import ConfChange, ConfChangeType, MessageType, ProposalDropped, StateType
from tests.raft.cluster import Cluster

CC = ConfChangeType


def _change(c: Cluster, lead: int, t: ConfChangeType, node: int) -> None:
    c.nodes[lead].raw.propose_conf_change(ConfChange(t, node))
    c.stabilize()


def test_an_added_voter_catches_up_and_counts_toward_quorum() -> None:
    c = Cluster([1, 2, 3])
    c.elect(1)
    c.nodes[1].raw.propose(b"before")
    c.stabilize()
    c.add_empty_node(4)
    _change(c, 1, CC.ConfChangeAddNode, 4)
    c.tick(2)
    assert c.data(4) == [b"before"]
    assert c.nodes[1].raw.raft.conf_state().voters == [1, 2, 3, 4]
    c.down = {2, 3}  # 2 of 4 is not a quorum
    c.nodes[1].raw.propose(b"stuck")
    c.stabilize()
    assert b"stuck" not in c.data(1)
    c.down = {3}
    c.tick(2)
    assert c.data(1)[-1] == b"stuck"


def test_a_learner_receives_the_log_but_neither_votes_nor_counts() -> None:
    c = Cluster([1, 2, 3])
    c.elect(1)
    c.add_empty_node(4)
    _change(c, 1, CC.ConfChangeAddLearnerNode, 4)
    c.nodes[1].raw.propose(b"x")
    c.stabilize()
    c.tick(2)
    assert c.data(4) == [b"x"]
    assert c.nodes[1].raw.raft.conf_state().learners == [4]
    c.tick(50, only=[4])
    assert c.nodes[4].raw.raft.state == StateType.Follower  # never campaigns
    _change(c, 1, CC.ConfChangeAddNode, 4)
    assert c.nodes[1].raw.raft.conf_state().voters == [1, 2, 3, 4]
    assert c.nodes[4].raw.raft.promotable()


def test_a_removed_member_no_longer_counts() -> None:
    c = Cluster([1, 2, 3])
    c.elect(1)
    _change(c, 1, CC.ConfChangeRemoveNode, 3)
    assert c.nodes[1].raw.raft.conf_state().voters == [1, 2]
    c.down = {3}
    c.nodes[1].raw.propose(b"two-of-two")
    c.stabilize()
    assert c.data(2)[-1] == b"two-of-two"


def test_a_second_change_is_refused_while_one_is_pending() -> None:
    c = Cluster([1, 2, 3])
    c.elect(1)
    c.drop = lambda m: m.type == MessageType.MsgAppResp
    c.nodes[1].raw.propose_conf_change(ConfChange(CC.ConfChangeRemoveNode, 3))
    with pytest.raises(ProposalDropped, match="pending"):
        c.nodes[1].raw.propose_conf_change(ConfChange(CC.ConfChangeRemoveNode, 2))


def test_a_leader_that_removes_itself_steps_down() -> None:
    c = Cluster([1, 2, 3])
    c.elect(1)
    _change(c, 1, CC.ConfChangeRemoveNode, 1)
    assert c.nodes[1].raw.raft.state == StateType.Follower
    c.down = {1}
    c.tick(40, only=[2, 3])
    assert c.leader() in (2, 3)


def test_a_malformed_conf_change_is_dropped() -> None:
    c = Cluster([1, 2, 3])
    c.elect(1)
    from petcd.raft import Entry, EntryType, Message
    bad = Message(type=MessageType.MsgProp, to=1, from_=2,
                  entries=[Entry(type=EntryType.EntryConfChange, data=b"\xff\xff\xff")])
    c.nodes[1].raw.step(bad)
    c.stabilize()
    assert c.nodes[1].raw.raft.conf_state().voters == [1, 2, 3]
