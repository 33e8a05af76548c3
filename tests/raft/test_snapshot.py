"""Log compaction and snapshots (Raft §7)."""

from __future__ import annotations

import random

from petcd.raft import Config, ConfState, MemoryStorage, MessageType, RawNode, StateType
from petcd.raft.progress import ProgressState
from tests.raft.cluster import Cluster


def _compact_leader(c: Cluster, lead: int) -> int:
    n = c.nodes[lead]
    applied = n.applied[-1].index
    n.storage.create_snapshot(applied, ConfState(voters=[1, 2, 3]), b"state")
    n.storage.compact(applied)
    return applied


def test_a_follower_behind_the_compacted_log_gets_a_snapshot() -> None:
    c = Cluster([1, 2, 3])
    c.elect(1)
    c.down = {3}
    for k in range(10):
        c.nodes[1].raw.propose(b"%d" % k)
    c.stabilize()
    idx = _compact_leader(c, 1)
    snaps = []
    c.drop = lambda m: m.type == MessageType.MsgSnap and (snaps.append(m) or False)
    c.down = set()
    c.tick(3)
    assert snaps and snaps[0].snapshot is not None and snaps[0].snapshot.metadata.index == idx
    assert c.nodes[3].storage.snapshot().metadata.index == idx
    c.nodes[1].raw.report_snapshot(3, ok=True)
    c.nodes[1].raw.propose(b"after")
    c.stabilize()
    assert c.data(3)[-1] == b"after"
    assert c.nodes[1].raw.raft.prs[3].match == c.nodes[1].raw.raft.log.last_index()


def test_a_failed_snapshot_sends_the_follower_back_to_probing() -> None:
    c = Cluster([1, 2, 3])
    c.elect(1)
    c.down = {3}
    for k in range(5):
        c.nodes[1].raw.propose(b"%d" % k)
    c.stabilize()
    _compact_leader(c, 1)
    c.drop = lambda m: m.type == MessageType.MsgSnap
    c.down = set()
    c.tick(2)
    pr = c.nodes[1].raw.raft.prs[3]
    assert pr.state == ProgressState.Snapshot
    c.nodes[1].raw.report_snapshot(3, ok=False)
    assert pr.state == ProgressState.Probe and pr.pending_snapshot == 0


def test_a_node_restarts_from_a_snapshot_and_its_log() -> None:
    c = Cluster([1, 2, 3])
    c.elect(1)
    for k in range(6):
        c.nodes[1].raw.propose(b"%d" % k)
    c.stabilize()
    n2 = c.nodes[2]
    applied = n2.applied[-1].index
    n2.storage.create_snapshot(applied - 2, ConfState(voters=[1, 2, 3]), b"s")
    n2.storage.compact(applied - 2)
    term = n2.raw.raft.term
    restarted = RawNode(Config(id=2, storage=n2.storage, applied=applied - 2, rng=random.Random(5),
                               pre_vote=True, check_quorum=True))
    assert restarted.raft.term == term
    assert sorted(restarted.raft.prs) == [1, 2, 3]
    rd = restarted.ready()
    assert [e.index for e in rd.committed_entries] == [applied - 1, applied]
    assert restarted.raft.state == StateType.Follower


def test_memory_storage_rejects_out_of_date_snapshots() -> None:
    s = MemoryStorage()
    from petcd.raft import Entry, ErrCompacted, ErrSnapOutOfDate
    s.append([Entry(1, i) for i in range(1, 6)])
    s.create_snapshot(3, ConfState(voters=[1]), b"")
    s.compact(3)
    for bad in (lambda: s.create_snapshot(2, None, b""), lambda: s.compact(2), lambda: s.term(1)):
        try:
            bad()
        except (ErrSnapOutOfDate, ErrCompacted):
            continue
        raise AssertionError("accepted an out-of-date operation")
    assert s.first_index() == 4 and s.last_index() == 5
