"""A member killed (SIGKILL) right after a defrag that ran while writes and
raft snapshots went on keeps every acknowledged write.

The defrag swaps in a copy of the state committed when it started, with the
writes made since replayed as the open batch: until that batch commits, the
file on disk is older than the last commit was. Raft snapshots (which
release WAL segments) are held back while a defrag runs, so the WAL still
holds everything above the copy's index and the restart replays it.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import grpc

from petcd.proto import rpc_pb2
from petcd.testing.harness import petcd_server
from tests.cluster.test_defrag_keeps_leader import fill_backend


def test_kill_after_a_defrag_under_writes_loses_no_acknowledged_write(tmp_path: Path) -> None:
    server = petcd_server(tmp_path, extra=["--snapshot-count", "50"]).start()
    try:
        server.kv().Put(rpc_pb2.PutRequest(key=b"first", value=b"1"), timeout=10)
        assert server.stop() == 0
        fill_backend(server.data_dir / "member" / "snap" / "db", 256)
        server.start()
        kv = server.kv()
        acked: list[bytes] = []
        stop = threading.Event()

        def writer() -> None:
            i = 0
            while not stop.is_set():
                key = b"w/%06d" % i
                try:
                    kv.Put(rpc_pb2.PutRequest(key=key, value=os.urandom(200)), timeout=10)
                except grpc.RpcError:
                    return  # the kill
                acked.append(key)
                i += 1

        t = threading.Thread(target=writer)
        t.start()
        try:
            deadline = time.monotonic() + 30
            while len(acked) < 100 and time.monotonic() < deadline:
                time.sleep(0.01)
            server.maintenance().Defragment(rpc_pb2.DefragmentRequest(), timeout=120)
            n = len(acked)
            while len(acked) < n + 60 and time.monotonic() < deadline + 30:  # past a snapshot_count
                time.sleep(0.01)
            server.kill()
        finally:
            stop.set()
            t.join(30)
        assert len(acked) > 160
        server.start()
        kv = server.kv()
        got = kv.Range(rpc_pb2.RangeRequest(key=b"w/", range_end=b"w0", keys_only=True), timeout=30)
        present = {x.key for x in got.kvs}
        missing = [k for k in acked if k not in present]
        assert not missing, f"{len(missing)} acknowledged writes lost, first {missing[:3]}"
        big = kv.Range(rpc_pb2.RangeRequest(key=b"big/", range_end=b"big0", count_only=True), timeout=30)
        assert big.count == 256
    finally:
        server.stop()
