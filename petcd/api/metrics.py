"""/metrics: Prometheus text through prometheus-client, with etcd's metric
names and types for what petcd knows.

Most values are read from the server when scraped (a collector, not
counters updated on every request), so a scrape costs a few microseconds
per metric and serving costs nothing. Calls are counted per method and
code (grpc_server_started_total / grpc_server_handled_total) by the
handlers themselves: the gRPC side registers them wrapped by ``counted``,
and the gateway calls those same handlers.
"""

from __future__ import annotations

import asyncio
import os
import resource
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector

from petcd import stats
from petcd.http2.grpc import Messages

if TYPE_CHECKING:
    from petcd.server.etcd_server import EtcdServer

# what etcd serves (the classic text format, which generate_latest writes)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_CODE_NAMES = [
    "OK", "Canceled", "Unknown", "InvalidArgument", "DeadlineExceeded", "NotFound", "AlreadyExists",
    "PermissionDenied", "ResourceExhausted", "FailedPrecondition", "Aborted", "OutOfRange",
    "Unimplemented", "Internal", "Unavailable", "DataLoss", "Unauthenticated",
]


def counted(impl: Callable[..., Any], kind: str, path: str, extensive: bool = False) -> Callable[..., Any]:
    """impl (a unary coroutine function, or an async generator function for
    streams) counted in grpc_server_started_total and
    grpc_server_handled_total under path ("/etcdserverpb.KV/Range") and
    kind (unary, server_stream, bidi_stream). A call whose client went
    away counts as Canceled. extensive (etcd's --metrics extensive) also
    times every call into grpc_server_handling_seconds; without it a call
    costs no clock read."""
    service, _, method = path.lstrip("/").partition("/")
    started_key = (kind, service, method)
    started, handled = stats.CALLS.started, stats.CALLS.handled
    received, sent, requests = stats.CALLS.received, stats.CALLS.sent, stats.CALLS.client_requests
    if extensive:
        timing = stats.CALLS.handling.setdefault(started_key, stats.Histogram(stats.HANDLING_BUCKETS))
        return _timed(counted(impl, kind, path), kind, timing)

    def done(code: int) -> None:
        name = _CODE_NAMES[code] if 0 <= code < len(_CODE_NAMES) else "Unknown"
        handled[(kind, service, method, name)] += 1

    if kind == "unary":
        async def unary(request: Any, context: Any) -> Any:
            started[started_key] += 1
            received[started_key] += 1
            requests[("unary", _api_version(context))] += 1
            try:
                resp = await impl(request, context)
            except asyncio.CancelledError:
                done(1)
                raise
            except Exception as exc:
                done(_exc_code(exc))
                raise
            done(0)
            sent[started_key] += 1
            return resp

        return unary

    async def streaming(request: Any, context: Any) -> AsyncIterator[Any]:
        started[started_key] += 1
        requests[("stream", _api_version(context))] += 1
        if kind == "bidi_stream":
            request = _counting(request, received, started_key)
        else:
            received[started_key] += 1
        code = 0
        gen = impl(request, context)
        try:
            async for item in gen:
                # a Messages (a list of messages written at once) counts each
                sent[started_key] += len(item) if type(item) is Messages else 1
                yield item
        except (asyncio.CancelledError, GeneratorExit):
            code = 1
            raise
        except Exception as exc:
            code = _exc_code(exc)
            raise
        finally:
            done(code)
            await gen.aclose()

    return streaming


async def _counting(requests: AsyncIterator[Any], received: Counter[tuple[str, str, str]],
                    key: tuple[str, str, str]) -> AsyncIterator[Any]:
    """A stream's requests, each counted in grpc_server_msg_received_total."""
    async for req in requests:
        received[key] += 1
        yield req


def _api_version(context: Any) -> str:
    """etcd_server_client_requests_total's client_api_version: what the
    client sent as client-api-version metadata (etcd's clients send their
    major.minor), else "unknown" as etcd labels it."""
    for k, v in context.headers:
        if k == b"client-api-version":
            return str(v.decode("latin-1"))
    return "unknown"


def _timed(impl: Callable[..., Any], kind: str, h: stats.Histogram) -> Callable[..., Any]:
    """impl with the seconds from its start to its end (a stream's whole
    life, as go-grpc-prometheus) observed into h, whatever the outcome."""
    clock = time.perf_counter
    if kind == "unary":
        async def unary(request: Any, context: Any) -> Any:
            t0 = clock()
            try:
                return await impl(request, context)
            finally:
                h.observe(clock() - t0)

        return unary

    async def streaming(request: Any, context: Any) -> AsyncIterator[Any]:
        t0 = clock()
        gen = impl(request, context)
        try:
            async for item in gen:
                yield item
        finally:
            h.observe(clock() - t0)
            await gen.aclose()

    return streaming


