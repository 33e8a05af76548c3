"""Lease keep-alives through a follower, petcd beside real etcd on this
machine: three members each, every renewal asked of a follower, which
forwards it to the leader (petcd over its peer port's call connection,
etcd over its peer URL's /leases handler).

- keepalives/s: the Go load generator's lease-keepalive op (64 workers, each
  with its own LeaseKeepAlive stream, on 8 connections, 1,000 leases), all
  on one follower;
- one stream's round trip: the median and 99th percentile of 500 renewals
  sent one after another on one LeaseKeepAlive stream to a follower (Python
  grpc client, the same for both servers), and the median at the leader
  itself (what forwarding adds is the difference).

Every server started is stopped by PID at the end; every wait is bounded.

    python3 bench/forward_bench.py [--leases 1000] [--seconds 5] [--renewals 500]
"""

from __future__ import annotations

import argparse
import queue
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import load  # noqa: E402
from bench.load import Workload  # noqa: E402
from bench.servers import KINDS, stop_on_sigterm, three_members  # noqa: E402
from petcd.proto import rpc_pb2, rpc_pb2_grpc  # noqa: E402
from petcd.testing.harness import Server, wait_for  # noqa: E402

ANSWER_TIMEOUT = 30.0


def leader_and_follower(members: list[Server]) -> tuple[Server, Server]:
    def find() -> tuple[Server, Server] | None:
        sts = [m.maintenance().Status(rpc_pb2.StatusRequest(), timeout=10) for m in members]
        leads = {st.leader for st in sts}
        if len(leads) != 1 or 0 in leads:
            return None
        lead = next(m for m, st in zip(members, sts, strict=True) if st.header.member_id == st.leader)
        return lead, next(m for m in members if m is not lead)

    return wait_for(find, 60, "the members to agree on a leader")


def round_trips(server: Server, n: int) -> list[float]:
    """Seconds per renewal, n renewals one after another on one stream."""
    lease = rpc_pb2_grpc.LeaseStub(server.channel())
    granted = lease.LeaseGrant(rpc_pb2.LeaseGrantRequest(TTL=600), timeout=30)
    asks: queue.Queue[rpc_pb2.LeaseKeepAliveRequest | None] = queue.Queue()

    def requests() -> Iterator[rpc_pb2.LeaseKeepAliveRequest]:
        while (req := asks.get(timeout=ANSWER_TIMEOUT)) is not None:
            yield req

    stream = lease.LeaseKeepAlive(requests(), timeout=ANSWER_TIMEOUT + n)
    out = []
    try:
        for _ in range(n + 20):  # the first 20 warm the path up (connections, caches)
            t0 = time.perf_counter()
            asks.put(rpc_pb2.LeaseKeepAliveRequest(ID=granted.ID))
            resp = next(stream)
            out.append(time.perf_counter() - t0)
            assert resp.TTL == 600, resp
    finally:
        asks.put(None)
        stream.cancel()
    return out[20:]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--leases", type=int, default=1000)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--renewals", type=int, default=500)
    ap.add_argument("--loadgen", type=Path, help="a built load generator (default: build into the cache)")
    ap.add_argument("--kinds", default=",".join(KINDS), help="which servers (petcd,etcd)")
    args = ap.parse_args()
    stop_on_sigterm()
    binary = args.loadgen or load.loadgen_binary()
    results: dict[str, tuple[float, float, float, float]] = {}
    with tempfile.TemporaryDirectory(prefix="petcd-forward-bench-") as tmp:
        for kind in args.kinds.split(","):
            with three_members(kind, Path(tmp)) as members:
                lead, f = leader_and_follower(members)
                at_leader = statistics.median(round_trips(lead, args.renewals))
                rtts = sorted(round_trips(f, args.renewals))
                w = Workload("keepalive", "lease-keepalive", 64, 8, "ops/s", leases=args.leases)
                kps = load.run(binary, f.endpoint, w, args.seconds, keys=1)["ops/s"]
                results[kind] = (kps, statistics.median(rtts) * 1e3, rtts[int(len(rtts) * 0.99)] * 1e3,
                                 at_leader * 1e3)
    kinds = list(results)
    both = "petcd" in results and "etcd" in results
    print(f"{'through a follower':<28} " + " ".join(f"{k:>10}" for k in kinds) + (f" {'petcd/etcd':>11}" if both else ""))
    for i, name in enumerate(("keepalives/s", "one stream median (ms)", "one stream p99 (ms)",
                                 "at the leader: median (ms)")):
        ratio = f" {results['petcd'][i] / results['etcd'][i]:>11.2f}" if both and results["etcd"][i] else ""
        print(f"{name:<28} " + " ".join(f"{results[k][i]:>10.2f}" for k in kinds) + ratio)

if __name__ == "__main__":
    main()
