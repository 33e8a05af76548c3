"""`etcdctl snapshot save` from petcd against real etcd on this machine: the
same data (--mb megabytes of --value-size values) in a one-member server of
each, the wall time of the save, and the p99 latency of sequential puts
while the save runs against the same member's idle p99. Prints both, the
petcd/etcd speed ratio and issue 14's targets (speed >= 0.5 of etcd's, p99
during the save <= 3x idle); every server started is stopped by PID.

    python3 bench/snapshot_bench.py [--mb 300] [--value-size 1024] [--saves 3]
        [--kinds etcd,petcd] [--work-dir DIR] [--out-dir DIR]

--saves N saves in a row from the same loaded member, each with its own
put probe, report the median of each figure (and every run). --work-dir
keeps the loaded data dirs there: a later run with the same --mb and
--value-size restarts the servers on them instead of loading again (a
1 GB load takes minutes). --out-dir puts the saved file elsewhere (say
/dev/shm): etcdctl fsyncs the whole file when the save ends, and on the
member's own disk that flush stalls the member's WAL fsyncs (etcd's as
much as petcd's), which the put probe then measures along with the member.
"""

from __future__ import annotations

import argparse
import os
import statistics
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


def probe(s: Server, seconds: float) -> list[float]:
    """Sequential put latencies for about `seconds` (the idle baseline)."""
    out: list[float] = []
    stop = threading.Event()
    t = threading.Thread(target=put_latencies, args=(s, stop, out))
    t.start()
    time.sleep(seconds)
    stop.set()
    t.join()
    return out


def save(s: Server, out: Path) -> tuple[float, int, list[float]]:
    """One `etcdctl snapshot save` with a put probe running: its wall time,
    the file's size and the put latencies during it."""
    during: list[float] = []
    stop = threading.Event()
    t = threading.Thread(target=put_latencies, args=(s, stop, during))
    t.start()
    try:
        started = time.perf_counter()
        subprocess.run([require_binary("etcdctl"), f"--endpoints={s.endpoint}", "snapshot", "save", str(out)],
                       check=True, capture_output=True, env=dict(os.environ, ETCDCTL_API="3"), timeout=3600)
        took = time.perf_counter() - started
    finally:
        stop.set()
        t.join()
    size = out.stat().st_size
    out.unlink()
    return took, size, during


Run = tuple[float, int, float, float]  # save seconds, bytes, idle p99, p99 during the save


def measure(kind: str, tmp: Path, mb: int, value_size: int, saves: int, out_dir: Path | None) -> list[Run]:
    d = tmp / f"{kind}-{mb}mb-{value_size}"
    loaded = d / "loaded"
    d.mkdir(exist_ok=True)
    extra = ["--quota-backend-bytes", QUOTA]
    s = (etcd_server(d, extra) if kind == "etcd" else petcd_server(d, extra=extra)).start()
    try:
        if not loaded.exists():
            load(s, mb, value_size)
            loaded.touch()
        runs: list[Run] = []
        for i in range(saves):
            idle = probe(s, 3)
            took, size, during = save(s, (out_dir or d) / f"{kind}-snap.db")
            runs.append((took, size, p99(idle), p99(during)))
            print(f"{kind:6s} run {i}: {size / 1e6:8.1f} MB in {took:6.2f} s = {size / 1e6 / took:7.1f} MB/s; "
                  f"put p99 idle {p99(idle) * 1e3:6.2f} ms, during {p99(during) * 1e3:6.2f} ms "
                  f"({p99(during) / p99(idle):4.1f}x, {len(during)} puts)", flush=True)
        return runs
    finally:
        s.stop()


def median_run(runs: list[Run]) -> tuple[float, int, float, float, float]:
    """Medians over the runs: seconds, bytes, idle p99, p99 during, and the
    median of the per-run during/idle ratios."""
    return (statistics.median(r[0] for r in runs), int(statistics.median(r[1] for r in runs)),
            statistics.median(r[2] for r in runs), statistics.median(r[3] for r in runs),
            statistics.median(r[3] / r[2] for r in runs))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=int, default=300)
    ap.add_argument("--value-size", type=int, default=1024)
    ap.add_argument("--saves", type=int, default=1, help="saves per server (medians reported)")
    ap.add_argument("--kinds", default=",".join(KINDS), help="comma-separated subset of etcd,petcd")
    ap.add_argument("--work-dir", type=Path, help="keep (and reuse) the loaded data dirs here")
    ap.add_argument("--out-dir", type=Path, help="where etcdctl writes the snapshot (default: by the data dir)")
    args = ap.parse_args()
    kinds = [k for k in args.kinds.split(",") if k]
    stop_on_sigterm()
    results = {}
    with tempfile.TemporaryDirectory(prefix="petcd-snapshot-bench-") as tmp:
        base = args.work_dir or Path(tmp)
        base.mkdir(parents=True, exist_ok=True)
        for kind in kinds:
            results[kind] = median_run(measure(kind, base, args.mb, args.value_size, args.saves, args.out_dir))
    for kind, (took, size, idle, during, ratio) in results.items():
        print(f"{kind:6s} median of {args.saves}: save {size / 1e6:8.1f} MB in {took:6.2f} s = "
              f"{size / 1e6 / took:7.1f} MB/s; put p99 idle {idle * 1e3:6.2f} ms, "
              f"during save {during * 1e3:6.2f} ms (per-run ratio median {ratio:4.1f}x)")
    if "etcd" in results and "petcd" in results:
        e, p = results["etcd"], results["petcd"]
        speed = (p[1] / p[0]) / (e[1] / e[0])
        print(f"petcd/etcd save speed (MB/s): {speed:.2f} (target >= 0.5); "
              f"petcd p99 during/idle: {p[4]:.1f}x (target <= 3x)")


if __name__ == "__main__":
    main()
