"""Leadership transfer (Raft thesis §3.10)."""

from __future__ import annotations

import pytest

from petcd.raft import MessageType, ProposalDropped, StateType
from tests.raft.cluster import Cluster


def test_transfer_to_an_up_to_date_follower() -> None:
    c = Cluster([1, 2, 3])
    c.elect(1)
    c.nodes[1].raw.transfer_leader(2)
    c.stabilize()
    assert c.leader() == 2


def test_transfer_to_a_lagging_follower_catches_it_up_first() -> None:
    c = Cluster([1, 2, 3])
    c.elect(1)
    c.down = {3}
    for k in range(20):
        c.nodes[1].raw.propose(b"%d" % k)
    c.stabilize()
    c.down = set()
    c.nodes[1].raw.transfer_leader(3)
    c.stabilize()
    assert c.leader() == 3
    assert len(c.data(3)) == 20


def test_proposals_are_refused_during_a_transfer_and_it_is_abandoned_after_a_timeout() -> None:
    c = Cluster([1, 2, 3])
    c.elect(1)
    c.nodes[1].raw.propose(b"x")
    c.stabilize()
    c.drop = lambda m: m.to == 3 and m.type in (MessageType.MsgApp, MessageType.MsgTimeoutNow)
    c.nodes[1].raw.propose(b"y")
    c.stabilize()
    c.nodes[1].raw.transfer_leader(3)
    c.stabilize()
    with pytest.raises(ProposalDropped, match="transfer"):
        c.nodes[1].raw.propose(b"z")
    c.tick(12, only=[1])
    assert c.nodes[1].raw.raft.state == StateType.Leader
    assert c.nodes[1].raw.raft.lead_transferee == 0
    c.nodes[1].raw.propose(b"z")  # accepted again


def test_a_follower_forwards_a_transfer_request_to_the_leader() -> None:
    c = Cluster([1, 2, 3])
    c.elect(1)
    c.nodes[2].raw.transfer_leader(2)
    c.stabilize()
    assert c.leader() == 2
