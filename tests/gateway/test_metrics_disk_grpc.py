"""etcd 3.4's gRPC byte counters and its defrag, backend snapshot, hash and
snapshot-save latency histograms: each has etcd's type, help string and
buckets (compared with a live etcd's /metrics), and each moves when its
operation happens in petcd."""

from __future__ import annotations

import os
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
from prometheus_client.parser import text_string_to_metric_families

from petcd.proto import rpc_pb2, rpc_pb2_grpc
from petcd.testing.harness import Server, etcdctl, free_port, petcd_joiner, petcd_server, wait_for

from .client import Http
from .test_health_metrics import scrape

# the metrics this module covers (counters under their family names, without _total)
HISTOGRAMS = [
    "etcd_disk_backend_defrag_duration_seconds", "etcd_disk_backend_snapshot_duration_seconds",
    "etcd_mvcc_hash_duration_seconds", "etcd_mvcc_hash_rev_duration_seconds",
    "etcd_snap_db_fsync_duration_seconds", "etcd_snap_db_save_total_duration_seconds",
    "etcd_snap_fsync_duration_seconds", "etcd_debugging_snap_save_total_duration_seconds",
    "etcd_debugging_snap_save_marshalling_duration_seconds",
]
COUNTERS = ["etcd_network_client_grpc_sent_bytes", "etcd_network_client_grpc_received_bytes"]
GAUGES = ["etcd_disk_defrag_inflight"]


def shape(url: str) -> dict[str, tuple[str, str, tuple[str, ...]]]:
    """name -> (type, help, the histogram's bucket bounds as served, in order)."""
    _, _, body = Http(url).request("GET", "/metrics")
    out = {}
    for fam in text_string_to_metric_families(body.decode()):
        bounds = tuple(s.labels["le"] for s in fam.samples if s.name.endswith("_bucket"))
        out[fam.name] = (fam.type, fam.documentation, bounds)
    return out


def test_types_help_and_buckets_match_etcd(petcd_gw: str, etcd: Server) -> None:
    mine, theirs = shape(petcd_gw), shape(etcd.client_url)
    for name in HISTOGRAMS + COUNTERS + GAUGES:
        assert name in theirs, f"etcd does not serve {name}"
        assert name in mine, f"petcd does not serve {name}"
        assert mine[name] == theirs[name], name
    for name in HISTOGRAMS:
        assert theirs[name][0] == "histogram" and len(theirs[name][2]) > 5, name


def test_grpc_bytes_count_each_message(petcd_gw: str) -> None:
    """A Put's request and answer, then a Range's answer, are counted at
    their encoded size, as etcd counts them (the 5-byte gRPC prefix aside)."""
    sent, received = "etcd_network_client_grpc_sent_bytes_total", "etcd_network_client_grpc_received_bytes_total"
    with grpc.insecure_channel(petcd_gw.removeprefix("http://")) as ch:
        kv = rpc_pb2_grpc.KVStub(ch)
        before = scrape(petcd_gw)
        put = rpc_pb2.PutRequest(key=b"bytes", value=b"x" * 10_000)
        put_resp = kv.Put(put, timeout=10)
        after = scrape(petcd_gw)
        assert after[received] - before[received] == put.ByteSize() >= 10_000
        assert after[sent] - before[sent] == put_resp.ByteSize() > 0
        rng = rpc_pb2.RangeRequest(key=b"bytes")
        range_resp = kv.Range(rng, timeout=10)
        final = scrape(petcd_gw)
        assert final[received] - after[received] == rng.ByteSize()
        assert final[sent] - after[sent] == range_resp.ByteSize() >= 10_000


