"""Process-wide operation counts and latency histograms, for /metrics
(petcd/api/metrics.py reads them when scraped, under etcd's names).

A leaf module: any layer may count here without importing anything of
petcd. Updating costs an addition or two; nothing is computed until a
scrape. Like etcd's Prometheus metrics, the numbers are per process (an
in-process cluster's members share them)."""

from __future__ import annotations

import bisect
from collections import Counter
from dataclasses import dataclass, field


def _exponential(start: float, factor: float, count: int) -> tuple[float, ...]:
    return tuple(start * factor**i for i in range(count))


@dataclass
class Histogram:
    """Observations counted into fixed upper bounds (seconds), plus sum and count."""

    bounds: tuple[float, ...]
    counts: list[int] = field(default_factory=list)
    sum: float = 0.0
    count: int = 0

    def __post_init__(self) -> None:
        if not self.counts:
            self.counts = [0] * (len(self.bounds) + 1)  # the last one: above every bound

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value
        self.count += 1

    def cumulative(self) -> list[tuple[float, int]]:
        """(upper bound, observations at or below it), +Inf last."""
        out: list[tuple[float, int]] = []
        total = 0
        for bound, n in zip((*self.bounds, float("inf")), self.counts, strict=True):
            total += n
            out.append((bound, total))
        return out


@dataclass
class MvccOps:
    """etcd_mvcc_{range,put,delete,txn}_total: operations applied to the store."""

    range: int = 0
    put: int = 0
    delete: int = 0
    txn: int = 0


@dataclass
class ServerEvents:
    """etcd_server_leader_changes_seen_total: leaders this process's member
    has seen come (a member's first leader included, as etcd counts)."""

    leader_changes: int = 0


@dataclass
class Calls:
    """RPCs started, by (type, service, method), and handled, by (type,
    service, method, code name)."""

    started: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    handled: Counter[tuple[str, str, str, str]] = field(default_factory=Counter)


# etcd's buckets: 1 ms doubling 14 times (about 8 s)
WAL_FSYNC = Histogram(_exponential(0.001, 2, 14))
BACKEND_COMMIT = Histogram(_exponential(0.001, 2, 14))
MVCC = MvccOps()
SERVER = ServerEvents()
CALLS = Calls()
