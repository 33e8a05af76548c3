"""Log replication (Raft §5.3), commitment (§5.4.2), batching and flow control."""

from __future__ import annotations

import pytest

from petcd.raft import Entry, MemoryStorage, Message, MessageType, ProposalDropped, StateType
from petcd.raft.log import RaftLog
from tests.raft.cluster import Cluster


def test_proposals_commit_in_order_on_every_member() -> None:
    c = Cluster([1, 2, 3])
    c.elect(1)
    for k in range(20):
        c.nodes[1].raw.propose(b"v%d" % k)
    c.stabilize()
    want = [b"v%d" % k for k in range(20)]
    assert all(c.data(i) == want for i in (1, 2, 3))


def test_proposals_made_together_travel_in_one_message_per_follower() -> None:
    c = Cluster([1, 2, 3])
    c.elect(1)
    n1 = c.nodes[1].raw
    for k in range(64):
        n1.propose(b"p%d" % k)
    apps = [m for m in n1.ready().messages if m.type == MessageType.MsgApp]
    assert sorted(m.to for m in apps) == [2, 3]
    assert all(len(m.entries) == 64 for m in apps)


def test_proposals_a_follower_forwards_together_travel_in_one_message() -> None:
    """Proposals made on a follower before its next Ready reach the leader
    as one MsgProp (up to the message size cap), and commit in order."""
    c = Cluster([1, 2, 3], max_size_per_msg=1000)
    c.elect(1)
    n3 = c.nodes[3].raw
    for k in range(8):
        n3.propose(b"f%d" % k + b"." * 200)
    rd = n3.ready()
    n3.advance(rd)
    props = [m for m in rd.messages if m.type == MessageType.MsgProp]
    assert [len(m.entries) for m in props] == [4, 4]  # 4 * (203 + overhead) fit in 1000 bytes
    assert all(m.to == 1 and m.from_ == 3 for m in props)
    c.queue.extend(props)
    for k in range(8, 10):  # after the Ready: a new message
        n3.propose(b"f%d" % k)
    c.stabilize()
    want = [b"f%d" % k + b"." * 200 for k in range(8)] + [b"f8", b"f9"]
    assert all(c.data(i) == want for i in (1, 2, 3))


def test_message_size_cap_splits_entries() -> None:
    c = Cluster([1, 2], max_size_per_msg=1000)
    c.elect(1)
    c.drop = lambda m: m.type == MessageType.MsgAppResp
    for _ in range(10):
        c.nodes[1].raw.propose(b"x" * 400)
    rd = c.nodes[1].raw.ready()
    apps = [m for m in rd.messages if m.type == MessageType.MsgApp]
    assert apps and all(len(m.entries) <= 2 for m in apps)


def test_inflight_window_bounds_unacknowledged_appends() -> None:
    c = Cluster([1, 2], max_inflight_msgs=4)
    c.elect(1)
    n1 = c.nodes[1].raw
    sent = 0
    for k in range(20):
        n1.propose(b"%d" % k)
        rd = n1.ready()
        sent += sum(1 for m in rd.messages if m.type == MessageType.MsgApp and m.entries)
        c.nodes[1].storage.append(rd.entries)
        n1.advance(rd)
    assert sent == 4


def test_a_follower_that_missed_entries_catches_up() -> None:
    c = Cluster([1, 2, 3])
    c.elect(1)
    c.drop = lambda m: m.to == 3
    for k in range(50):
        c.nodes[1].raw.propose(b"%d" % k)
    c.stabilize()
    assert len(c.data(3)) == 0
    c.drop = lambda m: False
    c.tick(2)
    assert c.data(3) == c.data(1) and len(c.data(1)) == 50


def test_uncommitted_entries_of_a_deposed_leader_are_overwritten() -> None:
    c = Cluster([1, 2, 3])
    c.elect(1)
    c.nodes[1].raw.propose(b"committed")
    c.stabilize()
    c.down = {1}
    c.nodes[1].raw.propose(b"lost")  # appended only on the old leader
    c.nodes[1].raw.ready()
    c.tick(40, only=[2, 3])
    new = c.leader()
    assert new in (2, 3)
    c.nodes[new].raw.propose(b"new")
    c.stabilize()
    c.down = set()
    c.tick(3)
    for i in (1, 2, 3):
        assert c.data(i) == [b"committed", b"new"]


def test_fast_backtracking_needs_few_round_trips() -> None:
    c = Cluster([1, 2, 3])
    c.elect(1)
    c.down = {3}
    for k in range(200):
        c.nodes[1].raw.propose(b"%d" % k)
    c.stabilize()
    c.down = set()
    rejects = []

    def count_rejects(m: Message) -> bool:
        if m.type == MessageType.MsgAppResp and m.reject:
            rejects.append(m)
        return False

    c.drop = count_rejects
    c.tick(2)
    assert len(c.data(3)) == 200
    assert len(rejects) <= 2


def test_a_leader_counts_replicas_only_for_entries_of_its_term() -> None:
    s = MemoryStorage()
    s.append([Entry(1, 1), Entry(2, 2)])
    rl = RaftLog(s)
    assert not rl.maybe_commit(2, 3)  # replicated on a majority, but of an older term
    assert rl.committed == 0
    s.append([Entry(3, 3)])
    rl2 = RaftLog(s)
    assert rl2.maybe_commit(3, 3) and rl2.committed == 3


def test_a_proposal_without_a_leader_fails_clearly() -> None:
    c = Cluster([1, 2, 3])
    with pytest.raises(ProposalDropped, match="no leader"):
        c.nodes[2].raw.propose(b"x")


def test_followers_forward_proposals_unless_disabled() -> None:
    c = Cluster([1, 2, 3])
    c.elect(1)
    c.nodes[3].raw.propose(b"via-3")
    c.stabilize()
    assert c.data(1) == [b"via-3"]
    d = Cluster([1, 2, 3], disable_proposal_forwarding=True)
    d.elect(1)
    with pytest.raises(ProposalDropped, match="forwarding"):
        d.nodes[3].raw.propose(b"x")


def test_a_leader_does_not_commit_before_its_own_entry_is_durable() -> None:
    c = Cluster([1])
    c.elect(1)
    n = c.nodes[1].raw
    n.propose(b"x")
    rd = n.ready()
    assert rd.entries and not rd.committed_entries and rd.must_sync
    c.nodes[1].storage.append(rd.entries)
    n.advance(rd)
    rd2 = n.ready()
    assert [e.data for e in rd2.committed_entries] == [b"x"]
    assert n.raft.state == StateType.Leader