def test_defrag_hash_and_snapshot_are_timed(petcd_gw: str) -> None:
    endpoint = petcd_gw.removeprefix("http://")
    count = "etcd_{}_duration_seconds_count".format
    with grpc.insecure_channel(endpoint) as ch:
        m = rpc_pb2_grpc.MaintenanceStub(ch)
        before = scrape(petcd_gw)
        assert before["etcd_disk_defrag_inflight"] == 0
        m.Defragment(rpc_pb2.DefragmentRequest(), timeout=30)
        after = scrape(petcd_gw)
        assert after[count("disk_backend_defrag")] == before[count("disk_backend_defrag")] + 1
        assert after["etcd_disk_backend_defrag_duration_seconds_sum"] > before["etcd_disk_backend_defrag_duration_seconds_sum"]
        assert after[count("mvcc_hash")] == before[count("mvcc_hash")]

        m.Hash(rpc_pb2.HashRequest(), timeout=10)
        after2 = scrape(petcd_gw)
        assert after2[count("mvcc_hash")] == after[count("mvcc_hash")] + 1
        assert after2[count("mvcc_hash_rev")] == after[count("mvcc_hash_rev")]
        m.HashKV(rpc_pb2.HashKVRequest(), timeout=10)
        after3 = scrape(petcd_gw)
        assert after3[count("mvcc_hash_rev")] == after2[count("mvcc_hash_rev")] + 1
        assert after3[count("mvcc_hash")] == after2[count("mvcc_hash")]

        blobs = list(m.Snapshot(rpc_pb2.SnapshotRequest(), timeout=30))
        assert len(blobs) >= 2 and blobs[-1].remaining_bytes == 0
        snap = wait_for(lambda: (lambda s: s if s[count("disk_backend_snapshot")] > after3[count("disk_backend_snapshot")]
                                 else None)(scrape(petcd_gw)), 30, "the snapshot to be timed")
        assert snap[count("disk_backend_snapshot")] == after3[count("disk_backend_snapshot")] + 1


def test_raft_snapshot_and_a_learner_saving_the_leaders_backend() -> None:
    """A leader with --snapshot-count 100 saves raft snapshot files (snap
    fsync and save timed); a learner joining after the leader compacted its
    log gets the leader's backend: the leader times the backend snapshot it
    sends, the learner the save and fsync of what it received."""
    with tempfile.TemporaryDirectory(prefix="petcd-snapmetrics-") as tmp:
        lead = petcd_server(Path(tmp), extra=["--snapshot-count", "100"]).start()
        new: Server | None = None
        try:
            kv = lead.kv()
            kv.Put(rpc_pb2.PutRequest(key=b"big", value=os.urandom(1_000_000)), timeout=30)

            def put(i: int) -> None:
                kv.Put(rpc_pb2.PutRequest(key=b"small/%05d" % i, value=b"v"), timeout=30)

            with ThreadPoolExecutor(16) as pool:  # past the 5000 entries kept behind a raft snapshot
                list(pool.map(put, range(5300)))

            def saved() -> dict[str, float] | None:
                """A scrape with no raft snapshot halfway through its save (each
                save observes the three), after at least 5 of them: one per 100
                entries applied, unless one is still being saved."""
                s = scrape(lead.client_url)
                saves = {s[f"{name}_count"] for name in (
                    "etcd_snap_fsync_duration_seconds", "etcd_debugging_snap_save_total_duration_seconds",
                    "etcd_debugging_snap_save_marshalling_duration_seconds")}
                return s if len(saves) == 1 and saves.pop() >= 5 else None

            lead_before = wait_for(saved, 30, "the raft snapshots to be timed")
            assert lead_before["etcd_snap_fsync_duration_seconds_sum"] > 0
            assert lead_before["etcd_snap_db_save_total_duration_seconds_count"] == 0

            peer = f"http://127.0.0.1:{free_port()}"
            out = etcdctl(lead.endpoint, "member", "add", "m2", f"--peer-urls={peer}", "--learner")
            initial = [ln for ln in out.stdout.splitlines() if ln.startswith("ETCD_INITIAL_CLUSTER=")][0]
            new = petcd_joiner(Path(tmp), "m2", peer, initial.split("=", 1)[1].strip('"')).start()
            last = Http(lead.client_url).post("/v3/kv/range", {"key": "eA=="})[1]["header"]["revision"]

            def caught_up() -> dict[str, float] | None:
                assert new is not None
                try:
                    rev = Http(new.client_url).post("/v3/kv/range", {"key": "eA==", "serializable": True})[1]["header"]
                except (OSError, KeyError, TypeError):
                    return None
                return scrape(new.client_url) if rev.get("revision") == last else None

            learner = wait_for(caught_up, 120, "the learner to catch up")
            for name in ("etcd_snap_db_fsync_duration_seconds", "etcd_snap_db_save_total_duration_seconds"):
                assert learner[f"{name}_count"] >= 1, name  # one, unless the leader had to send again
                assert learner[f"{name}_sum"] > 0, name
            lead_after = scrape(lead.client_url)
            sent = "etcd_disk_backend_snapshot_duration_seconds_count"
            assert lead_after[sent] >= lead_before[sent] + 1
            assert lead_after["etcd_snap_db_save_total_duration_seconds_count"] == 0
        finally:
            for m in [lead] + ([new] if new else []):
                m.stop()
