"""Watch and lease figures for petcd beside real etcd on this machine:

- RSS per idle watcher: the server's resident memory growth per watcher for
  10,000 idle watchers (spread over 10 streams), in bytes;
- keepalives/s with 10,000 leases, renewed over 10 LeaseKeepAlive streams.

The client is Python (grpc.aio) and the same for both servers, so the ratio
is what to read. Watch fan-out throughput is in run_bench.py (gobench).

    python bench/watch_lease_bench.py [--watchers 10000] [--leases 10000] [--seconds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

import grpc

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.servers import each_server  # noqa: E402
from petcd.proto import rpc_pb2, rpc_pb2_grpc  # noqa: E402
from petcd.testing.harness import Server  # noqa: E402

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


async def keepalives(server: Server, n: int, seconds: float) -> float:
    async with grpc.aio.insecure_channel(server.endpoint) as ch:
        stub = rpc_pb2_grpc.LeaseStub(ch)
        ids: list[int] = []
        for start in range(0, n, 500):
            grants = await asyncio.gather(*(stub.LeaseGrant(rpc_pb2.LeaseGrantRequest(TTL=600))
                                            for _ in range(start, min(n, start + 500))))
            ids.extend(g.ID for g in grants)
        done = 0
        deadline = time.monotonic() + seconds

        async def stream(my: list[int]) -> None:
            nonlocal done
            call = stub.LeaseKeepAlive()
            while time.monotonic() < deadline:
                for lid in my:
                    await call.write(rpc_pb2.LeaseKeepAliveRequest(ID=lid))
                for _ in my:
                    await call.read()
                    done += 1
            call.cancel()

        t0 = time.monotonic()
        await asyncio.gather(*(stream(ids[i::STREAMS]) for i in range(STREAMS)))
        return done / (time.monotonic() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--watchers", type=int, default=10_000)
    ap.add_argument("--leases", type=int, default=10_000)
    ap.add_argument("--seconds", type=float, default=5.0)
    args = ap.parse_args()
    results: dict[str, tuple[float, float]] = {}
    for kind, server in each_server():
        per_watcher = asyncio.run(idle_watchers(server, args.watchers))
        kps = asyncio.run(keepalives(server, args.leases, args.seconds))
        results[kind] = (per_watcher, kps)
    p, e = results["petcd"], results["etcd"]
    print(f"{'metric':<26} {'petcd':>10} {'etcd':>10} {'ratio':>7}")
    print(f"{'RSS per idle watcher (B)':<26} {p[0]:>10.0f} {e[0]:>10.0f} {p[0] / e[0] if e[0] else float('nan'):>7.2f}")
    print(f"{'keepalives/s':<26} {p[1]:>10.0f} {e[1]:>10.0f} {p[1] / e[1] if e[1] else float('nan'):>7.2f}")


if __name__ == "__main__":
    main()
