"""Speed of petcd.client against one petcd member (issue 15's targets):

- put-p50: ``Client.put`` p50 latency vs a bare grpcio stub call on the
  same member (interleaved rounds, so load on the box hits both alike);
  target <= 1.2x;
- async-64: ``AsyncClient`` with 64 concurrent puts vs aetcd (asyncio) and
  python-etcd3 (64 threads on one client) on the same load; target: at
  least as fast as both;
- watch: events/s one Python consumer takes from a watch (from a
  preloaded history of puts), Client and AsyncClient; target >= 50,000.

aetcd and etcd3 are not petcd's dependencies: give an interpreter that has
them with --others-python (a venv: ``pip install aetcd etcd3``; etcd3 runs
there with PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION=python, the only way it
works with protobuf 4 and later). Numbers only, never pass/fail.

    python3 bench/client_bench.py [--target etcd] [--others-python /path/venv/bin/python]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import grpc  # noqa: E402

from bench.servers import one_member, stop_on_sigterm  # noqa: E402
from petcd.client import AsyncClient, Client, Op  # noqa: E402
from petcd.proto import rpc_pb2, rpc_pb2_grpc  # noqa: E402

VALUE = b"v" * 100


def put_p50(endpoint: str, rounds: int, per_round: int) -> tuple[float, float, float, float]:
    """p50 (µs) of a bare stub Put and of Client.put, interleaved, and the
    caller's CPU µs per call of each (what the client itself costs)."""
    ch = grpc.insecure_channel(endpoint)
    stub = rpc_pb2_grpc.KVStub(ch)
    req = rpc_pb2.PutRequest(key=b"bench/put", value=VALUE)
    bare: list[float] = []
    ours: list[float] = []
    with Client(endpoint) as c:
        for _ in range(200):  # warm both paths
            stub.Put(req)
            c.put(b"bench/put", VALUE)
        pc, tt = time.perf_counter, time.thread_time
        cpu_bare = cpu_ours = 0.0
        for _ in range(rounds):
            c0 = tt()
            for _ in range(per_round):
                t = pc()
                stub.Put(req)
                bare.append(pc() - t)
            c1 = tt()
            for _ in range(per_round):
                t = pc()
                c.put(b"bench/put", VALUE)
                ours.append(pc() - t)
            cpu_bare += c1 - c0
            cpu_ours += tt() - c1
    ch.close()
    n = rounds * per_round
    return (statistics.median(bare) * 1e6, statistics.median(ours) * 1e6,
            cpu_bare / n * 1e6, cpu_ours / n * 1e6)


CONTENDERS = {
    "AsyncClient": r'''
import asyncio, sys, time
from petcd.client import AsyncClient
endpoint = sys.argv[1]; conc, total = int(sys.argv[2]), int(sys.argv[3])
async def main():
    async with AsyncClient(endpoint) as c:
        await c.put(b"warm", b"up")
        per = total // conc
        async def worker(w):
            key = f"bench/a/{w}".encode()
            for _ in range(per):
                await c.put(key, b"v" * 100)
        t, cpu = time.perf_counter(), time.process_time()
        await asyncio.gather(*(worker(w) for w in range(conc)))
        print(per * conc / (time.perf_counter() - t), (time.process_time() - cpu) / (per * conc))
asyncio.run(main())
''',
    "aetcd": r'''
import asyncio, sys, time, aetcd
host, port = sys.argv[1].rsplit(":", 1); conc, total = int(sys.argv[2]), int(sys.argv[3])
async def main():
    async with aetcd.Client(host=host, port=int(port)) as c:
        await c.put(b"warm", b"up")
        per = total // conc
        async def worker(w):
            key = f"bench/b/{w}".encode()
            for _ in range(per):
                await c.put(key, b"v" * 100)
        t, cpu = time.perf_counter(), time.process_time()
        await asyncio.gather(*(worker(w) for w in range(conc)))
        print(per * conc / (time.perf_counter() - t), (time.process_time() - cpu) / (per * conc))
asyncio.run(main())
''',
    "etcd3": r'''
import sys, threading, time, etcd3
host, port = sys.argv[1].rsplit(":", 1); conc, total = int(sys.argv[2]), int(sys.argv[3])
c = etcd3.client(host=host, port=int(port))
c.put("warm", "up")
per = total // conc
def worker(w):
    key = f"bench/c/{w}"
    for _ in range(per):
        c.put(key, b"v" * 100)
ts = [threading.Thread(target=worker, args=(w,)) for w in range(conc)]
t, cpu = time.perf_counter(), time.process_time()
for th in ts: th.start()
for th in ts: th.join()
print(per * conc / (time.perf_counter() - t), (time.process_time() - cpu) / (per * conc))
''',
}


