"""--quota-backend-bytes raises the NOSPACE alarm as etcd does, and
--auto-compaction-mode/-retention compact the history on their own."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from petcd.proto import rpc_pb2
from petcd.testing.harness import etcdctl, petcd_server, wait_for

pytestmark = pytest.mark.timeout(300)


def test_the_quota_raises_nospace_and_disarming_after_freeing_space_recovers(tmp_path: Path) -> None:
    server = petcd_server(tmp_path, extra=["--quota-backend-bytes", str(8 << 20)]).start()
    try:
        kv = server.kv()
        err = None
        for i in range(400):
            try:
                kv.Put(rpc_pb2.PutRequest(key=b"big/%04d" % i, value=b"x" * (100 << 10)), timeout=30)
            except grpc.RpcError as exc:
                err = exc
                break
        assert err is not None, "the quota never bit"
        assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert err.details() == "etcdserver: mvcc: database space exceeded"
        wait_for(lambda: "alarm:NOSPACE" in etcdctl(server.endpoint, "alarm", "list").stdout, 30, "the alarm")
        # reads and deletes still work; puts are refused while the alarm is on
        assert kv.Range(rpc_pb2.RangeRequest(key=b"big/0000"), timeout=30).kvs
        rev = kv.DeleteRange(rpc_pb2.DeleteRangeRequest(key=b"big/", range_end=b"big0"), timeout=30).header.revision
        with pytest.raises(grpc.RpcError) as again:
            kv.Put(rpc_pb2.PutRequest(key=b"small", value=b"v"), timeout=30)
        assert again.value.details() == "etcdserver: mvcc: database space exceeded"
        etcdctl(server.endpoint, "compaction", "--physical", str(rev))
        etcdctl(server.endpoint, "defrag")
        etcdctl(server.endpoint, "alarm", "disarm")
        assert etcdctl(server.endpoint, "alarm", "list").stdout.strip() == ""
        kv.Put(rpc_pb2.PutRequest(key=b"small", value=b"v"), timeout=30)
    finally:
        server.stop()


def test_periodic_auto_compaction_compacts_old_revisions(tmp_path: Path) -> None:
    server = petcd_server(tmp_path, extra=["--auto-compaction-mode", "periodic",
                                           "--auto-compaction-retention", "2s"]).start()
    try:
        kv = server.kv()
        first = kv.Put(rpc_pb2.PutRequest(key=b"k", value=b"1"), timeout=30).header.revision

        def compacted() -> bool:
            kv.Put(rpc_pb2.PutRequest(key=b"k", value=b"more"), timeout=30)
            try:
                kv.Range(rpc_pb2.RangeRequest(key=b"k", revision=first), timeout=30)
            except grpc.RpcError as exc:
                return exc.details() == "etcdserver: mvcc: required revision has been compacted"
            return False

        wait_for(compacted, 60, "auto compaction", interval=0.5)
    finally:
        server.stop()
