"""A deterministic cluster simulator for the raft core, with safety checks.

Nodes run the real RawNode and handle each Ready as a server does (a leader
may send before persisting; anyone else persists first; then apply and
advance). The simulated network delivers messages in random order and can
drop, duplicate and delay them, and partition nodes symmetrically or one
way. Nodes crash, losing everything not persisted, and restart from what
was. Membership changes, leadership transfers and snapshots with log
compaction happen under all of that. One seeded ``random.Random`` drives
everything, so a seed replays exactly.

After every step the simulator checks Election Safety, Log Matching,
Leader Completeness and State Machine Safety (which also means no applied
entry is ever lost or changed). At the end it heals every fault and requires
a leader to be elected and a new proposal to commit on every voter within a
bounded number of ticks.

    python -m petcd.raft.sim --seeds 1000 [--start 0] [--nodes 3|5] [--steps 3000]
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import sys
from dataclasses import dataclass, field

from petcd.raft.raft import Config, ProposalDropped
from petcd.raft.raw_node import RawNode, Ready
from petcd.raft.storage import MemoryStorage
from petcd.raft.types import (
    ConfChange,
    ConfChangeType,
    ConfState,
    Entry,
    EntryType,
    HardState,
    Message,
    MessageType,
    Snapshot,
    SnapshotMetadata,
    StateType,
)

ELECTION_TICK = 10
HEARTBEAT_TICK = 1
TRACE_KEEP = 200


class SafetyViolation(AssertionError):
    """A Raft safety property does not hold."""


@dataclass(slots=True)
class Durable:
    """What a node has persisted: all that survives a crash."""

    hard_state: HardState = field(default_factory=HardState)
    snapshot: Snapshot | None = None
    entries: list[Entry] = field(default_factory=list)


@dataclass(slots=True)
class Node:
    id: int
    durable: Durable
    raw: RawNode | None = None
    storage: MemoryStorage | None = None
    applied: dict[int, bytes] = field(default_factory=dict)  # the state machine: index -> payload
    applied_index: int = 0
    conf_state: ConfState = field(default_factory=ConfState)
    removed: bool = False

    @property
    def up(self) -> bool:
        return self.raw is not None and not self.removed


def _encode_state(applied: dict[int, bytes]) -> bytes:
    return json.dumps(sorted((i, d.hex()) for i, d in applied.items())).encode()


def _decode_state(data: bytes) -> dict[int, bytes]:
    return {i: bytes.fromhex(h) for i, h in json.loads(data)} if data else {}


class Simulation:
    def __init__(self, seed: int, nodes: int = 3, steps: int = 4000) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self.steps = steps
        self.trace: list[str] = []
        self.nodes: dict[int, Node] = {}
        self.network: list[Message] = []
        self.blocked: set[tuple[int, int]] = set()  # (from, to) pairs that cannot talk
        self.next_id = nodes + 1
        self.leaders: dict[int, int] = {}  # term -> leader id
        self.applied: dict[int, tuple[int, bytes]] = {}  # index -> (term, payload) applied anywhere
        self.entry_at: dict[tuple[int, int], bytes] = {}  # (index, term) -> payload, from durable logs
        self.prev_term: dict[tuple[int, int], int] = {}  # (index, term) -> term of index-1
        self.proposed = 0
        self.step_no = 0
        ids = list(range(1, nodes + 1))
        for i in ids:
            n = Node(i, Durable())
            self._boot(n, peers=ids)
            self.nodes[i] = n

    # ---- nodes ------------------------------------------------------------------

    def _config(self, n: Node, peers: list[int], applied: int) -> Config:
        return Config(
            id=n.id, storage=n.storage or MemoryStorage(), peers=peers, election_tick=ELECTION_TICK,
            heartbeat_tick=HEARTBEAT_TICK, applied=applied, rng=random.Random(self.rng.random()),
            pre_vote=True, check_quorum=True, max_inflight_msgs=16, max_size_per_msg=4096,
        )

    def _boot(self, n: Node, peers: list[int]) -> None:
        """Start (or restart) a node from its durable state."""
        storage = MemoryStorage()
        d = n.durable
        n.applied, n.applied_index, n.conf_state = {}, 0, ConfState()
        if d.snapshot is not None:
            storage.apply_snapshot(d.snapshot)
            n.applied = _decode_state(d.snapshot.data)
            n.applied_index = d.snapshot.metadata.index
            n.conf_state = d.snapshot.metadata.conf_state
        storage.set_hard_state(d.hard_state)
        storage.append(list(d.entries))
        n.storage = storage
        n.raw = RawNode(self._config(n, peers, n.applied_index))

    def _crash(self, n: Node) -> None:
        self.log(f"crash {n.id}")
        n.raw = None
        n.storage = None

    # ---- Ready handling ---------------------------------------------------------

    def process(self, n: Node) -> None:
        while n.up and n.raw is not None and n.raw.has_ready():
            raw = n.raw
            rd = raw.ready()
            leader = raw.raft.state == StateType.Leader
            if leader:
                self._send(n, rd.messages)
                if (rd.entries or rd.hard_state) and self.rng.random() < 0.002:
                    self._crash(n)  # after sending, before its own fsync: allowed by the thesis
                    return
            self._persist(n, rd)
            if not leader:
                self._send(n, rd.messages)
            self._apply(n, rd)
            if n.raw is raw:
                raw.advance(rd)

    def _persist(self, n: Node, rd: Ready) -> None:
        assert n.storage is not None
        d = n.durable
        if rd.snapshot is not None:
            if rd.snapshot.metadata.index < n.applied_index:
                raise SafetyViolation(f"state machine safety: node {n.id} was handed a snapshot at "
                                      f"{rd.snapshot.metadata.index}, behind its applied index {n.applied_index}")
            n.storage.apply_snapshot(rd.snapshot)
            d.snapshot = rd.snapshot
            d.entries = [e for e in d.entries if e.index > rd.snapshot.metadata.index]
            n.applied = _decode_state(rd.snapshot.data)
            n.applied_index = rd.snapshot.metadata.index
            n.conf_state = rd.snapshot.metadata.conf_state
            self.check_state_machine(n)
        if rd.entries:
            n.storage.append(rd.entries)
            first = rd.entries[0].index
            d.entries = [e for e in d.entries if e.index < first] + list(rd.entries)
            for e in rd.entries:
                self._check_log_entry(n, e, d)
        if rd.hard_state is not None:
            n.storage.set_hard_state(rd.hard_state)
            d.hard_state = rd.hard_state

    def _send(self, n: Node, msgs: list[Message]) -> None:
        for m in msgs:
            if m.type == MessageType.MsgSnap:
                m = self._fresh_snapshot(n, m)
            self.network.append(m)

    def _fresh_snapshot(self, n: Node, m: Message) -> Message:
        """As petcd's server does: send the state as of the applied index,
        with the membership of that moment."""
        assert n.raw is not None
        term = n.raw.raft.log.term(n.applied_index)
        if term is None:
            return m
        meta = SnapshotMetadata(ConfState(list(n.conf_state.voters), list(n.conf_state.learners)),
                                n.applied_index, term)
        return Message(type=m.type, to=m.to, from_=m.from_, term=m.term,
                       snapshot=Snapshot(_encode_state(n.applied), meta))

    def _apply(self, n: Node, rd: Ready) -> None:
        for e in rd.committed_entries:
            if n.raw is None or n.removed:
                return
            if e.index <= n.applied_index:
                continue
            self._check_applied(n, e)
            n.applied_index = e.index
            if e.type == EntryType.EntryNormal:
                if e.data:
                    n.applied[e.index] = e.data
            else:
                cc = ConfChange.from_bytes(e.data)
                n.conf_state = n.raw.apply_conf_change(cc)
                if cc.type == ConfChangeType.ConfChangeRemoveNode and cc.node_id == n.id:
                    self.log(f"{n.id} removed from the cluster")
                    n.removed = True

    # ---- invariants -------------------------------------------------------------

    def _check_log_entry(self, n: Node, e: Entry, d: Durable) -> None:
        """Log Matching: one (index, term) names one entry and one history."""
        key = (e.index, e.term)
        data = e.data if e.type == EntryType.EntryNormal else b"cc:" + e.data
        seen = self.entry_at.setdefault(key, data)
        if seen != data:
            raise SafetyViolation(f"log matching: node {n.id} has {data!r} at {key}, another node {seen!r}")
        prev = next((x.term for x in d.entries if x.index == e.index - 1), None)
        if prev is None and d.snapshot is not None and d.snapshot.metadata.index == e.index - 1:
            prev = d.snapshot.metadata.term
        if prev is not None:
            before = self.prev_term.setdefault(key, prev)
            if before != prev:
                raise SafetyViolation(f"log matching: entry {key} follows term {prev} on node {n.id}, "
                                      f"term {before} elsewhere")

    def _check_applied(self, n: Node, e: Entry) -> None:
        """State Machine Safety: no two nodes apply different entries at one index."""
        data = e.data if e.type == EntryType.EntryNormal else b"cc:" + e.data
        seen = self.applied.setdefault(e.index, (e.term, data))
        if seen != (e.term, data):
            raise SafetyViolation(f"state machine safety: node {n.id} applied {(e.term, data)!r} at {e.index}, "
                                  f"another node applied {seen!r}")

    def check_state_machine(self, n: Node) -> None:
        """No committed proposal is lost: a node's state holds exactly the proposals applied
        anywhere at or below its applied index (whether it applied them or got a snapshot)."""
        want = {i: data for i, (_, data) in self.applied.items()
                if i <= n.applied_index and data and not data.startswith(b"cc:")}
        if n.applied != want:
            lost = sorted(set(want) - set(n.applied))[:5]
            extra = sorted(set(n.applied) - set(want))[:5]
            wrong = sorted(i for i in set(want) & set(n.applied) if want[i] != n.applied[i])[:5]
            raise SafetyViolation(f"state machine safety: node {n.id} (applied {n.applied_index}) lacks "
                                  f"committed proposals at {lost}, has unknown ones at {extra}, "
                                  f"different ones at {wrong}")

    def check(self) -> None:
        for n in self._live():
            assert n.raw is not None
            r = n.raw.raft
            if r.state != StateType.Leader:
                continue
            lead = self.leaders.setdefault(r.term, n.id)
            if lead != n.id:
                raise SafetyViolation(f"election safety: {lead} and {n.id} both lead term {r.term}")
            first = r.log.first_index()
            for idx, (term, _) in self.applied.items():
                if term < r.term and idx >= first and r.log.term(idx) != term:
                    raise SafetyViolation(f"leader completeness: leader {n.id} of term {r.term} lacks "
                                          f"committed entry {idx} of term {term}")

    # ---- the driver -------------------------------------------------------------

    def log(self, line: str) -> None:
        self.trace.append(f"[{self.step_no}] {line}")
        if len(self.trace) > 4 * TRACE_KEEP:
            del self.trace[: -TRACE_KEEP]

    def _live(self) -> list[Node]:
        return [self.nodes[i] for i in sorted(self.nodes) if self.nodes[i].up]

    def _leader(self) -> Node | None:
        leads = [n for n in self._live() if n.raw is not None and n.raw.raft.state == StateType.Leader]
        return max(leads, key=lambda n: n.raw.raft.term if n.raw else 0) if leads else None

    def deliver(self, m: Message) -> None:
        target = self.nodes.get(m.to)
        ok = target is not None and target.up and (m.from_, m.to) not in self.blocked
        if ok and target is not None and target.raw is not None:
            target.raw.step(m)
        if m.type == MessageType.MsgSnap:
            self._snapshot_status(m, ok)

    def _snapshot_status(self, m: Message, ok: bool) -> None:
        """What petcd's transport does: tell the sender whether a snapshot got through."""
        sender = self.nodes.get(m.from_)
        if sender is not None and sender.up and sender.raw is not None:
            sender.raw.report_snapshot(m.to, ok)

    def run(self) -> None:
        for step in range(self.steps):
            self.step_no = step
            self.one_step()
            self.check()
        self.heal_and_check_liveness()
        self.final_check()

    def summary(self) -> str:
        kinds = [line.split("] ", 1)[1].split()[0] for line in self.trace]
        return (f"seed {self.seed}: {len(self.applied)} entries applied, {len(self.leaders)} terms with a leader, "
                f"{len(self.nodes)} nodes ever, {sum(k == 'crash' for k in kinds)} crashes in the last trace")

    def one_step(self) -> None:
        rng = self.rng
        live = self._live()
        c = rng.random()
        if c < 0.55 and self.network:
            m = self.network.pop(rng.randrange(len(self.network)))
            r = rng.random()
            if r < 0.05:
                self.log(f"drop {m.type.name} {m.from_}->{m.to}")
                if m.type == MessageType.MsgSnap:
                    self._snapshot_status(m, False)
                return
            if r < 0.08:
                self.network.append(m)  # delivered twice
            self.deliver(m)
        elif c < 0.70 and live:
            for n in live:
                assert n.raw is not None
                n.raw.tick()
        elif c < 0.82 and live:
            n = rng.choice(live)
            self.proposed += 1
            assert n.raw is not None
            try:
                n.raw.propose(b"p%d" % self.proposed)
            except ProposalDropped:
                pass
        elif c < 0.83:
            self._fault()
        elif c < 0.833:
            self._membership()
        elif c < 0.836:
            lead = self._leader()
            if lead is not None and lead.raw is not None:
                target = rng.choice(sorted(self.nodes))
                self.log(f"transfer {lead.id} -> {target}")
                lead.raw.transfer_leader(target)
        elif c < 0.85 and live:
            self._compact(rng.choice(live))
        for n in self._live():
            self.process(n)

    def _fault(self) -> None:
        rng = self.rng
        ids = sorted(i for i, n in self.nodes.items() if not n.removed)
        kind = rng.choice(["crash", "crash", "restart", "restart", "restart", "partition", "oneway", "heal", "heal"])
        if kind == "crash":
            n = self.nodes[rng.choice(ids)]
            if n.raw is not None:
                self._crash(n)
        elif kind == "restart":
            down = [i for i in ids if self.nodes[i].raw is None]
            if down:
                n = self.nodes[rng.choice(down)]
                self.log(f"restart {n.id}")
                self._boot(n, peers=[])
        elif kind == "partition":
            side = set(rng.sample(ids, rng.randint(1, max(1, len(ids) // 2))))
            self.blocked = {(a, b) for a in ids for b in ids if (a in side) != (b in side)}
            self.log(f"partition {sorted(side)} | {sorted(set(ids) - side)}")
        elif kind == "oneway":
            a, b = rng.sample(ids, 2)
            self.blocked.add((a, b))
            self.log(f"one-way cut {a}->{b}")
        else:
            self.blocked = set()
            self.log("heal network")

    def _membership(self) -> None:
        lead = self._leader()
        if lead is None or lead.raw is None:
            return
        rng = self.rng
        cs = lead.conf_state
        choice = rng.random()
        if choice < 0.3 and len(cs.voters) > 3:
            cc = ConfChange(ConfChangeType.ConfChangeRemoveNode, rng.choice(cs.voters))
        elif choice < 0.6 and cs.learners:
            cc = ConfChange(ConfChangeType.ConfChangeAddNode, rng.choice(cs.learners))
        elif len(self.nodes) < 7:
            new = Node(self.next_id, Durable())
            self.next_id += 1
            self._boot(new, peers=[])
            self.nodes[new.id] = new
            kind = ConfChangeType.ConfChangeAddLearnerNode if rng.random() < 0.6 else ConfChangeType.ConfChangeAddNode
            cc = ConfChange(kind, new.id)
        else:
            return
        self.log(f"conf change on {lead.id}: {cc.type.name} {cc.node_id}")
        try:
            lead.raw.propose_conf_change(cc)
        except ProposalDropped:
            pass

    def _compact(self, n: Node) -> None:
        if n.storage is None or n.raw is None or n.applied_index <= n.storage.snapshot().metadata.index:
            return
        snap = n.storage.create_snapshot(n.applied_index, n.conf_state, _encode_state(n.applied))
        n.durable.snapshot = snap
        n.durable.entries = [e for e in n.durable.entries if e.index > snap.metadata.index]
        keep = self.rng.randint(0, 5)
        if snap.metadata.index - keep > n.storage.first_index():
            n.storage.compact(snap.metadata.index - keep)
        self.log(f"snapshot {n.id} at {snap.metadata.index}")

    def heal_and_check_liveness(self) -> None:
        self.log("heal everything")
        self.blocked = set()
        for n in self.nodes.values():
            if n.raw is None and not n.removed:
                self._boot(n, peers=[])
        marker = b"final-%d" % self.seed
        proposed = False
        for tick in range(60 * ELECTION_TICK):
            for _ in range(200):
                if not self.network:
                    break
                self.deliver(self.network.pop(0))
                for n in self._live():
                    self.process(n)
            self.check()
            lead = self._leader()
            if lead is not None and lead.raw is not None:
                if not proposed or tick % (2 * ELECTION_TICK) == 0:
                    try:
                        lead.raw.propose(marker)
                        proposed = True
                    except ProposalDropped:
                        pass
                voters = [self.nodes[v] for v in lead.conf_state.voters if v in self.nodes]
                if proposed and voters and all(marker in v.applied.values() for v in voters if v.up):
                    return
            for n in self._live():
                assert n.raw is not None
                n.raw.tick()
                self.process(n)
        raise SafetyViolation("liveness: no leader committed a proposal on every voter after healing")

    def final_check(self) -> None:
        """After the run: every node's state machine agrees with what was committed."""
        for i in sorted(self.nodes):
            self.check_state_machine(self.nodes[i])


def run_seed(seed: int, nodes: int = 3, steps: int = 4000) -> Simulation:
    """Run one seed; raises SafetyViolation (with the trace) on failure."""
    sim = Simulation(seed, nodes, steps)
    try:
        sim.run()
    except SafetyViolation as exc:
        trace = "\n".join(sim.trace[-TRACE_KEEP:])
        raise SafetyViolation(f"seed {seed} ({nodes} nodes): {exc}\nlast steps:\n{trace}") from None
    return sim


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Simulate raft clusters under faults and check safety.")
    ap.add_argument("--seeds", type=int, default=100)
    ap.add_argument("--start", type=int, default=0)
    ap.add_argument("--nodes", type=int, choices=(3, 5), default=None, help="default: alternate 3 and 5")
    ap.add_argument("--steps", type=int, default=4000)
    ap.add_argument("--verbose", action="store_true")
    args = ap.parse_args(argv)
    logging.getLogger("petcd.raft").setLevel(logging.ERROR)
    failures = 0
    for seed in range(args.start, args.start + args.seeds):
        nodes = args.nodes or (3 if seed % 2 == 0 else 5)
        try:
            sim = run_seed(seed, nodes, args.steps)
            if args.verbose:
                print(sim.summary())
        except SafetyViolation as exc:
            failures += 1
            print(exc, file=sys.stderr)
            print(f"replay: python -m petcd.raft.sim --start {seed} --seeds 1 --nodes {nodes} --steps {args.steps}",
                  file=sys.stderr)
    print(f"{args.seeds - failures}/{args.seeds} seeds passed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
