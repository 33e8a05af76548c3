"""Leader election (Raft §5.2, §5.4.1), pre-vote and check-quorum."""

from __future__ import annotations

from petcd.raft import Message, MessageType, StateType
from tests.raft.cluster import Cluster


def test_single_member_elects_itself_at_once() -> None:
    c = Cluster([1])
    c.elect(1)
    assert c.nodes[1].raw.status().term == 2  # bootstrap is term 1, as in etcd


def test_ticks_elect_exactly_one_leader_that_everyone_follows() -> None:
    for seed in range(5):
        c = Cluster([1, 2, 3, 4, 5], seed=seed)
        c.tick(40)
        lead = c.leader()
        assert lead != 0
        terms = {n.raw.raft.term for n in c.nodes.values()}
        assert len(terms) == 1
        assert all(n.raw.raft.lead == lead for n in c.nodes.values())


def test_a_node_votes_at_most_once_per_term() -> None:
    c = Cluster([1, 2, 3], pre_vote=False, check_quorum=False)
    n3 = c.nodes[3].raw
    n3.step(Message(type=MessageType.MsgVote, to=3, from_=1, term=5, log_term=1, index=3))
    n3.step(Message(type=MessageType.MsgVote, to=3, from_=2, term=5, log_term=1, index=3))
    rd = n3.ready()
    votes = [(m.to, m.reject) for m in rd.messages if m.type == MessageType.MsgVoteResp]
    assert votes == [(1, False), (2, True)]
    assert rd.hard_state is not None and rd.hard_state.vote == 1 and rd.hard_state.term == 5


def test_a_candidate_with_a_stale_log_gets_no_vote() -> None:
    c = Cluster([1, 2, 3], check_quorum=False)
    c.elect(1)
    c.nodes[1].raw.propose(b"x")
    c.stabilize()
    n2 = c.nodes[2].raw
    last = n2.raft.log.last_index()
    n2.step(Message(type=MessageType.MsgVote, to=2, from_=3, term=9, log_term=1, index=last + 5))
    msgs = n2.ready().messages
    assert [m.reject for m in msgs if m.type == MessageType.MsgVoteResp] == [True]


def test_pre_vote_keeps_an_isolated_node_from_raising_its_term() -> None:
    c = Cluster([1, 2, 3])
    c.elect(1)
    term = c.nodes[1].raw.raft.term
    c.drop = lambda m: m.to == 3 or m.from_ == 3
    c.tick(100)
    assert c.nodes[3].raw.raft.term == term
    c.drop = lambda m: False
    c.tick(5)
    assert c.leader() == 1 and c.nodes[1].raw.raft.term == term


def test_without_pre_vote_an_isolated_node_raises_its_term() -> None:
    c = Cluster([1, 2, 3], pre_vote=False, check_quorum=False)
    c.elect(1)
    term = c.nodes[1].raw.raft.term
    c.drop = lambda m: m.to == 3 or m.from_ == 3
    c.tick(100)
    assert c.nodes[3].raw.raft.term > term


def test_check_quorum_makes_a_cut_off_leader_step_down() -> None:
    c = Cluster([1, 2, 3])
    c.elect(1)
    c.drop = lambda m: m.from_ == 1 or m.to == 1
    c.tick(25, only=[1])
    assert c.nodes[1].raw.raft.state == StateType.Follower


def test_leader_stickiness_ignores_votes_while_the_leader_is_alive() -> None:
    c = Cluster([1, 2, 3], pre_vote=False)
    c.elect(1)
    n2 = c.nodes[2].raw
    term = n2.raft.term
    n2.step(Message(type=MessageType.MsgVote, to=2, from_=3, term=term + 1, log_term=9, index=99))
    assert n2.raft.term == term and n2.raft.lead == 1
    assert not any(m.type == MessageType.MsgVoteResp for m in n2.ready().messages)


def test_a_higher_term_leader_message_makes_the_old_leader_follow() -> None:
    c = Cluster([1, 2, 3])
    c.elect(1)
    n1 = c.nodes[1].raw
    n1.step(Message(type=MessageType.MsgHeartbeat, to=1, from_=2, term=n1.raft.term + 3))
    assert n1.raft.state == StateType.Follower and n1.raft.lead == 2
