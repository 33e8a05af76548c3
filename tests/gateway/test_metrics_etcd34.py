"""petcd's /metrics against a real etcd 3.4's: every metric both serve has
etcd's type, help string and label names; and the metrics that need a
cluster of their own (read index failures and slow rounds, learner
promotions) move when the thing happens."""

from __future__ import annotations

import json
import os
import signal
import tempfile
import threading
from pathlib import Path

import grpc
from prometheus_client.parser import text_string_to_metric_families

from petcd.proto import rpc_pb2, rpc_pb2_grpc
from petcd.testing.harness import (
    Server,
    etcdctl,
    free_port,
    petcd_cluster,
    petcd_joiner,
    petcd_server,
    wait_for,
)

from .client import Http
from .test_health_metrics import b64, scrape

# the etcd 3.4 metrics petcd serves; each must be in both scrapes (counters
# as the parser names their families, without _total)
ETCD_NAMES = [
    "etcd_debugging_mvcc_put", "etcd_debugging_mvcc_delete", "etcd_debugging_mvcc_range",
    "etcd_debugging_mvcc_txn", "etcd_mvcc_put", "etcd_mvcc_delete", "etcd_mvcc_range", "etcd_mvcc_txn",
    "etcd_debugging_mvcc_watch_stream_total", "etcd_debugging_mvcc_slow_watcher_total",
    "etcd_debugging_mvcc_pending_events_total", "etcd_debugging_mvcc_watcher_total", "etcd_debugging_mvcc_events",
    "etcd_debugging_server_lease_expired", "etcd_server_health_success", "etcd_server_health_failures",
    "etcd_disk_wal_write_bytes_total", "etcd_server_read_indexes_failed", "etcd_server_slow_read_indexes",
    "etcd_server_learner_promote_successes", "etcd_server_snapshot_apply_in_progress_total",
    "etcd_server_client_requests", "grpc_server_msg_received", "grpc_server_msg_sent",
    "grpc_server_started", "grpc_server_handled", "os_fd_used", "os_fd_limit",
    "etcd_server_has_leader", "etcd_server_is_leader", "etcd_server_leader_changes_seen",
    "etcd_disk_wal_fsync_duration_seconds", "etcd_debugging_lease_granted", "etcd_debugging_lease_ttl_total",
]


def families(url: str) -> dict[str, tuple[str, str, frozenset[str]]]:
    """name -> (type, help, label names seen on its samples, le aside)."""
    _, _, body = Http(url).request("GET", "/metrics")
    out = {}
    for fam in text_string_to_metric_families(body.decode()):
        labels = frozenset(k for s in fam.samples for k in s.labels if k != "le")
        out[fam.name] = (fam.type, fam.documentation, labels)
    return out


def exercise(url: str) -> None:
    """Puts, a range, a delete, a txn, a lease, a watch and /health, so that
    labelled metrics have samples on both servers."""
    h = Http(url)
    assert h.post("/v3/kv/put", {"key": b64("cmp"), "value": b64("v")})[0] == 200
    assert h.post("/v3/kv/range", {"key": b64("cmp")})[0] == 200
    assert h.post("/v3/kv/deleterange", {"key": b64("cmp")})[0] == 200
    assert h.post("/v3/kv/txn", {"success": [{"request_put": {"key": b64("cmp"), "value": b64("w")}}]})[0] == 200
    assert h.post("/v3/lease/grant", {"TTL": "60"})[0] == 200
    assert h.request("GET", "/health")[0] == 200
    endpoint = url.removeprefix("http://")
    with grpc.insecure_channel(endpoint) as ch:
        stream = rpc_pb2_grpc.WatchStub(ch).Watch(
            iter([rpc_pb2.WatchRequest(create_request=rpc_pb2.WatchCreateRequest(key=b"cmp"))]), timeout=10)
        assert next(iter(stream)).created
        stream.cancel()


def test_names_types_help_and_labels_match_etcd(petcd_gw: str, etcd: Server) -> None:
    exercise(petcd_gw)
    exercise(etcd.client_url)
    mine, theirs = families(petcd_gw), families(etcd.client_url)
    missing = [n for n in ETCD_NAMES if n not in mine or n not in theirs]
    assert not missing, missing
    for name in sorted(mine.keys() & theirs.keys()):
        mtype, mhelp, mlabels = mine[name]
        ttype, thelp, tlabels = theirs[name]
        assert (mtype, mhelp) == (ttype, thelp), name
        if mlabels and tlabels:  # a labelled family with no samples yet shows no labels
            assert mlabels == tlabels, name


def _follower_and_leader(ms: list[Server]) -> tuple[Server, Server]:
    lead = wait_for(lambda: next((m for m in ms if scrape(m.client_url)["etcd_server_is_leader"] == 1), None),
                    30, "a leader")
    return next(m for m in ms if m is not lead), lead


