"""Three-member petcd against three-member etcd on this machine: the load
generator's put and linearizable range with 64 clients on 8 connections
spread over all members, and the failover time from SIGKILL of the leader to
the first successful write (same election timeout for both). Prints both
figures, the petcd/etcd ratio and issue 11's target; every member started is
stopped by PID at the end.

    python3 bench/cluster_bench.py [--duration 8] [--failovers 3] [--keys 2000]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import grpc

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import load  # noqa: E402
from bench.run_bench import WORKLOADS, Measured, measure, print_table  # noqa: E402
from bench.servers import KINDS, endpoints, stop_on_sigterm, three_members  # noqa: E402
from petcd.proto import rpc_pb2, rpc_pb2_grpc  # noqa: E402
from petcd.testing.harness import Server, wait_for  # noqa: E402

TARGETS = {"put64": 0.8, "range64": 0.8}  # issue 11, three members
FAILOVER_TIMEOUT = 60.0


def leader_of(members: list[Server]) -> Server:
    """The member that reports itself leader (waits up to FAILOVER_TIMEOUT)."""

    stubs = [(m, rpc_pb2_grpc.MaintenanceStub(m.channel())) for m in members]

    def find() -> Server | None:
        for m, stub in stubs:
            try:
                st = stub.Status(rpc_pb2.StatusRequest(), timeout=2)
                if st.leader and st.leader == st.header.member_id:
                    return m
            except grpc.RpcError:
                pass
        return None

    return wait_for(find, FAILOVER_TIMEOUT, "a leader")


def failover_seconds(members: list[Server]) -> float:
    """SIGKILLs the leader, times until a put succeeds on another member,
    then restarts the killed member and waits until it is back."""
    lead = leader_of(members)
    rest = [m for m in members if m is not lead]
    stubs = [rpc_pb2_grpc.KVStub(m.channel()) for m in rest]
    lead.kill()
    t0 = time.monotonic()

    def put_anywhere() -> bool:
        for stub in stubs:
            try:
                stub.Put(rpc_pb2.PutRequest(key=b"failover", value=b"x"), timeout=0.5)
                return True
            except grpc.RpcError:
                pass
        return False

    wait_for(put_anywhere, FAILOVER_TIMEOUT, "a write after the leader was killed", interval=0.01)
    took = time.monotonic() - t0
    lead.start()
    return took


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=float, default=8.0, help="seconds per workload and cluster")
    ap.add_argument("--keys", type=int, default=2000, help="key-space size, filled before the workloads")
    ap.add_argument("--failovers", type=int, default=3, help="leader kills per cluster (0: none)")
    ap.add_argument("--loadgen", type=Path, help="a built load generator (default: build into the cache)")
    args = ap.parse_args()
    chosen = [w for w in WORKLOADS if w.name in TARGETS]
    stop_on_sigterm()
    binary = args.loadgen or load.loadgen_binary()
    results: dict[str, dict[str, Measured]] = {}
    failover: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="petcd-cluster-bench-") as tmp:
        for kind in KINDS:
            with three_members(kind, Path(tmp)) as members:
                load.fill(binary, endpoints(members), args.keys)
                for w in chosen:
                    results.setdefault(w.name, {})[kind] = measure(binary, members, w, args.duration, args.keys)
                if args.failovers > 0:
                    failover[kind] = statistics.median(failover_seconds(members) for _ in range(args.failovers))
    print_table(f"three members, {args.duration:g} s per workload; ratio = petcd/etcd; target from issue 11; "
                "cpu/op summed over the members",
                chosen, results, TARGETS)
    if failover:
        p, e = failover["petcd"], failover["etcd"]
        print(f"{'failover':<12} {'median s':<8} {p:>10.2f} {e:>10.2f} {p / e if e else float('nan'):>6.2f}"
              f"   (SIGKILL of the leader to the first write, {args.failovers} times; lower is better)")


if __name__ == "__main__":
    main()
