"""Bad input from peers is ignored: no exception out of step, no broken state."""

from __future__ import annotations

import random
import struct

import pytest

from petcd.raft import (
    ConfChange,
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
from petcd.raft.bounds import (
    MAX_CONF_MEMBERS,
    MAX_ENTRIES_PER_MESSAGE,
    MAX_INDEX,
    MAX_TERM,
    MAX_TERM_STEP,
    UINT64_MAX,
)
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

    def hold(m: Message) -> bool:
        if m.type == MT.MsgApp and m.to == 2:
            apps.append(m)
            return True
        return False

    c.drop = hold
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


# ---- bounds on what a peer may send (petcd/raft/bounds.py) -----------------------------------

_WAL_STATE = struct.Struct("<QQQ")  # how the WAL stores a hard state: three uint64s
_WAL_ENTRY = struct.Struct("<QQB")  # and an entry's term, index and type


class WireCluster(Cluster):
    """A Cluster whose nodes' output goes through the encodings of the real
    server: every message through the peer wire format (raftpb), every hard
    state and entry through the WAL's uint64 fields. A value that does not
    fit raises here just as it kills a member's node loop."""

    def process(self, i: int) -> None:
        n = self.nodes[i]
        while n.raw.has_ready():
            rd = n.raw.ready()
            if rd.hard_state is not None:
                _WAL_STATE.pack(rd.hard_state.term, rd.hard_state.vote, rd.hard_state.commit)
            for e in rd.entries:
                _WAL_ENTRY.pack(e.term, e.index, e.type)
            rd.messages = [Message.from_bytes(m.to_bytes()) for m in rd.messages]
            if rd.snapshot is not None:
                n.storage.apply_snapshot(rd.snapshot)
            n.storage.append(rd.entries)
            if rd.hard_state is not None:
                n.storage.set_hard_state(rd.hard_state)
            self.queue.extend(rd.messages)
            for e in rd.committed_entries:
                if e.type == EntryType.EntryConfChange:
                    n.raw.apply_conf_change(ConfChange.from_bytes(e.data))
                n.applied.append(e)
            n.read_states.extend(rd.read_states)
            n.raw.advance(rd)


def _serving(c: Cluster, data: bytes, ticks: int = 60) -> None:
    """Some member leads (after elections if need be) and commits data on every live member."""
    for _ in range(ticks):
        if c.leader():
            break
        c.tick()
    lead = c.leader()
    assert lead, "no leader emerged"
    c.nodes[lead].raw.propose(data)
    c.stabilize()
    live = [i for i in c.ids if i not in c.down]
    for _ in range(ticks):  # a follower probed into a corner is picked up by the next heartbeat
        if all(c.data(i)[-1:] == [data] for i in live):
            break
        c.tick()
    for i in live:
        assert c.data(i)[-1:] == [data], f"member {i} did not apply {data!r}"
        assert c.nodes[i].raw.raft.term <= MAX_TERM


@pytest.mark.parametrize("term", [UINT64_MAX, UINT64_MAX - 1, MAX_TERM + 1, MAX_TERM])
@pytest.mark.parametrize("mtype", [MT.MsgHeartbeat, MT.MsgApp, MT.MsgAppResp, MT.MsgVote, MT.MsgPreVote,
                                   MT.MsgHeartbeatResp, MT.MsgTimeoutNow])
def test_a_term_near_uint64_max_is_ignored_and_the_cluster_keeps_electing(term: int, mtype: MessageType) -> None:
    """Regression: one message with term 2**64-1 made a member adopt it; its
    next pre-vote for term + 1 did not fit uint64 and killed the node loop, on
    every restart, and the leader that heard of the term died the same way."""
    c = WireCluster([1, 2, 3])
    c.elect(1)
    term0 = c.nodes[2].raw.raft.term
    for to in (1, 2):
        c.nodes[to].raw.step(Message(type=mtype, to=to, from_=3 if to != 3 else 1, term=term, log_term=term,
                                      index=10**6, commit=10**6))
    c.stabilize()
    # past MAX_TERM: ignored; up to it: the member moves MAX_TERM_STEP toward it at most
    assert c.nodes[2].raw.raft.term == term0 if term > MAX_TERM else c.nodes[2].raw.raft.term <= term0 + MAX_TERM_STEP
    c.down.add(1)  # force elections: every member must still campaign, and encode what it sends
    _serving(c, b"after-poison")
    c.down.clear()
    c.tick(30)
    _serving(c, b"all-back")


def test_a_node_at_the_term_limit_does_not_campaign() -> None:
    storage = MemoryStorage()
    storage.append([Entry(1, 1)])
    storage.set_hard_state(HardState(term=MAX_TERM, vote=0, commit=1))
    storage.create_snapshot(1, ConfState(voters=[1, 2, 3]), b"")
    raw = RawNode(Config(id=1, storage=storage, applied=1, pre_vote=True, rng=random.Random(1)))
    for _ in range(100):
        raw.tick()
    raw.campaign()
    rd = raw.ready()
    assert raw.raft.state == StateType.Follower and raw.raft.term == MAX_TERM
    assert not [m for m in rd.messages if m.type in (MT.MsgVote, MT.MsgPreVote)]


def test_a_term_jump_moves_a_node_by_the_step_at_most() -> None:
    c = WireCluster([1, 2, 3])
    c.elect(1)
    n2 = c.nodes[2].raw
    t = n2.raft.term
    n2.step(Message(type=MT.MsgHeartbeat, to=2, from_=1, term=t + MAX_TERM_STEP))
    assert (n2.raft.term, n2.raft.lead) == (t + MAX_TERM_STEP, 1)  # possible, if absurd: it is taken
    t = n2.raft.term
    n2.step(Message(type=MT.MsgHeartbeat, to=2, from_=1, term=MAX_TERM))
    assert (n2.raft.term, n2.raft.lead, n2.raft.vote) == (t + MAX_TERM_STEP, 0, 0)  # moved toward it, no leader
    c.stabilize()
    _serving(c, b"after-jump")
    assert max(c.nodes[i].raw.raft.term for i in c.ids) < 3 * MAX_TERM_STEP


def test_members_pushed_far_apart_converge() -> None:
    """Forged terms can push each member somewhere else; they must still find one term and elect."""
    c = WireCluster([1, 2, 3])
    c.elect(1)
    for i, k in ((1, 7), (2, 40), (3, 90)):
        n = c.nodes[i].raw
        for _ in range(k):
            n.step(Message(type=MT.MsgHeartbeat, to=i, from_=1 if i != 1 else 2, term=MAX_TERM))
    terms = sorted(c.nodes[i].raw.raft.term for i in c.ids)
    assert terms[-1] - terms[0] > 50 * MAX_TERM_STEP
    _serving(c, b"converged", ticks=500)
    assert len({c.nodes[i].raw.raft.term for i in c.ids}) == 1


def _app(c: Cluster, to: int, entries: list[Entry], **kw: int) -> Message:
    r = c.nodes[to].raw.raft
    last = r.log.last_index()
    return Message(type=MT.MsgApp, to=to, from_=r.lead, entries=entries, term=kw.get("term", r.term),
                   index=kw.get("index", last), log_term=kw.get("log_term", r.log.term(last) or 0),
                   commit=kw.get("commit", last))


def test_impossible_appends_leave_the_log_alone() -> None:
    c = Cluster([1, 2, 3])
    c.elect(1)
    c.nodes[1].raw.propose(b"a")
    c.stabilize()
    n2 = c.nodes[2].raw.raft
    t, last = n2.term, n2.log.last_index()
    before = [(e.term, e.index, e.data) for e in n2.log.slice(1, last + 1, 0) or []]
    bad = [
        _app(c, 2, [Entry(t, last + 2, data=b"gap")]),  # not consecutive
        _app(c, 2, [Entry(t, last + 1), Entry(t, last + 1, data=b"dup")]),  # repeated index
        _app(c, 2, [Entry(t + 1, last + 1, data=b"future")]),  # entry from a later term than the leader's
        _app(c, 2, [Entry(t, last + 1), Entry(t - 1, last + 2, data=b"down")]),  # terms going down
        _app(c, 2, [Entry(0, last + 1, data=b"zero")]),  # term 0
        _app(c, 2, [Entry(t, MAX_INDEX + 1)], index=MAX_INDEX),  # past the index limit
        _app(c, 2, [Entry(t, last + 1)], log_term=t + 1),  # log term above the term
        _app(c, 2, [Entry(t, last + 1 + k) for k in range(MAX_ENTRIES_PER_MESSAGE + 1)]),
        _app(c, 2, [], commit=MAX_INDEX + 1),
    ]
    for m in bad:
        c.nodes[2].raw.step(m)
    assert [(e.term, e.index, e.data) for e in n2.log.slice(1, n2.log.last_index() + 1, 0) or []] == before
    assert not c.nodes[2].raw.raft.msgs, "an ignored message must not be answered"
    c.stabilize()
    _serving(c, b"after-bad-appends")


def test_an_ack_past_the_leaders_log_is_ignored() -> None:
    c = Cluster([1, 2, 3])
    c.elect(1)
    n1 = c.nodes[1].raw.raft
    match = n1.prs[2].match
    c.nodes[1].raw.step(Message(type=MT.MsgAppResp, to=1, from_=2, term=n1.term, index=n1.log.last_index() + 1))
    c.nodes[1].raw.step(Message(type=MT.MsgAppResp, to=1, from_=2, term=n1.term, index=MAX_INDEX))
    assert n1.prs[2].match == match
    _serving(c, b"still-replicating")


def test_impossible_snapshots_are_ignored() -> None:
    c = Cluster([1, 2, 3])
    c.elect(1)
    n2 = c.nodes[2].raw.raft
    t = n2.term

    def snap(index: int, term: int, voters: list[int]) -> Message:
        return Message(type=MT.MsgSnap, to=2, from_=1, term=t,
                       snapshot=Snapshot(b"x", SnapshotMetadata(ConfState(voters=voters), index, term)))

    for m in (
        snap(1000, t + 1, [1, 2, 3]),  # a snapshot of a later term than its sender's
        snap(1000, 0, [1, 2, 3]),
        snap(MAX_INDEX + 1, t, [1, 2, 3]),
        snap(1000, t, []),  # nobody votes
        snap(1000, t, [0, 2]),
        snap(1000, t, list(range(1, MAX_CONF_MEMBERS + 2))),
    ):
        c.nodes[2].raw.step(m)
    assert n2.log.unstable_snapshot is None and n2.log.committed < 1000


def test_messages_from_none_or_from_oneself_are_ignored() -> None:
    c = Cluster([1, 2, 3])
    c.elect(1)
    n2 = c.nodes[2].raw.raft
    t = n2.term
    before = (n2.term, n2.vote, n2.lead)
    for frm in (0, 2):
        c.nodes[2].raw.step(Message(type=MT.MsgVote, to=2, from_=frm, term=t + 1, log_term=t + 1, index=10**6))
        c.nodes[2].raw.step(Message(type=MT.MsgHeartbeat, to=2, from_=frm, term=t + 1))
    assert (n2.term, n2.vote, n2.lead) == before


def test_only_the_leader_may_hand_over_leadership_or_answer_reads() -> None:
    c = Cluster([1, 2, 3])
    c.elect(1)
    n2 = c.nodes[2].raw.raft
    t = n2.term
    c.nodes[2].raw.step(Message(type=MT.MsgTimeoutNow, to=2, from_=3, term=t))
    assert (n2.state, n2.term) == (StateType.Follower, t)
    c.nodes[2].raw.step(Message(type=MT.MsgReadIndexResp, to=2, from_=3, term=t, index=10**9,
                                entries=[Entry(data=b"ctx")]))
    assert n2.read_states == []
    c.nodes[2].raw.step(Message(type=MT.MsgTimeoutNow, to=2, from_=1, term=t))
    assert n2.state == StateType.Candidate  # from the leader it still works


def test_a_rejection_walk_stops_at_the_commit_index() -> None:
    c = Cluster([1, 2, 3])
    c.elect(1)
    for k in range(300):
        c.nodes[1].raw.propose(b"%d" % k)
    c.stabilize()
    n2 = c.nodes[2].raw.raft
    committed = n2.log.committed
    c.nodes[2].raw.step(Message(type=MT.MsgApp, to=2, from_=1, term=n2.term, index=n2.log.last_index() + 5,
                                log_term=n2.term))
    c.nodes[2].raw.step(Message(type=MT.MsgApp, to=2, from_=1, term=n2.term, index=n2.log.last_index(),
                                log_term=1))  # term 1 < every term past the bootstrap: the walk would go to 0
    resp = [m for m in n2.msgs if m.type == MT.MsgAppResp and m.reject]
    assert resp and all(m.reject_hint >= committed for m in resp)
    c.stabilize()
    _serving(c, b"after-rejections")


def test_a_message_without_a_term_does_not_pass_for_the_leaders() -> None:
    """raft takes term 0 for a local message of the current term: from the network only
    what a follower forwards may come without one."""
    c = Cluster([1, 2, 3])
    c.elect(1)
    n2 = c.nodes[2].raw.raft
    last, committed = n2.log.last_index(), n2.log.committed
    c.nodes[2].raw.step(Message(type=MT.MsgApp, to=2, from_=3, term=0, index=last, log_term=n2.log.term(last) or 0,
                                commit=last + 1, entries=[Entry(n2.term, last + 1, data=b"forged")]))
    c.nodes[2].raw.step(Message(type=MT.MsgHeartbeat, to=2, from_=3, term=0, commit=last))
    assert (n2.log.last_index(), n2.log.committed, n2.lead) == (last, committed, 1)
    c.nodes[1].raw.step(Message(type=MT.MsgProp, to=1, from_=2, term=0, entries=[Entry(data=b"forwarded")]))
    c.stabilize()
    assert c.data(2)[-1] == b"forwarded"


def test_requests_forwarded_back_to_their_maker_are_served() -> None:
    """A follower that has just lost its leadership forwards what it received again, naming
    its maker: a proposal or read index may reach the leader that made it."""
    c = Cluster([1, 2, 3])
    c.elect(1)
    c.nodes[1].raw.step(Message(type=MT.MsgProp, to=1, from_=1, entries=[Entry(data=b"round-trip")]))
    c.nodes[1].raw.step(Message(type=MT.MsgReadIndex, to=1, from_=1, entries=[Entry(data=b"ctx")]))
    c.stabilize()
    assert c.data(3)[-1] == b"round-trip"
    assert [rs.request_ctx for rs in c.nodes[1].read_states] == [b"ctx"]


def test_a_read_whose_acks_were_lost_is_confirmed_by_a_later_heartbeat() -> None:
    """Regression: only the first heartbeat carried a read's context; with its
    acks lost the read never completed, and every later read on that member
    queued behind it until the leader changed."""
    c = Cluster([1, 2, 3])
    c.elect(1)
    c.nodes[1].raw.propose(b"x")
    c.stabilize()
    c.drop = lambda m: m.type == MT.MsgHeartbeatResp and m.context == b"r1"
    c.nodes[1].raw.read_index(b"r1")
    c.stabilize()
    assert c.nodes[1].read_states == []
    c.drop = lambda m: False
    c.tick(2)
    assert [rs.request_ctx for rs in c.nodes[1].read_states] == [b"r1"]


def test_a_heartbeat_does_not_commit_what_the_follower_has_not_matched_with_its_leader() -> None:
    """A heartbeat's commit is min(match, commit) at a real leader; past what this
    follower has matched in this term it can only be a forgery, and must not commit
    a stale tail (entries a later leader may overwrite)."""
    c = Cluster([1, 2, 3])
    c.elect(1)
    c.drop = lambda m: m.to == 3 or m.type == MT.MsgAppResp  # 2 gets the entries, nobody acks them
    c.nodes[1].raw.propose(b"tail")
    c.stabilize()
    n2 = c.nodes[2].raw.raft
    committed, last = n2.log.committed, n2.log.last_index()
    assert last > committed
    c.nodes[2].raw.step(Message(type=MT.MsgHeartbeat, to=2, from_=3, term=n2.term + 1, commit=last))
    assert n2.log.committed == committed  # a new leader's word alone does not commit the old tail
    c.nodes[2].raw.step(Message(type=MT.MsgHeartbeat, to=2, from_=1, term=n2.term, commit=last))
    assert n2.log.committed == committed


def test_a_follower_restarted_within_the_term_learns_the_commit_from_heartbeats() -> None:
    """The leader may know a restarted follower's tail is its own and send it no append;
    heartbeats alone must then move its commit index."""
    c = Cluster([1, 2, 3])
    c.elect(1)
    c.drop = lambda m: m.to == 2 and m.type == MT.MsgHeartbeat or m.to == 2 and m.type == MT.MsgApp and not m.entries
    c.nodes[1].raw.propose(b"a")
    c.stabilize()  # 2 has the entry and acked it; the commit index reaches it only with the next message
    n2 = c.nodes[2]
    last = n2.raw.raft.log.last_index()
    assert n2.raw.raft.log.committed < last
    term = n2.raw.raft.term
    n2.storage.set_hard_state(n2.raw.raft.hard_state())
    c.nodes[2] = type(n2)(RawNode(Config(id=2, storage=n2.storage, applied=n2.raw.raft.log.applied, pre_vote=True,
                                         check_quorum=True, rng=random.Random(2))), n2.storage, n2.applied)
    c.drop = lambda m: False
    c.tick(3, only=[1])
    assert c.nodes[2].raw.raft.term == term
    assert c.nodes[2].raw.raft.log.committed == last
