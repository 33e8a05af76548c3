"""`petcd cluster --size 3|5`: a local cluster on 127.0.0.1, one process per
member, data under one folder; Ctrl-C (or SIGTERM) stops every member.

Ports follow etcd's local-cluster convention: member i listens for clients on
port 2379 + 10000*i... (2379, 12379, 22379, ...) and for peers on the next
port up.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence

from petcd.storage.fsutil import make_private_dirs


def member_ports(i: int, base: int) -> tuple[int, int]:
    client = base + 10000 * i
    return client, client + 1


def main(argv: Sequence[str]) -> int:
    ap = argparse.ArgumentParser(prog="petcd cluster", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=3, choices=(1, 3, 5),
                    help="number of members (default: %(default)s)")
    ap.add_argument("--data-dir", default="petcd-cluster",
                    help="folder for every member's data directory and log (default: %(default)s)")
    ap.add_argument("--base-port", type=int, default=2379,
                    help="client port of the first member; member i listens for clients on base + 10000*i"
                         " and for peers one port up (default: %(default)s)")
    ap.add_argument("--initial-cluster-token", default="petcd-local-cluster",
                    help="the cluster's --initial-cluster-token, which its member and cluster ids derive from"
                         " (default: %(default)s)")
    args = ap.parse_args(list(argv))
    names = [f"infra{i + 1}" for i in range(args.size)]
    peers = {n: f"http://127.0.0.1:{member_ports(i, args.base_port)[1]}" for i, n in enumerate(names)}
    initial = ",".join(f"{n}={u}" for n, u in peers.items())
    procs: list[subprocess.Popen[bytes]] = []
    make_private_dirs(args.data_dir)
    for i, name in enumerate(names):
        client, _ = member_ports(i, args.base_port)
        url = f"http://127.0.0.1:{client}"
        cmd = [
            sys.executable, "-m", "petcd", "--name", name,
            "--data-dir", os.path.join(args.data_dir, f"{name}.petcd"),
            "--listen-client-urls", url, "--advertise-client-urls", url,
            "--listen-peer-urls", peers[name], "--initial-advertise-peer-urls", peers[name],
            "--initial-cluster", initial, "--initial-cluster-token", args.initial_cluster_token,
        ]
        log = open(os.path.join(args.data_dir, f"{name}.log"), "ab")  # noqa: SIM115 - the child keeps it
        procs.append(subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT))
        log.close()
        print(f"{name}: client {url}, peer {peers[name]}, log {args.data_dir}/{name}.log", flush=True)
    endpoints = ",".join(f"127.0.0.1:{member_ports(i, args.base_port)[0]}" for i in range(args.size))
    print(f"try: ETCDCTL_API=3 etcdctl --endpoints={endpoints} member list -w table", flush=True)
    stopping = False

    def stop(_sig: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    try:
        while not stopping and all(p.poll() is None for p in procs):
            time.sleep(0.2)
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
    failed = [n for n, p in zip(names, procs, strict=True) if p.returncode not in (0, -signal.SIGTERM)]
    if failed and not stopping:
        print(f"petcd cluster: member(s) {', '.join(failed)} exited; stopped the others", file=sys.stderr)
        return 1
    return 0