def _exc_code(exc: BaseException) -> int:
    """The gRPC status number an exception from a handler ends its call with."""
    code = getattr(exc, "code", None)
    if isinstance(code, int):
        return int(code)
    from petcd.api.errors import status_of

    return int(status_of(exc)[0])


class ServerCollector(Collector):
    """etcd's server, mvcc, lease and gRPC metrics from a running EtcdServer."""

    def __init__(self, server: EtcdServer) -> None:
        self.s = server
        self.calls = stats.CALLS

    def collect(self) -> Iterator[Metric]:
        s = self.s
        leader = _safe(lambda: s.leader, 0)
        yield _gauge("etcd_server_has_leader", "Whether or not a leader exists. 1 is existence, 0 is not.",
                     1 if leader else 0)
        yield _gauge("etcd_server_is_leader", "Whether or not this member is a leader. 1 if is, 0 otherwise.",
                     1 if _safe(lambda: s.node.is_leader(), False) else 0)
        yield _gauge("etcd_server_is_learner", "Whether or not this member is a learner. 1 if is, 0 otherwise.",
                     1 if _safe(lambda: s.membership.is_learner(), False) else 0)
        sid = GaugeMetricFamily("etcd_server_id", "Server or member ID in hexadecimal format. 1 for 'server_id' label with current ID.",
                                labels=["server_id"])
        sid.add_metric([format(_safe(lambda: s.member_id, 0), "x")], 1)
        yield sid
        from petcd.server.etcd_server import ETCD_VERSION

        ver = GaugeMetricFamily("etcd_server_version", "Which version is running. 1 for 'server_version' label with current version.",
                                labels=["server_version"])
        ver.add_metric([ETCD_VERSION], 1)
        yield ver
        cver = GaugeMetricFamily("etcd_cluster_version", "Which version is running. 1 for 'cluster_version' label with current cluster version",
                                 labels=["cluster_version"])
        cluster_version = _safe(lambda: s.membership.cluster_version, None)
        if cluster_version is not None:  # etcd has no sample until the version is set
            cver.add_metric([cluster_version.rsplit(".", 1)[0]], 1)
        yield cver
        yield CounterMetricFamily("etcd_server_leader_changes_seen_total", "The number of leader changes seen.",
                                  value=stats.SERVER.leader_changes)
        yield _gauge("etcd_server_proposals_committed_total", "The total number of consensus proposals committed.",
                     _safe(lambda: s.node.commit, 0))
        yield _gauge("etcd_server_proposals_applied_total", "The total number of consensus proposals applied.",
                     _safe(lambda: s.applied_index, 0))
        yield _gauge("etcd_server_proposals_pending", "The current number of pending proposals to commit.",
                     _safe(lambda: len(s.wait), 0))
        srv = stats.SERVER
        for name, doc, value in (
            ("etcd_server_proposals_failed_total", "The total number of failed proposals seen.", srv.proposals_failed),
            ("etcd_server_slow_apply_total",
             "The total number of slow apply requests (likely overloaded from slow disk).", srv.slow_applies),
            ("etcd_server_heartbeat_send_failures_total",
             "The total number of leader heartbeat send failures (likely overloaded from slow disk).",
             srv.heartbeat_send_failures),
            ("etcd_server_health_success", "The total number of successful health checks", srv.health_success),
            ("etcd_server_health_failures", "The total number of failed health checks", srv.health_failures),
            ("etcd_server_read_indexes_failed_total", "The total number of failed read indexes seen.",
             srv.read_indexes_failed),
            ("etcd_server_slow_read_indexes_total",
             "The total number of pending read indexes not in sync with leader's or timed out read index requests.",
             srv.slow_read_indexes),
            ("etcd_server_learner_promote_successes",
             "The total number of successful learner promotions while this member is leader.", srv.learner_promotes),
        ):
            yield CounterMetricFamily(name, doc, value=value)
        yield _gauge("etcd_server_snapshot_apply_in_progress_total",
                     "1 if the server is applying the incoming snapshot. 0 if none.", min(srv.snapshot_applying, 1))
        requests = CounterMetricFamily("etcd_server_client_requests_total",
                                       "The total number of client requests per client version.",
                                       labels=["type", "client_api_version"])
        for ckey, n in sorted(self.calls.client_requests.items()):
            requests.add_metric(list(ckey), n)
        yield requests
        yield _gauge("etcd_server_quota_backend_bytes", "Current backend storage quota size in bytes.",
                     _safe(lambda: s.cfg.quota_bytes(), 0))
        size = _safe(lambda: s.backend.size(), 0)
        yield _gauge("etcd_mvcc_db_total_size_in_bytes", "Total size of the underlying database physically allocated in bytes.", size)
        yield _gauge("etcd_debugging_mvcc_db_total_size_in_bytes", "Total size of the underlying database physically allocated in bytes.", size)
        yield _gauge("etcd_mvcc_db_total_size_in_use_in_bytes", "Total size of the underlying database logically in use in bytes.",
                     _safe(lambda: s.backend.size_in_use(), 0))
        yield _gauge("etcd_debugging_mvcc_keys_total", "Total number of keys.", _safe(lambda: len(s.kv.index), 0))
        yield _gauge("etcd_debugging_mvcc_current_revision", "The current revision of store.", _safe(lambda: s.kv.rev, 0))
        yield _gauge("etcd_debugging_mvcc_compact_revision", "The revision of the last compaction in store.",
                     _safe(lambda: s.kv.compact_rev, 0))
        yield _gauge("etcd_debugging_lease_total", "The number of leases.", _safe(lambda: len(s.lessor.leases), 0))
        leases = stats.LEASES
        for name, doc, value in (
            ("etcd_debugging_lease_granted_total", "The total number of granted leases.", leases.granted),
            ("etcd_debugging_lease_revoked_total", "The total number of revoked leases.", leases.revoked),
            ("etcd_debugging_lease_renewed_total", "The number of renewed leases seen by the leader.", leases.renewed),
            ("etcd_debugging_server_lease_expired_total", "The total number of expired leases.", leases.expired),
        ):
            yield CounterMetricFamily(name, doc, value=value)
        yield _histogram("etcd_debugging_lease_ttl_total", "Bucketed histogram of lease TTLs.", leases.ttls)
        yield _gauge("etcd_debugging_mvcc_watcher_total", "Total number of watchers.",
                     _safe(lambda: s.watchable.watcher_count(), 0))
        yield CounterMetricFamily("etcd_debugging_mvcc_events_total", "Total number of events sent by this member.",
                                  value=stats.WATCHES.events)
        yield _gauge("etcd_debugging_mvcc_watch_stream_total", "Total number of watch streams.", stats.WATCHES.streams)
        yield _gauge("etcd_debugging_mvcc_slow_watcher_total", "Total number of unsynced slow watchers.",
                     _safe(lambda: s.watchable.unsynced_count(), 0))
        yield _gauge("etcd_debugging_mvcc_pending_events_total", "Total number of pending events to be sent.",
                     stats.WATCHES.pending)
        sent = CounterMetricFamily("etcd_network_peer_sent_bytes_total", "The total number of bytes sent to peers.",
                                   labels=["To"])
        for peer, n in sorted(stats.PEER_SENT.items()):
            sent.add_metric([format(peer, "x")], n)
        yield sent
        received = CounterMetricFamily("etcd_network_peer_received_bytes_total",
                                       "The total number of bytes received from peers.", labels=["From"])
        for peer, n in sorted(stats.PEER_RECEIVED.items()):
            received.add_metric([format(peer, "x")], n)
        yield received
        rtt = HistogramMetricFamily("etcd_network_peer_round_trip_time_seconds",
                                    "Round-Trip-Time histogram between peers", labels=["To"])
        for peer, h in sorted(stats.PEER_RTT.items()):
            rtt.add_metric([format(peer, "x")], [(_bound(b), n) for b, n in h.cumulative()], h.sum)
        yield rtt
        yield _histogram("etcd_disk_wal_fsync_duration_seconds",
                         "The latency distributions of fsync called by WAL.", stats.WAL_FSYNC)
        # a gauge in etcd 3.4
        yield _gauge("etcd_disk_wal_write_bytes_total", "Total number of bytes written in WAL.", stats.WAL.write_bytes)
        yield _histogram("etcd_disk_backend_commit_duration_seconds",
                         "The latency distributions of commit called by backend.", stats.BACKEND_COMMIT)
        for hname, hdoc, h in (
            ("etcd_disk_backend_defrag_duration_seconds", "The latency distribution of backend defragmentation.",
             stats.DEFRAG),
            ("etcd_disk_backend_snapshot_duration_seconds", "The latency distribution of backend snapshots.",
             stats.BACKEND_SNAPSHOT),
            ("etcd_mvcc_hash_duration_seconds", "The latency distribution of storage hash operation.", stats.HASH),
            ("etcd_mvcc_hash_rev_duration_seconds", "The latency distribution of storage hash by revision operation.",
             stats.HASH_REV),
            # etcd's help strings, missing periods included
            ("etcd_snap_db_fsync_duration_seconds", "The latency distributions of fsyncing .snap.db file",
             stats.SNAP_DB_FSYNC),
            ("etcd_snap_db_save_total_duration_seconds", "The total latency distributions of v3 snapshot save",
             stats.SNAP_DB_SAVE),
            ("etcd_snap_fsync_duration_seconds", "The latency distributions of fsync called by snap.", stats.SNAP_FSYNC),
            ("etcd_debugging_snap_save_marshalling_duration_seconds",
             "The marshalling cost distributions of save called by snapshot.", stats.SNAP_MARSHALLING),
            ("etcd_debugging_snap_save_total_duration_seconds",
             "The total latency distributions of save called by snapshot.", stats.SNAP_SAVE),
        ):
            yield _histogram(hname, hdoc, h)
        yield _gauge("etcd_disk_defrag_inflight",
                     "Whether or not defrag is active on the member. 1 means active, 0 means not.",
                     1 if _safe(lambda: s.backend_upkeep.defragmenting(), False) else 0)
        yield CounterMetricFamily("etcd_network_client_grpc_sent_bytes_total",
                                  "The total number of bytes sent to grpc clients.", value=stats.CLIENT_GRPC.sent)
        yield CounterMetricFamily("etcd_network_client_grpc_received_bytes_total",
                                  "The total number of bytes received from grpc clients.",
                                  value=stats.CLIENT_GRPC.received)
        ops = stats.MVCC
        for name, doc, value in (
            ("range", "Total number of ranges seen by this member.", ops.range),
            ("put", "Total number of puts seen by this member.", ops.put),
            ("delete", "Total number of deletes seen by this member.", ops.delete),
            ("txn", "Total number of txns seen by this member.", ops.txn),
        ):
            # etcd 3.4 serves each under both names
            yield CounterMetricFamily(f"etcd_mvcc_{name}_total", doc, value=value)
            yield CounterMetricFamily(f"etcd_debugging_mvcc_{name}_total", doc, value=value)
        started = CounterMetricFamily("grpc_server_started_total", "Total number of RPCs started on the server.",
                                      labels=["grpc_type", "grpc_service", "grpc_method"])
        for key, n in sorted(self.calls.started.items()):
            started.add_metric(list(key), n)
        yield started
        handled = CounterMetricFamily("grpc_server_handled_total",
                                      "Total number of RPCs completed on the server, regardless of success or failure.",
                                      labels=["grpc_type", "grpc_service", "grpc_method", "grpc_code"])
        for hkey, n in sorted(self.calls.handled.items()):
            handled.add_metric(list(hkey), n)
        yield handled
        for mname, mdoc, counts in (
            ("grpc_server_msg_received_total", "Total number of RPC stream messages received on the server.",
             self.calls.received),
            ("grpc_server_msg_sent_total", "Total number of gRPC stream messages sent by the server.", self.calls.sent),
        ):
            msgs = CounterMetricFamily(mname, mdoc, labels=["grpc_type", "grpc_service", "grpc_method"])
            for mkey, n in sorted(counts.items()):
                msgs.add_metric(list(mkey), n)
            yield msgs
        yield from _fds()
        if self.calls.handling:
            seconds = HistogramMetricFamily(
                "grpc_server_handling_seconds",
                "Histogram of response latency (seconds) of gRPC that had been application-level handled by the server.",
                labels=["grpc_type", "grpc_service", "grpc_method"])
            for skey, h in sorted(self.calls.handling.items()):
                seconds.add_metric(list(skey), [(_bound(b), n) for b, n in h.cumulative()], h.sum)
            yield seconds


