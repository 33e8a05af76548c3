"""SIGKILL petcd under a concurrent write load, restart it: every write that
was acknowledged is there, with the revision it was acknowledged with."""

from __future__ import annotations

import random
import threading
import time
from pathlib import Path

import grpc
import pytest

from petcd.proto import rpc_pb2, rpc_pb2_grpc
from petcd.testing.harness import Server, petcd_server, wait_for

pytestmark = pytest.mark.timeout(600)

WRITERS = 4


def _load(server: Server, stop: threading.Event, acked: dict[bytes, int], lock: threading.Lock, tag: str) -> None:
    ch = grpc.insecure_channel(server.endpoint)
    kv = rpc_pb2_grpc.KVStub(ch)
    n = 0
    try:
        while not stop.is_set():
            key = f"crash/{tag}/{n:06d}".encode()
            n += 1
            try:
                resp = kv.Put(rpc_pb2.PutRequest(key=key, value=key * 3), timeout=5)
            except grpc.RpcError:
                return  # the server died under us: this write was never acknowledged
            with lock:
                acked[key] = resp.header.revision
    finally:
        ch.close()


def test_acknowledged_writes_survive_sigkill(tmp_path: Path) -> None:
    rng = random.Random(7)
    server = petcd_server(tmp_path)
    acked: dict[bytes, int] = {}
    lock = threading.Lock()
    for round_no in range(3):
        server.start()
        stop = threading.Event()
        threads = [
            threading.Thread(target=_load, args=(server, stop, acked, lock, f"{round_no}-{w}"), daemon=True)
            for w in range(WRITERS)
        ]
        start_count = len(acked)
        for t in threads:
            t.start()
        wait_for(lambda: len(acked) >= start_count + 50, 60, "some writes to be acknowledged")  # noqa: B023
        time.sleep(rng.uniform(0.0, 0.3))  # a random kill point within the load
        server.kill()
        stop.set()
        for t in threads:
            t.join(timeout=30)

    server.start()
    try:
        kv = server.kv()
        resp = kv.Range(rpc_pb2.RangeRequest(key=b"crash/", range_end=b"crash0"), timeout=30)
        found = {kv_.key: kv_.mod_revision for kv_ in resp.kvs}
        with lock:
            missing = [k for k in acked if k not in found]
            wrong = [k for k, rev in acked.items() if k in found and found[k] != rev]
        assert not missing, f"{len(missing)} acknowledged writes lost, e.g. {missing[:3]}"
        assert not wrong, f"revisions changed for {wrong[:3]}"
        revs = sorted(found.values())
        assert len(set(revs)) == len(revs)  # one revision per put, none reused
    finally:
        server.stop()
