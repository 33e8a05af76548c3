"""Three-member petcd against three-member etcd on this machine: gobench
put and linearizable range with 64 clients spread over all members, and the
failover time from SIGKILL of the leader to the first successful write (same
election timeout for both). Prints petcd/etcd ratios.

    python bench/cluster_bench.py [--gobench /tmp/gobench] [--duration 8s] [--failovers 3]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.run_bench import WORKLOADS, run_gobench  # noqa: E402
from petcd.proto import rpc_pb2, rpc_pb2_grpc  # noqa: E402
from petcd.testing.harness import Server, free_port, petcd_cluster, require_binary  # noqa: E402


def etcd_cluster(tmp: Path, size: int) -> list[Server]:
    binary = require_binary("etcd")
    names = [f"e{i}" for i in range(size)]
    clients = {n: f"http://127.0.0.1:{free_port()}" for n in names}
    peers = {n: f"http://127.0.0.1:{free_port()}" for n in names}
    initial = ",".join(f"{n}={peers[n]}" for n in names)
    members = [Server("etcd", [binary, "--name", n, "--data-dir", str(tmp / n), "--listen-client-urls", clients[n],
                               "--advertise-client-urls", clients[n], "--listen-peer-urls", peers[n],
                               "--initial-advertise-peer-urls", peers[n], "--initial-cluster", initial,
                               "--initial-cluster-token", "bench"], tmp / n, clients[n], tmp / f"{n}.log")
               for n in names]
    for m in members:
        m.launch()
    for m in members:
        m.wait_ready()
    return members


def leader_of(members: list[Server]) -> Server:
    while True:
        for m in members:
            try:
                st = rpc_pb2_grpc.MaintenanceStub(grpc.insecure_channel(m.endpoint)).Status(
                    rpc_pb2.StatusRequest(), timeout=2)
                if st.leader and st.leader == st.header.member_id:
                    return m
            except grpc.RpcError:
                pass
        time.sleep(0.05)


def failover_seconds(members: list[Server]) -> float:
    lead = leader_of(members)
    rest = [m for m in members if m is not lead]
    lead.kill()
    t0 = time.monotonic()
    while True:
        for m in rest:
            try:
                rpc_pb2_grpc.KVStub(grpc.insecure_channel(m.endpoint)).Put(
                    rpc_pb2.PutRequest(key=b"failover", value=b"x"), timeout=0.5)
                took = time.monotonic() - t0
                lead.start()
                return took
            except grpc.RpcError:
                pass


class Endpoints:
    """gobench takes a comma-separated endpoint list."""

    def __init__(self, members: list[Server]) -> None:
        self.endpoint = ",".join(m.endpoint for m in members)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gobench", default=shutil.which("gobench") or "/tmp/gobench")
    ap.add_argument("--duration", default="8s")
    ap.add_argument("--failovers", type=int, default=3)
    args = ap.parse_args()
    chosen = [w for w in WORKLOADS if w.name in ("put64", "range64")]
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="petcd-cluster-bench-") as tmp:
        for kind in ("etcd", "petcd"):
            d = Path(tmp) / kind
            d.mkdir()
            members = etcd_cluster(d, 3) if kind == "etcd" else petcd_cluster(d, 3)
            try:
                subprocess.run([args.gobench, "-endpoints", Endpoints(members).endpoint, "-op", "fill", "-keys", "2000",
                                "-clients", "16", "-conns", "4", "-duration", "60s"], capture_output=True, timeout=300)
                for w in chosen:
                    got = run_gobench(args.gobench, Endpoints(members), w, args.duration, 2000)  # type: ignore[arg-type]
                    results.setdefault(w.name, {})[kind] = got.get(w.metric, 0.0)
                times = [failover_seconds(members) for _ in range(args.failovers)]
                results.setdefault("failover_s", {})[kind] = statistics.median(times)
            finally:
                for m in members:
                    m.stop()
    print(f"{'metric':<12} {'petcd':>10} {'etcd':>10} {'ratio':>7}")
    for name, r in results.items():
        p, e = r.get("petcd", 0.0), r.get("etcd", 0.0)
        print(f"{name:<12} {p:>10.2f} {e:>10.2f} {p / e if e else float('nan'):>7.2f}")


if __name__ == "__main__":
    main()
