"""Process-wide operation counts and latency histograms, for /metrics
(petcd/api/metrics.py reads them when scraped, under etcd's names).

A leaf module: any layer may count here without importing anything of
petcd. Updating costs an addition or two; nothing is computed until a
scrape. Like etcd's Prometheus metrics, the numbers are per process (an
in-process cluster's members share them)."""

from __future__ import annotations

import bisect
import time
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
    has seen come (a member's first leader included, as etcd counts);
    etcd_server_slow_apply_total: applies that took over SLOW_APPLY_SECONDS;
    etcd_server_proposals_failed_total: proposals that never got their
    result (refused for want of a leader, timed out, cancelled);
    etcd_server_heartbeat_send_failures_total: heartbeats a leader sent
    later than twice the heartbeat interval after the previous one to the
    same follower (a loaded loop or a slow disk, as etcd's leader warns)."""

    leader_changes: int = 0
    slow_applies: int = 0
    proposals_failed: int = 0
    heartbeat_send_failures: int = 0
    # etcd_server_health_{success,failures}: /health answers, healthy or not
    health_success: int = 0
    health_failures: int = 0
    # etcd_server_read_indexes_failed_total: ReadIndex rounds raft refused
    # (no leader to ask); etcd_server_slow_read_indexes_total: rounds left
    # unanswered long enough to be asked again, and answers that came for a
    # round already asked again (out of date), as etcd counts its timed-out
    # and out-of-date read indexes
    read_indexes_failed: int = 0
    slow_read_indexes: int = 0
    # etcd_server_learner_promote_successes: learners this member, as
    # leader, promoted
    learner_promotes: int = 0
    # etcd_server_snapshot_apply_in_progress_total (a gauge): snapshots
    # from a leader being staged or installed right now
    snapshot_applying: int = 0


# etcd's warnApplyDuration
SLOW_APPLY_SECONDS = 0.1


class HeartbeatTimes:
    """When a leader last sent a heartbeat to each follower, to count the late
    ones (etcd_server_heartbeat_send_failures_total). Keyed by (from, to) so
    in-process members do not mix; forgotten on every leader change, since
    only a leader's consecutive heartbeats are comparable."""

    def __init__(self) -> None:
        self.last: dict[tuple[int, int], float] = {}
        self.max_gap = 0.2  # twice etcd's default heartbeat interval; the server sets its own

    def sent(self, frm: int, to: int) -> None:
        now = time.monotonic()
        prev = self.last.get((frm, to))
        self.last[(frm, to)] = now
        if prev is not None and now - prev > self.max_gap:
            SERVER.heartbeat_send_failures += 1

    def reset(self, max_gap: float) -> None:
        """A leader change; max_gap: twice the heartbeat interval, in seconds."""
        self.last.clear()
        self.max_gap = max_gap


@dataclass
class Leases:
    """etcd_debugging_lease_{granted,revoked,renewed}_total and the TTLs granted
    (etcd_debugging_lease_ttl_total, a histogram of seconds)."""

    granted: int = 0
    revoked: int = 0
    renewed: int = 0
    # etcd_debugging_server_lease_expired_total: leases the leader revoked
    # because they expired
    expired: int = 0
    ttls: Histogram = field(default_factory=lambda: Histogram(_exponential(1, 2, 24)))


@dataclass
class Watches:
    """etcd_debugging_mvcc_events_total: events handed to watch streams;
    etcd_debugging_mvcc_watch_stream_total (a gauge): Watch streams open;
    etcd_debugging_mvcc_pending_events_total (a gauge): events queued in
    streams' outboxes and not yet taken to be sent (once per watcher that
    gets them, as etcd counts)."""

    events: int = 0
    streams: int = 0
    pending: int = 0


@dataclass
class Wal:
    """etcd_disk_wal_write_bytes_total: bytes of records written to the WAL."""

    write_bytes: int = 0


@dataclass(slots=True)
class ClientBytes:
    """etcd_network_client_grpc_{sent,received}_bytes_total: the encoded
    size of every gRPC message written to and read from clients on the
    client port (the 5-byte length prefix aside, as etcd counts)."""

    sent: int = 0
    received: int = 0


@dataclass
class Calls:
    """RPCs started, by (type, service, method), and handled, by (type,
    service, method, code name)."""

    started: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    handled: Counter[tuple[str, str, str, str]] = field(default_factory=Counter)
    # grpc_server_msg_{received,sent}_total by (type, service, method):
    # messages read and written (a unary call's request and answer count 1)
    received: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    sent: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    # etcd_server_client_requests_total by (type: unary or stream, the
    # client's client-api-version metadata or "unknown"): calls started
    client_requests: Counter[tuple[str, str]] = field(default_factory=Counter)
    # grpc_server_handling_seconds by (type, service, method): kept only
    # with --metrics extensive, as etcd
    handling: dict[tuple[str, str, str], Histogram] = field(default_factory=dict)


# prometheus' default buckets, which go-grpc-prometheus uses
HANDLING_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


# etcd's buckets: 1 ms doubling 14 times (about 8 s)
WAL_FSYNC = Histogram(_exponential(0.001, 2, 14))
BACKEND_COMMIT = Histogram(_exponential(0.001, 2, 14))
# etcd's buckets for the rarer, longer operations: defrag 100 ms doubling
# 13 times; a backend snapshot's whole transfer 10 ms doubling 17 times;
# Hash and HashKV 10 ms doubling 15 times; a follower's save of the
# leader's backend (etcd_snap_db_save_total) 100 ms doubling 10 times
DEFRAG = Histogram(_exponential(0.1, 2, 13))
BACKEND_SNAPSHOT = Histogram(_exponential(0.01, 2, 17))
HASH = Histogram(_exponential(0.01, 2, 15))
HASH_REV = Histogram(_exponential(0.01, 2, 15))
SNAP_DB_SAVE = Histogram(_exponential(0.1, 2, 10))
# 1 ms doubling 14 times: the fsync of a received backend (.snap.db in
# etcd), a raft snapshot file's write and fsync, its encoding and its
# whole save (etcd_debugging_snap_save_{marshalling,total})
SNAP_DB_FSYNC = Histogram(_exponential(0.001, 2, 14))
SNAP_FSYNC = Histogram(_exponential(0.001, 2, 14))
SNAP_MARSHALLING = Histogram(_exponential(0.001, 2, 14))
SNAP_SAVE = Histogram(_exponential(0.001, 2, 14))
CLIENT_GRPC = ClientBytes()
MVCC = MvccOps()
SERVER = ServerEvents()
HEARTBEATS = HeartbeatTimes()
LEASES = Leases()
WATCHES = Watches()
WAL = Wal()
CALLS = Calls()
# etcd_network_peer_{sent,received}_bytes_total by peer member id: raft
# message frames written to (queued for) and read from each peer
PEER_SENT: Counter[int] = Counter()
PEER_RECEIVED: Counter[int] = Counter()
# etcd_network_peer_round_trip_time_seconds, by peer: etcd's buckets, 0.1 ms doubling
PEER_RTT_BUCKETS = _exponential(0.0001, 2, 16)
PEER_RTT: dict[int, Histogram] = {}
