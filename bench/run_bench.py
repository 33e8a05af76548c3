"""petcd against real etcd on this machine, under the same load.

Starts one petcd member and one etcd member with equivalent flags (temp
data dirs, free ports), drives each in turn with the Go load generator
(../shared/tools/gobench, built with its build.sh) and prints each
workload's figures and the petcd/etcd ratio. A benchmark, never a test.

    python bench/run_bench.py [--gobench /tmp/gobench] [--duration 10s] [--only put1,put64]
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.servers import each_server  # noqa: E402
from tests.harness import Server  # noqa: E402


@dataclass(frozen=True)
class Workload:
    name: str
    op: str
    clients: int
    conns: int
    metric: str  # "ops/s" or "events/s" (higher is better), or "p50_ms" (lower is better)
    watchers: int = 0


WORKLOADS = [
    Workload("put1", "put", 1, 1, "p50_ms"),
    Workload("put64", "put", 64, 8, "ops/s"),
    Workload("range64", "range", 64, 8, "ops/s"),
    Workload("range-s64", "range-s", 64, 8, "ops/s"),
    Workload("txn64", "txn", 64, 8, "ops/s"),
    Workload("watch100", "watch", 8, 4, "events/s", watchers=100),
    Workload("watch1000", "watch", 8, 4, "events/s", watchers=1000),
]


def run_gobench(gobench: str, server: Server, w: Workload, duration: str, keys: int) -> dict[str, float]:
    cmd = [gobench, "-endpoints", server.endpoint, "-op", w.op, "-clients", str(w.clients), "-conns", str(w.conns),
           "-duration", duration, "-keys", str(keys), "-val", "256"]
    if w.watchers:
        cmd += ["-watchers", str(w.watchers)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600).stdout.strip().splitlines()
    line = out[-1] if out else ""
    return {k: float(v) for k, v in re.findall(r"([\w/]+)=([\d.]+)", line)}


def fill(gobench: str, server: Server, keys: int) -> None:
    subprocess.run([gobench, "-endpoints", server.endpoint, "-op", "fill", "-clients", "16", "-conns", "4",
                    "-keys", str(keys), "-val", "256", "-duration", "120s"], capture_output=True, timeout=600)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gobench", default=shutil.which("gobench") or "/tmp/gobench")
    ap.add_argument("--duration", default="10s")
    ap.add_argument("--keys", type=int, default=10_000)
    ap.add_argument("--only", default="", help="comma-separated workload names")
    args = ap.parse_args()
    if not Path(args.gobench).exists():
        sys.exit(f"gobench not found at {args.gobench}: run ../shared/tools/gobench/build.sh /tmp/gobench")
    chosen = [w for w in WORKLOADS if not args.only or w.name in args.only.split(",")]
    results: dict[str, dict[str, dict[str, float]]] = {}
    for kind, server in each_server():
        fill(args.gobench, server, args.keys)
        for w in chosen:
            results.setdefault(w.name, {})[kind] = run_gobench(args.gobench, server, w, args.duration, args.keys)
    print(f"{'workload':<10} {'metric':<7} {'petcd':>10} {'etcd':>10} {'ratio':>7}  (ratio: petcd/etcd; "
          "for p50_ms lower is better)")
    for w in chosen:
        p = results[w.name]["petcd"].get(w.metric, 0.0)
        e = results[w.name]["etcd"].get(w.metric, 0.0)
        ratio = p / e if e else float("nan")
        print(f"{w.name:<10} {w.metric:<7} {p:>10.2f} {e:>10.2f} {ratio:>7.2f}")


if __name__ == "__main__":
    main()
