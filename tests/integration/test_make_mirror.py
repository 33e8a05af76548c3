"""`etcdctl make-mirror` between etcd and petcd, both ways, while the source
keeps taking writes: afterwards both hold the same keys and values."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from petcd.proto import rpc_pb2
from petcd.testing.harness import Background, Server, etcd_server, petcd_server

pytestmark = pytest.mark.timeout(600)

N_KEYS = 5_000


def _load(s: Server, prefix: str, start: int, n: int) -> None:
    kv = s.kv()
    for lo in range(start, start + n, 100):
        ops = [rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=f"{prefix}{i:05d}".encode(), value=b"v%d" % i))
               for i in range(lo, min(lo + 100, start + n))]
        kv.Txn(rpc_pb2.TxnRequest(success=ops), timeout=30)


def _pairs(s: Server, prefix: bytes) -> list[tuple[bytes, bytes]]:
    end = prefix[:-1] + bytes([prefix[-1] + 1])
    got = s.kv().Range(rpc_pb2.RangeRequest(key=prefix, range_end=end), timeout=60)
    return [(kv.key, kv.value) for kv in got.kvs]


@pytest.mark.parametrize("direction", ["etcd-to-petcd", "petcd-to-etcd"])
def test_make_mirror_while_writing(tmp_path: Path, direction: str) -> None:
    etcd = etcd_server(tmp_path).start()
    petcd = petcd_server(tmp_path, extra=["--unsafe-no-fsync"])
    try:
        petcd.start()
        src, dst = (etcd, petcd) if direction == "etcd-to-petcd" else (petcd, etcd)
        _load(src, "mirror/", 0, N_KEYS)
        mirror = Background(src.endpoint, "make-mirror", "--prefix=mirror/", dst.endpoint)
        try:
            # writes continue while the mirror copies the existing keys
            writer = threading.Thread(target=lambda: [
                src.kv().Put(rpc_pb2.PutRequest(key=f"mirror/live/{i:04d}".encode(), value=b"x%d" % i), timeout=30)
                for i in range(300)])
            writer.start()
            _load(src, "mirror/", 2_000, 1_000)  # overwrites too
            writer.join(timeout=300)
            assert not writer.is_alive()
            want = _pairs(src, b"mirror/")
            assert len(want) == N_KEYS + 300
            deadline = time.monotonic() + 240
            while _pairs(dst, b"mirror/") != want:
                assert mirror.proc.poll() is None, f"make-mirror exited: {mirror.lines[-5:]}"
                assert time.monotonic() < deadline, f"{dst.kind} never matched {src.kind}: {mirror.lines[-5:]}"
                time.sleep(0.5)
        finally:
            mirror.stop()
    finally:
        petcd.stop()
        etcd.stop()
