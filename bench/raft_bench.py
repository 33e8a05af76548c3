"""Raft core throughput: entries committed through an in-memory 3-node
cluster in one process (messages handed over directly, storage in memory),
with 1 and with 64 proposals per Ready. Prints entries/s and microseconds of
CPU per entry; --profile prints the top of a cProfile of the batched run.

    python bench/raft_bench.py [--entries 200000] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from petcd.raft import Config, MemoryStorage, Message, RawNode, StateType  # noqa: E402


class Cluster:
    def __init__(self) -> None:
        self.ids = [1, 2, 3]
        self.storages = {i: MemoryStorage() for i in self.ids}
        self.nodes = {
            i: RawNode(Config(id=i, peers=self.ids, storage=self.storages[i], rng=random.Random(i), pre_vote=True,
                              check_quorum=True, max_inflight_msgs=256, max_size_per_msg=1 << 20))
            for i in self.ids
        }
        self.applied = 0
        self.nodes[1].campaign()
        self.settle()
        assert self.nodes[1].raft.state == StateType.Leader

    def settle(self) -> None:
        while True:
            msgs: list[Message] = []
            for i, n in self.nodes.items():
                while n.has_ready():
                    rd = n.ready()
                    s = self.storages[i]
                    if rd.entries:
                        s.append(rd.entries)
                    if rd.hard_state is not None:
                        s.set_hard_state(rd.hard_state)
                    msgs.extend(rd.messages)
                    if i == 1:
                        self.applied += len(rd.committed_entries)
                    n.advance(rd)
            if not msgs:
                return
            for m in msgs:
                self.nodes[m.to].step(m)


def run(entries: int, per_ready: int) -> tuple[float, float]:
    c = Cluster()
    leader = c.nodes[1]
    payload = b"x" * 128
    start_applied = c.applied
    t0, c0 = time.perf_counter(), time.process_time()
    while c.applied - start_applied < entries:
        for _ in range(per_ready):
            leader.propose(payload)
        c.settle()
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    done = c.applied - start_applied
    return done / wall, cpu / done * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--entries", type=int, default=200_000)
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args()
    for per_ready in (1, 64):
        n = args.entries if per_ready > 1 else args.entries // 10
        rate, us = run(n, per_ready)
        print(f"{per_ready:>3} proposals per Ready: {rate:>10,.0f} entries/s, {us:6.1f} µs CPU per entry "
              f"(3 nodes, one process)")
    if args.profile:
        prof = cProfile.Profile()
        prof.enable()
        run(args.entries // 4, 64)
        prof.disable()
        pstats.Stats(prof).sort_stats("tottime").print_stats(15)


if __name__ == "__main__":
    main()