def test_read_index_slow_then_failed() -> None:
    """A follower's linearizable read while the leader is stopped: its round
    goes unanswered past the retry interval (slow), and once the follower
    has lost the leader a read's round is refused by raft (failed)."""
    with tempfile.TemporaryDirectory(prefix="petcd-readindex-") as tmp:
        # a long election timeout: the read must reach the follower and wait
        # out a retry while it still knows the leader (a loaded CI machine
        # once took longer than the default second to get it there)
        ms = petcd_cluster(Path(tmp), 2, extra=["--election-timeout", "3000"])
        try:
            follower, lead = _follower_and_leader(ms)
            assert lead.proc is not None
            url = follower.client_url
            before = scrape(url)
            errors: list[grpc.StatusCode] = []

            def read(timeout: float) -> None:
                try:
                    follower.kv().Range(rpc_pb2.RangeRequest(key=b"x"), timeout=timeout)
                except grpc.RpcError as exc:
                    errors.append(exc.code())

            os.kill(lead.proc.pid, signal.SIGSTOP)
            try:
                t = threading.Thread(target=read, args=(30,))
                t.start()
                wait_for(lambda: scrape(url)["etcd_server_slow_read_indexes_total"]
                         > before["etcd_server_slow_read_indexes_total"], 30, "a slow read index")
                # the follower loses the leader (an election it cannot win alone)
                wait_for(lambda: scrape(url)["etcd_server_has_leader"] == 0, 30, "the follower to lose its leader")
                read(3)
                wait_for(lambda: scrape(url)["etcd_server_read_indexes_failed_total"]
                         > before["etcd_server_read_indexes_failed_total"], 30, "a failed read index")
            finally:
                os.kill(lead.proc.pid, signal.SIGCONT)
            t.join(60)
            assert errors  # the read while there was no leader could not succeed
        finally:
            for m in ms:
                m.stop()


def test_learner_promotion_counted_by_the_leader() -> None:
    with tempfile.TemporaryDirectory(prefix="petcd-promote-") as tmp:
        lead = petcd_server(Path(tmp)).start()
        new: Server | None = None
        try:
            assert scrape(lead.client_url)["etcd_server_learner_promote_successes_total"] == 0
            peer = f"http://127.0.0.1:{free_port()}"
            out = etcdctl(lead.endpoint, "member", "add", "m2", f"--peer-urls={peer}", "--learner")
            initial = [ln for ln in out.stdout.splitlines() if ln.startswith("ETCD_INITIAL_CLUSTER=")][0]
            new = petcd_joiner(Path(tmp), "m2", peer, initial.split("=", 1)[1].strip('"')).start()
            new_id = f"{_id(new):x}"
            wait_for(lambda: etcdctl(lead.endpoint, "member", "promote", new_id, check=False).returncode == 0,
                     60, "the learner to be promoted")
            listed = json.loads(etcdctl(lead.endpoint, "member", "list", "-w", "json").stdout)["members"]
            assert len(listed) == 2 and not any(m.get("isLearner") for m in listed)
            assert scrape(lead.client_url)["etcd_server_learner_promote_successes_total"] == 1
            assert scrape(new.client_url)["etcd_server_learner_promote_successes_total"] == 0
        finally:
            for m in [lead] + ([new] if new else []):
                m.stop()


def _id(m: Server) -> int:
    return int(m.maintenance().Status(rpc_pb2.StatusRequest(), timeout=10).header.member_id)


def _in_progress(url: str) -> float | None:
    """etcd_server_snapshot_apply_in_progress_total, None while the member does not serve yet."""
    try:
        return scrape(url)["etcd_server_snapshot_apply_in_progress_total"]
    except (OSError, AssertionError, KeyError):
        return None


def test_snapshot_apply_in_progress_while_a_learner_installs_the_leaders_backend() -> None:
    """A learner joining after the leader compacted its log gets the
    leader's (40 MB) backend as a snapshot: the gauge is 1 while it stages
    and installs it, 0 before and after."""
    from concurrent.futures import ThreadPoolExecutor

    with tempfile.TemporaryDirectory(prefix="petcd-snapapply-") as tmp:
        lead = petcd_server(Path(tmp), extra=["--snapshot-count", "100"]).start()
        new: Server | None = None
        try:
            kv = lead.kv()
            for i in range(40):
                kv.Put(rpc_pb2.PutRequest(key=b"big/%02d" % i, value=os.urandom(1_000_000)), timeout=30)

            def put(i: int) -> None:
                kv.Put(rpc_pb2.PutRequest(key=b"small/%05d" % i, value=b"v"), timeout=30)

            with ThreadPoolExecutor(16) as pool:  # past the 5000 entries kept behind a raft snapshot
                list(pool.map(put, range(5300)))
            peer = f"http://127.0.0.1:{free_port()}"
            out = etcdctl(lead.endpoint, "member", "add", "m2", f"--peer-urls={peer}", "--learner")
            initial = [ln for ln in out.stdout.splitlines() if ln.startswith("ETCD_INITIAL_CLUSTER=")][0]
            new = petcd_joiner(Path(tmp), "m2", peer, initial.split("=", 1)[1].strip('"')).launch()
            url = new.client_url
            seen: set[float] = set()
            last = Http(lead.client_url).post("/v3/kv/range", {"key": b64("x")})[1]["header"]["revision"]

            def caught_up() -> bool:
                value = _in_progress(url)
                if value is not None:
                    seen.add(value)
                try:
                    rev = Http(url).post("/v3/kv/range", {"key": b64("x"), "serializable": True})[1]["header"]
                except (OSError, KeyError, TypeError):
                    return False
                return rev.get("revision") == last

            wait_for(caught_up, 120, "the learner to catch up", interval=0.005)
            assert 1 in seen, seen
            assert _in_progress(url) == 0
            assert _in_progress(lead.client_url) == 0
        finally:
            for m in [lead] + ([new] if new else []):
                m.stop()
