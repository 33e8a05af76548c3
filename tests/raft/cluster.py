"""A tiny in-memory cluster for the raft unit tests: each node handles its
Ready as a server would (persist, send, apply, advance) and the network
delivers messages in order unless a test drops them."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

from petcd.raft import (
    ConfChange,
    Config,
    Entry,
    EntryType,
    MemoryStorage,
    Message,
    RawNode,
    ReadState,
    StateType,
)


@dataclass
class Node:
    raw: RawNode
    storage: MemoryStorage
    applied: list[Entry] = field(default_factory=list)
    read_states: list[ReadState] = field(default_factory=list)


class Cluster:
    def __init__(self, ids: list[int], *, pre_vote: bool = True, check_quorum: bool = True, seed: int = 1,
                 learners: list[int] | None = None, election_tick: int = 10, **cfg: object) -> None:
        self.ids = list(ids)
        self.nodes: dict[int, Node] = {}
        self.queue: list[Message] = []
        self.drop: Callable[[Message], bool] = lambda m: False
        self.down: set[int] = set()
        self.cfg = dict(pre_vote=pre_vote, check_quorum=check_quorum, election_tick=election_tick, **cfg)
        self.seed = seed
        for i in ids:
            self.nodes[i] = self._make(i, list(ids), learners or [])

    def _make(self, i: int, peers: list[int], learners: list[int]) -> Node:
        storage = MemoryStorage()
        raw = RawNode(Config(id=i, peers=peers, learners=learners, storage=storage,
                             rng=random.Random(self.seed * 100 + i), **self.cfg))  # type: ignore[arg-type]
        return Node(raw, storage)

    def add_empty_node(self, i: int) -> Node:
        """A node joining an existing cluster: empty storage, no peers."""
        storage = MemoryStorage()
        raw = RawNode(Config(id=i, storage=storage, rng=random.Random(self.seed * 100 + i), **self.cfg))  # type: ignore[arg-type]
        node = Node(raw, storage)
        self.nodes[i] = node
        return node

    def leader(self) -> int:
        leads = [i for i, n in self.nodes.items() if i not in self.down and n.raw.raft.state == StateType.Leader]
        return leads[0] if len(leads) == 1 else 0

    def process(self, i: int) -> None:
        n = self.nodes[i]
        while n.raw.has_ready():
            rd = n.raw.ready()
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

    def stabilize(self, rounds: int = 1000) -> None:
        """Process every node and deliver messages until nothing moves."""
        for _ in range(rounds):
            for i in list(self.nodes):
                if i not in self.down:
                    self.process(i)
            if not self.queue:
                return
            msgs, self.queue = self.queue, []
            for m in msgs:
                if m.to in self.down or m.from_ in self.down or m.to not in self.nodes or self.drop(m):
                    continue
                self.nodes[m.to].raw.step(m)
        raise AssertionError("cluster did not stabilize")

    def tick(self, n: int = 1, only: list[int] | None = None) -> None:
        for _ in range(n):
            for i in only or list(self.nodes):
                if i not in self.down:
                    self.nodes[i].raw.tick()
            self.stabilize()

    def elect(self, i: int) -> None:
        self.nodes[i].raw.campaign()
        self.stabilize()
        assert self.nodes[i].raw.raft.state == StateType.Leader

    def data(self, i: int) -> list[bytes]:
        return [e.data for e in self.nodes[i].applied if e.type == EntryType.EntryNormal and e.data]
