"""Linearizable reads through read index (Raft thesis §6.4)."""

from __future__ import annotations

import pytest

from petcd.raft import MessageType, ProposalDropped
from tests.raft.cluster import Cluster


def test_leader_answers_with_its_commit_index_after_a_heartbeat_quorum() -> None:
    c = Cluster([1, 2, 3])
    c.elect(1)
    c.nodes[1].raw.propose(b"x")
    c.stabilize()
    c.nodes[1].raw.read_index(b"r1")
    c.stabilize()
    rs = c.nodes[1].read_states
    assert [(r.request_ctx, r.index) for r in rs] == [(b"r1", c.nodes[1].raw.raft.log.committed)]


def test_a_follower_gets_the_read_index_from_the_leader() -> None:
    c = Cluster([1, 2, 3])
    c.elect(1)
    c.nodes[3].raw.read_index(b"f")
    c.stabilize()
    assert [r.request_ctx for r in c.nodes[3].read_states] == [b"f"]
    assert c.nodes[3].read_states[0].index == c.nodes[1].raw.raft.log.committed


def test_a_leader_cut_off_from_the_quorum_answers_no_read() -> None:
    c = Cluster([1, 2, 3])
    c.elect(1)
    c.drop = lambda m: m.type == MessageType.MsgHeartbeatResp
    c.nodes[1].raw.read_index(b"r")
    c.stabilize()
    assert c.nodes[1].read_states == []


def test_one_heartbeat_round_answers_every_read_queued_before_it() -> None:
    c = Cluster([1, 2, 3])
    c.elect(1)
    held = []
    c.drop = lambda m: m.type == MessageType.MsgHeartbeatResp and m.context == b"a" and (held.append(m) or True)
    c.nodes[1].raw.read_index(b"a")
    c.nodes[1].raw.read_index(b"b")
    c.stabilize()
    # only the acks of the second round arrived; they answer both reads
    assert sorted(r.request_ctx for r in c.nodes[1].read_states) == [b"a", b"b"]
    assert held


def test_read_index_without_a_leader_fails_clearly() -> None:
    c = Cluster([1, 2, 3])
    with pytest.raises(ProposalDropped):
        c.nodes[2].raw.read_index(b"x")


def test_a_new_leader_answers_reads_only_after_committing_in_its_term() -> None:
    c = Cluster([1])
    c.nodes[1].raw.campaign()
    c.nodes[1].raw.read_index(b"early")  # the no-op of the term is not committed yet
    assert c.nodes[1].read_states == []
    c.stabilize()
    assert [r.request_ctx for r in c.nodes[1].read_states] == [b"early"]
