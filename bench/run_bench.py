"""One petcd member against one real etcd member on this machine, under the
same load.

Starts an etcd member, then a petcd member, each with equivalent flags (temp
data dirs, free ports), fills the key space, drives each in turn with the
project's Go load generator (bench/loadgen, built on demand, see
bench/load.py), stops it by PID, and prints each workload's figure for both,
the petcd/etcd ratio, issue 11's target for that ratio, the server CPU spent
per operation and the errors. A benchmark, never a test: on a shared machine
the figures move from run to run.

    python3 bench/run_bench.py [--duration 10] [--only put64,range64] [--keys 10000]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import load  # noqa: E402
from bench.load import Workload  # noqa: E402
from bench.servers import KINDS, cpu_seconds, endpoints, one_member, stop_on_sigterm  # noqa: E402
from petcd.testing.harness import Server  # noqa: E402

# Issue 11's speed targets, as petcd/etcd ratios: at least this for a
# throughput, at most this for a latency.
TARGETS = {"put64": 0.6, "range-s64": 1.0, "range64": 0.8, "put1": 1.5, "watch100": 0.5}

WORKLOADS = [
    Workload("put64", "put", 64, 8, "ops/s"),
    Workload("range-s64", "range-s", 64, 8, "ops/s"),
    Workload("range64", "range", 64, 8, "ops/s"),
    Workload("put1", "put", 1, 1, "p50_ms"),
    Workload("watch100", "watch", 8, 4, "events/s", watchers=100),
    # Not in issue 11's list; run them with --only.
    Workload("txn64", "txn", 64, 8, "ops/s"),
    Workload("watch1000", "watch", 8, 4, "events/s", watchers=1000),
    Workload("keepalive64", "lease-keepalive", 64, 8, "ops/s", leases=10_000),
]
DEFAULT = [w.name for w in WORKLOADS if w.name in TARGETS]


@dataclass(frozen=True)
class Measured:
    """One workload's figures against one server."""

    figures: dict[str, float]
    cpu_us_per_op: float


def measure(binary: Path, servers: list[Server], w: Workload, seconds: float, keys: int) -> Measured:
    """Runs w against servers, with the CPU the servers spent per operation."""
    cpu0 = cpu_seconds(servers)
    figures = load.run(binary, endpoints(servers), w, seconds, keys)
    cpu = cpu_seconds(servers) - cpu0
    ops = figures.get("ops", 0.0)
    return Measured(figures, cpu / ops * 1e6 if ops else float("nan"))


def print_table(title: str, workloads: list[Workload], results: dict[str, dict[str, Measured]],
                targets: dict[str, float]) -> None:
    """Prints one row per workload: both figures, the ratio petcd/etcd and
    the target it is held to."""
    print(title)
    print(f"{'workload':<12} {'metric':<8} {'petcd':>10} {'etcd':>10} {'ratio':>6} {'target':>8}"
          f" {'petcd cpu/op':>13} {'etcd cpu/op':>12} {'errors p/e':>11}")
    for w in workloads:
        p, e = results[w.name]["petcd"], results[w.name]["etcd"]
        pv, ev = p.figures.get(w.metric, 0.0), e.figures.get(w.metric, 0.0)
        ratio = pv / ev if ev else float("nan")
        target = targets.get(w.name)
        shown = "" if target is None else f"{'>=' if w.higher_is_better else '<='} {target}"
        errors = f"{p.figures.get('errors', 0):.0f}/{e.figures.get('errors', 0):.0f}"
        print(f"{w.name:<12} {w.metric:<8} {pv:>10.2f} {ev:>10.2f} {ratio:>6.2f} {shown:>8}"
              f" {p.cpu_us_per_op:>10.0f} us {e.cpu_us_per_op:>9.0f} us {errors:>11}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=float, default=10.0, help="seconds per workload and server")
    ap.add_argument("--keys", type=int, default=10_000, help="key-space size, filled before the workloads")
    ap.add_argument("--only", default=",".join(DEFAULT),
                    help=f"comma-separated workloads of: {', '.join(w.name for w in WORKLOADS)}")
    ap.add_argument("--loadgen", type=Path, help="a built load generator (default: build into the cache)")
    args = ap.parse_args()
    names = [n for n in args.only.split(",") if n]
    unknown = set(names) - {w.name for w in WORKLOADS}
    if unknown:
        ap.error(f"unknown workloads: {', '.join(sorted(unknown))}")
    chosen = [w for w in WORKLOADS if w.name in names]
    stop_on_sigterm()
    binary = args.loadgen or load.loadgen_binary()
    results: dict[str, dict[str, Measured]] = {}
    with tempfile.TemporaryDirectory(prefix="petcd-bench-") as tmp:
        for kind in KINDS:
            with one_member(kind, Path(tmp)) as server:
                load.fill(binary, server.endpoint, args.keys)
                for w in chosen:
                    results.setdefault(w.name, {})[kind] = measure(binary, [server], w, args.duration, args.keys)
    print_table(f"one member, {args.duration:g} s per workload; ratio = petcd/etcd (for p50_ms lower is better); "
                "target from issue 11", chosen, results, TARGETS)


if __name__ == "__main__":
    main()