def _fds() -> Iterator[Metric]:
    """os_fd_used and os_fd_limit (as etcd): descriptors open in this
    process and its soft limit, read at the scrape (nothing where the
    platform has no /proc)."""
    try:
        used = len(os.listdir("/proc/self/fd"))
        limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    except OSError:
        return
    yield _gauge("os_fd_used", "The number of used file descriptors.", used)
    yield _gauge("os_fd_limit", "The file descriptor limit.", limit)


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)


def _histogram(name: str, doc: str, h: stats.Histogram) -> HistogramMetricFamily:
    buckets = [(_bound(b), n) for b, n in h.cumulative()]
    return HistogramMetricFamily(name, doc, buckets=buckets, sum_value=h.sum)


def _bound(b: float) -> str:
    return "+Inf" if b == float("inf") else repr(b)


def _safe(fn: Any, default: Any) -> Any:
    """A value read from a server that may be starting or stopping."""
    try:
        return fn()
    except Exception:
        return default


class Metrics:
    """One server's registry: its own metrics plus process, platform and
    garbage-collector metrics (process_resident_memory_bytes, which
    ``etcdctl check datascale`` reads, among them)."""

    def __init__(self, server: EtcdServer) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(ServerCollector(server))
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)

    def render(self) -> bytes:
        return generate_latest(self.registry)
