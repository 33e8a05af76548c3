"""The JSON gateway under load: put and range through HTTP/1.1 keep-alive
(h2load --h1), petcd against real etcd on the same machine, and the cost
of scraping /metrics every second during a put load.

    python3 bench/gateway_bench.py [--clients 64] [--requests 20000]

Prints requests per second for each server and petcd/etcd ratios. Never
pass/fail: numbers depend on the machine."""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.servers import one_member, stop_on_sigterm  # noqa: E402
from petcd.testing.harness import require_binary  # noqa: E402

PUT = {"key": "YmVuY2gva2V5", "value": "dmFsdWUtMDEyMzQ1Njc4OWFiY2RlZg=="}
RANGE = {"key": "YmVuY2gva2V5"}


def h2load(url: str, path: str, body: dict[str, str], clients: int, requests: int, tmp: Path) -> float:
    """Requests per second h2load measured (HTTP/1.1, keep-alive)."""
    data = tmp / f"body-{abs(hash(path))}.json"
    data.write_text(json.dumps(body))
    out = subprocess.run(
        [require_binary("h2load"), "--h1", "-c", str(clients), "-n", str(requests), "-d", str(data),
         "-H", "content-type: application/json", url + path],
        capture_output=True, text=True, timeout=600, check=True,
    ).stdout
    failed = re.search(r"(\d+) failed", out)
    if failed and int(failed.group(1)):
        raise RuntimeError(f"h2load saw failures:\n{out}")
    m = re.search(r"finished in [\d.]+m?s, ([\d.]+) req/s", out)
    if m is None:
        raise RuntimeError(f"cannot read h2load's output:\n{out}")
    return float(m.group(1))


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def scrape_cost(url: str, pid: int, clients: int, requests: int, tmp: Path) -> tuple[float, float]:
    """(server CPU seconds per /metrics scrape, server CPU seconds per
    second during a put load): their ratio is what a scrape every second
    costs at that load."""
    before = cpu_seconds(pid)
    scrapes = 50
    for _ in range(scrapes):
        urllib.request.urlopen(url + "/metrics", timeout=10).read()
    per_scrape = (cpu_seconds(pid) - before) / scrapes
    before, started = cpu_seconds(pid), time.monotonic()
    h2load(url, "/v3/kv/put", PUT, clients, requests, tmp)
    busy = (cpu_seconds(pid) - before) / (time.monotonic() - started)
    return per_scrape, busy


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, default=64)
    ap.add_argument("--requests", type=int, default=20000)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    stop_on_sigterm()
    rates: dict[str, dict[str, float]] = {"etcd": {}, "petcd": {}}
    with tempfile.TemporaryDirectory(prefix="petcd-gateway-bench-") as d:
        tmp = Path(d)
        with one_member("etcd", tmp) as etcd, one_member("petcd", tmp) as petcd:
            servers = {"etcd": etcd, "petcd": petcd}
            for s in servers.values():
                h2load(s.client_url, "/v3/kv/put", PUT, 8, 1000, tmp)  # warm up
            # rounds alternate between the servers (the machine's load drifts);
            # each server's median round counts
            samples: dict[tuple[str, str], list[float]] = {}
            for _ in range(args.rounds):
                for op, path, body in (("put", "/v3/kv/put", PUT), ("range", "/v3/kv/range", RANGE)):
                    for kind, s in servers.items():
                        samples.setdefault((kind, op), []).append(
                            h2load(s.client_url, path, body, args.clients, args.requests, tmp))
            for (kind, op), got in samples.items():
                rates[kind][op] = statistics.median(got)
            assert petcd.proc is not None
            per_scrape, busy = scrape_cost(petcd.client_url, petcd.proc.pid, args.clients, args.requests, tmp)
            rates["petcd"]["scrape_ms"] = per_scrape * 1e3
            rates["petcd"]["scrape_overhead"] = per_scrape / busy if busy else 0.0
    for op in ("put", "range"):
        e, p = rates["etcd"][op], rates["petcd"][op]
        print(f"{op:6s} etcd {e:9.0f} req/s   petcd {p:9.0f} req/s   petcd/etcd {p / e:5.2f}")
    print(f"/metrics: {rates['petcd']['scrape_ms']:.2f} ms server CPU per scrape; every second during "
          f"put@{args.clients}: {rates['petcd']['scrape_overhead'] * 100:.2f}% of the server's CPU")


if __name__ == "__main__":
    main()
