"""Watch and lease figures for petcd beside real etcd on this machine:

- RSS per idle watcher: the server's resident memory growth per watcher for
  10,000 idle watchers (spread over 10 streams), in bytes; the client is
  Python (grpc.aio), the same for both servers;
- keepalives/s with 10,000 leases renewed by the Go load generator
  (bench/loadgen, op lease-keepalive: 64 workers, each with its own
  LeaseKeepAlive stream, on 8 connections).

Watch fan-out throughput is in run_bench.py. Every server started is
stopped by PID at the end; every wait is bounded.

    python3 bench/watch_lease_bench.py [--watchers 10000] [--leases 10000] [--seconds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from pathlib import Path

import grpc

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import load  # noqa: E402
from bench.load import Workload  # noqa: E402
from bench.servers import KINDS, one_member, stop_on_sigterm  # noqa: E402
from petcd.proto import rpc_pb2, rpc_pb2_grpc  # noqa: E402
from petcd.testing.harness import Server  # noqa: E402

WATCH_TIMEOUT = 300.0  # creating and measuring the idle watchers, at most
STREAMS = 10


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


async def idle_watchers(server: Server, n: int) -> float:
    assert server.proc is not None
    async with grpc.aio.insecure_channel(server.endpoint) as ch:
        stub = rpc_pb2_grpc.WatchStub(ch)
        await asyncio.sleep(1)
        before = rss_bytes(server.proc.pid)
        calls = []
        for s in range(STREAMS):
            reqs = [rpc_pb2.WatchRequest(create_request=rpc_pb2.WatchCreateRequest(key=b"idle/%d/%d" % (s, i)))
                    for i in range(n // STREAMS)]
            call = stub.Watch()
            for r in reqs:
                await call.write(r)
            calls.append(call)
        for call in calls:
            for _ in range(n // STREAMS):
                await call.read()  # the created responses
        await asyncio.sleep(1)
        after = rss_bytes(server.proc.pid)
        for call in calls:
            call.cancel()
    return (after - before) / n


def keepalives(binary: Path, server: Server, leases: int, seconds: float) -> float:
    """Lease renewals per second the server answers (see the module docstring)."""
    w = Workload("keepalive", "lease-keepalive", 64, 8, "ops/s", leases=leases)
    return load.run(binary, server.endpoint, w, seconds, keys=1)["ops/s"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--watchers", type=int, default=10_000)
    ap.add_argument("--leases", type=int, default=10_000)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--loadgen", type=Path, help="a built load generator (default: build into the cache)")
    args = ap.parse_args()
    stop_on_sigterm()
    binary = args.loadgen or load.loadgen_binary()
    results: dict[str, tuple[float, float]] = {}
    with tempfile.TemporaryDirectory(prefix="petcd-watch-lease-bench-") as tmp:
        for kind in KINDS:
            with one_member(kind, Path(tmp)) as server:
                per_watcher = asyncio.run(asyncio.wait_for(idle_watchers(server, args.watchers), WATCH_TIMEOUT))
                kps = keepalives(binary, server, args.leases, args.seconds)
                results[kind] = (per_watcher, kps)
    p, e = results["petcd"], results["etcd"]
    print(f"{'metric':<26} {'petcd':>10} {'etcd':>10} {'ratio':>7}")
    print(f"{'RSS per idle watcher (B)':<26} {p[0]:>10.0f} {e[0]:>10.0f} {p[0] / e[0] if e[0] else float('nan'):>7.2f}")
    print(f"{'keepalives/s':<26} {p[1]:>10.0f} {e[1]:>10.0f} {p[1] / e[1] if e[1] else float('nan'):>7.2f}")


if __name__ == "__main__":
    main()
