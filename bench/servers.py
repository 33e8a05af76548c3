"""The servers a benchmark compares: real etcd and petcd, one member or a
cluster, each with the same flags and fresh data in the caller's temp dir,
stopped by PID when the `with` block ends (also on an error, Ctrl-C or a
SIGTERM to the bench, see stop_on_sigterm)."""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from petcd.testing.harness import (  # noqa: E402
    Server,
    etcd_cluster,
    etcd_server,
    petcd_cluster,
    petcd_server,
)

KINDS = ("etcd", "petcd")


def stop_on_sigterm() -> None:
    """Turns SIGTERM into SystemExit, so that the `with` blocks below stop
    their servers when the bench itself is terminated."""
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))


@contextmanager
def one_member(kind: str, tmp: Path) -> Iterator[Server]:
    """A running one-member server of `kind` ("etcd" or "petcd")."""
    d = tmp / kind
    d.mkdir()
    server = etcd_server(d) if kind == "etcd" else petcd_server(d)
    server.start()  # kills what it launched if the start fails
    try:
        yield server
    finally:
        server.stop()


@contextmanager
def three_members(kind: str, tmp: Path) -> Iterator[list[Server]]:
    """A running three-member cluster of `kind`, every member knowing the leader."""
    d = tmp / kind
    d.mkdir()
    members = etcd_cluster(d, 3) if kind == "etcd" else petcd_cluster(d, 3)
    try:
        yield members
    finally:
        for m in members:
            m.stop()


def endpoints(servers: list[Server]) -> str:
    """The comma-separated endpoint list the load generator takes."""
    return ",".join(s.endpoint for s in servers)


_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(servers: list[Server]) -> float:
    """User plus system CPU time the servers' processes have used so far."""
    total = 0.0
    for s in servers:
        if s.proc is None or s.proc.poll() is not None:
            continue
        fields = Path(f"/proc/{s.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / _TICK  # utime and stime, fields 14 and 15 of stat
    return total