def contender_puts(python: str, name: str, endpoint: str, concurrency: int, total: int) -> tuple[float, float]:
    """(puts/s, client CPU seconds per put) of one run in a fresh interpreter."""
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parent.parent))
    if name == "etcd3":
        env["PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION"] = "python"
    cp = subprocess.run([python, "-c", CONTENDERS[name], endpoint, str(concurrency), str(total)],
                        capture_output=True, text=True, timeout=600, env=env)
    if cp.returncode != 0:
        raise RuntimeError(f"{name}: {cp.stderr.strip()[-500:]}")
    rate, cpu = cp.stdout.strip().splitlines()[-1].split()
    return float(rate), float(cpu)


def preload(endpoint: str, events: int) -> int:
    """events puts (100 per txn); the revision of the first."""
    with Client(endpoint) as c:
        first = 0
        for b in range(events // 100):
            r = c.txn(success=[Op.put(f"bench/w/{i:03d}", VALUE) for i in range(100)])
            first = first or r.revision
            del b
        return first


def watch_sync(endpoint: str, start: int, events: int) -> tuple[float, float]:
    """(events/s, consumer thread CPU seconds per event)."""
    with Client(endpoint) as c:
        t, cpu = time.perf_counter(), time.thread_time()
        n = 0
        with c.watch(b"bench/w/", prefix=True, start_revision=start) as w:
            for _ in w:
                n += 1
                if n == events:
                    break
        return n / (time.perf_counter() - t), (time.thread_time() - cpu) / n


async def watch_async(endpoint: str, start: int, events: int) -> tuple[float, float]:
    async with AsyncClient(endpoint) as c:
        t, cpu = time.perf_counter(), time.thread_time()
        n = 0
        async with c.watch(b"bench/w/", prefix=True, start_revision=start) as w:
            async for _ in w:
                n += 1
                if n == events:
                    break
        return n / (time.perf_counter() - t), (time.thread_time() - cpu) / n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--target", choices=("petcd", "etcd"), default="petcd")
    ap.add_argument("--rounds", type=int, default=160)
    ap.add_argument("--per-round", type=int, default=25)
    ap.add_argument("--puts", type=int, default=6400, help="puts in the 64-concurrent run")
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--async-rounds", type=int, default=3)
    ap.add_argument("--watch-rounds", type=int, default=3)
    ap.add_argument("--others-python", default="", help="an interpreter with aetcd and etcd3 installed")
    args = ap.parse_args()
    stop_on_sigterm()
    with tempfile.TemporaryDirectory() as tmp, one_member(args.target, Path(tmp)) as server:
        ep = server.endpoint
        bare, ours, cbare, cours = put_p50(ep, args.rounds, args.per_round)
        print(f"put-p50   bare stub {bare:5.0f} µs ({cbare:.0f} µs CPU)   Client.put {ours:5.0f} µs "
              f"({cours:.0f} µs CPU)   ratio {ours / bare:.2f}  (target <= 1.20)")
        names = ["AsyncClient"] + (["aetcd", "etcd3"] if args.others_python else [])
        runs: dict[str, list[tuple[float, float]]] = {n: [] for n in names}
        for _ in range(args.async_rounds):  # alternate, so load on the box hits each alike
            for n in names:
                py = sys.executable if n == "AsyncClient" else args.others_python
                runs[n].append(contender_puts(py, n, ep, 64, args.puts))
        med = {n: (statistics.median(r[0] for r in runs[n]), statistics.median(r[1] for r in runs[n]))
               for n in names}
        print("async-64  " + "   ".join(f"{n} {med[n][0]:6.0f} puts/s ({med[n][1] * 1e6:4.0f} µs CPU/put)"
                                         for n in names) + "  (target: AsyncClient >= each)")
        start = preload(ep, args.events)
        for _ in range(args.watch_rounds):
            s, scpu = watch_sync(ep, start, args.events)
            a, acpu = asyncio.run(watch_async(ep, start, args.events))
            print(f"watch     Client {s:7.0f} events/s ({scpu * 1e6:.1f} µs CPU/event)   "
                  f"AsyncClient {a:7.0f} events/s ({acpu * 1e6:.1f} µs CPU/event)  (target >= 50000 events/s)")


if __name__ == "__main__":
    main()
