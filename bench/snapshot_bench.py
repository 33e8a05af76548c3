"""`etcdctl snapshot save` from petcd against real etcd on this machine: the
same data (--mb megabytes of --value-size values) in a one-member server of
each, the wall time of the save, and the p99 latency of sequential puts
while the save runs against the same member's idle p99. Prints both, the
petcd/etcd speed ratio and issue 14's targets (speed >= 0.5 of etcd's, p99
during the save <= 3x idle); every server started is stopped by PID.

    python3 bench/snapshot_bench.py [--mb 300] [--value-size 1024]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.servers import KINDS, stop_on_sigterm  # noqa: E402
from petcd.proto import rpc_pb2  # noqa: E402
from petcd.testing.harness import Server, etcd_server, petcd_server, require_binary  # noqa: E402

QUOTA = str(8 << 30)


def load(s: Server, mb: int, value_size: int) -> int:
    kv = s.kv()
    n = mb * 1_000_000 // value_size
    per_txn = max(1, min(100, 1_000_000 // value_size))
    value = os.urandom(value_size)
    for lo in range(0, n, per_txn):
        ops = [rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=b"bench/%09d" % i, value=value))
               for i in range(lo, min(n, lo + per_txn))]
        kv.Txn(rpc_pb2.TxnRequest(success=ops), timeout=60)
    return n


def p99(xs: list[float]) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * 0.99))] if xs else float("nan")


def put_latencies(s: Server, stop: threading.Event, out: list[float]) -> None:
    kv = s.kv()
    i = 0
    while not stop.is_set():
        t = time.perf_counter()
        kv.Put(rpc_pb2.PutRequest(key=b"probe/%d" % (i % 100), value=b"x"), timeout=30)
        out.append(time.perf_counter() - t)
        i += 1


def measure(kind: str, tmp: Path, mb: int, value_size: int) -> tuple[float, int, float, float]:
    d = tmp / kind
    d.mkdir()
    extra = ["--quota-backend-bytes", QUOTA]
    s = (etcd_server(d, extra) if kind == "etcd" else petcd_server(d, extra=extra)).start()
    try:
        load(s, mb, value_size)
        idle: list[float] = []
        stop = threading.Event()
        t = threading.Thread(target=put_latencies, args=(s, stop, idle))
        t.start()
        time.sleep(3)
        stop.set()
        t.join()
        during: list[float] = []
        stop = threading.Event()
        t = threading.Thread(target=put_latencies, args=(s, stop, during))
        t.start()
        out = d / "snap.db"
        started = time.perf_counter()
        subprocess.run([require_binary("etcdctl"), f"--endpoints={s.endpoint}", "snapshot", "save", str(out)],
                       check=True, capture_output=True, env=dict(os.environ, ETCDCTL_API="3"), timeout=3600)
        took = time.perf_counter() - started
        stop.set()
        t.join()
        return took, out.stat().st_size, p99(idle), p99(during)
    finally:
        s.stop()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=int, default=300)
    ap.add_argument("--value-size", type=int, default=1024)
    args = ap.parse_args()
    stop_on_sigterm()
    results = {}
    with tempfile.TemporaryDirectory(prefix="petcd-snapshot-bench-") as tmp:
        for kind in KINDS:
            results[kind] = measure(kind, Path(tmp), args.mb, args.value_size)
    for kind, (took, size, idle, during) in results.items():
        print(f"{kind:6s} save {size / 1e6:8.1f} MB in {took:6.2f} s = {size / 1e6 / took:7.1f} MB/s; "
              f"put p99 idle {idle * 1e3:6.2f} ms, during save {during * 1e3:6.2f} ms ({during / idle:4.1f}x)")
    e, p = results["etcd"], results["petcd"]
    ratio = (p[1] / p[0]) / (e[1] / e[0])
    print(f"petcd/etcd save speed (MB/s): {ratio:.2f} (target >= 0.5); "
          f"petcd p99 during/idle: {p[3] / p[2]:.1f}x (target <= 3x)")


if __name__ == "__main__":
    main()
