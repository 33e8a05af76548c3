"""One member serving the KV, Maintenance and Cluster APIs over real gRPC."""

from __future__ import annotations

import hashlib
from pathlib import Path

import grpc
import pytest

from petcd.proto import rpc_pb2 as pb

from .conftest import Member, member_config, start_member


def test_put_then_get_fills_headers_as_etcd(member: Member) -> None:
    r = member.kv.Put(pb.PutRequest(key=b"foo", value=b"bar"))
    assert r.header.revision == 2
    assert r.header.cluster_id != 0 and r.header.member_id != 0 and r.header.raft_term >= 1
    g = member.kv.Range(pb.RangeRequest(key=b"foo"))
    assert [(kv.key, kv.value, kv.create_revision, kv.mod_revision, kv.version) for kv in g.kvs] == [
        (b"foo", b"bar", 2, 2, 1)
    ]
    assert g.header.revision == 2 and g.count == 1
    s = member.kv.Range(pb.RangeRequest(key=b"foo", serializable=True))
    assert s.kvs[0].value == b"bar"


def test_txn_and_delete(member: Member) -> None:
    member.kv.Put(pb.PutRequest(key=b"a", value=b"1"))
    t = member.kv.Txn(
        pb.TxnRequest(
            compare=[pb.Compare(key=b"a", target=pb.Compare.VALUE, result=pb.Compare.EQUAL, value=b"1")],
            success=[pb.RequestOp(request_put=pb.PutRequest(key=b"a", value=b"2", prev_kv=True))],
        )
    )
    assert t.succeeded and t.responses[0].response_put.prev_kv.value == b"1"
    d = member.kv.DeleteRange(pb.DeleteRangeRequest(key=b"a", prev_kv=True))
    assert d.deleted == 1 and d.prev_kvs[0].value == b"2"
    assert member.kv.Range(pb.RangeRequest(key=b"a")).count == 0


def test_errors_carry_etcds_codes_and_messages(member: Member) -> None:
    with pytest.raises(grpc.RpcError) as e:
        member.kv.Put(pb.PutRequest(key=b"", value=b"x"))
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert e.value.details() == "etcdserver: key is not provided"
    for _ in range(3):
        member.kv.Put(pb.PutRequest(key=b"k", value=b"v"))
    member.kv.Compact(pb.CompactionRequest(revision=3, physical=True))
    with pytest.raises(grpc.RpcError) as e:
        member.kv.Range(pb.RangeRequest(key=b"k", revision=2))
    assert e.value.code() == grpc.StatusCode.OUT_OF_RANGE
    assert e.value.details() == "etcdserver: mvcc: required revision has been compacted"
    with pytest.raises(grpc.RpcError) as e:
        member.kv.Range(pb.RangeRequest(key=b"k", revision=100))
    assert e.value.details() == "etcdserver: mvcc: required revision is a future revision"
    with pytest.raises(grpc.RpcError) as e:
        member.kv.Put(pb.PutRequest(key=b"k", value=b"x" * (1600 * 1024)))
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert e.value.details() == "etcdserver: request is too large"
    assert member.kv.Range(pb.RangeRequest(key=b"k")).kvs[0].value == b"v"


def test_status_hash_and_members(member: Member) -> None:
    member.kv.Put(pb.PutRequest(key=b"x", value=b"y"))
    st = member.maintenance.Status(pb.StatusRequest())
    assert st.leader == st.header.member_id
    assert st.raftIndex >= 2 and st.raftAppliedIndex >= 2 and st.dbSize > 0
    assert st.version.startswith("3.")
    h1 = member.maintenance.HashKV(pb.HashKVRequest())
    h2 = member.maintenance.HashKV(pb.HashKVRequest())
    assert h1.hash == h2.hash
    ms = member.cluster.MemberList(pb.MemberListRequest())
    assert [m.ID for m in ms.members] == [st.header.member_id]
    assert ms.members[0].name == "default"


def test_snapshot_stream_ends_with_its_sha256(member: Member) -> None:
    member.kv.Put(pb.PutRequest(key=b"x", value=b"y"))
    blobs = [r.blob for r in member.maintenance.Snapshot(pb.SnapshotRequest())]
    data, digest = b"".join(blobs[:-1]), blobs[-1]
    assert len(data) > 0 and hashlib.sha256(data).digest() == digest


def test_acknowledged_writes_survive_a_restart(tmp_path: Path) -> None:
    cfg = member_config(tmp_path / "m")
    m = start_member(cfg)
    revs = [m.kv.Put(pb.PutRequest(key=b"k%d" % i, value=b"v%d" % i)).header.revision for i in range(50)]
    m.stop()
    m = start_member(cfg)
    try:
        for i, rev in enumerate(revs):
            kv = m.kv.Range(pb.RangeRequest(key=b"k%d" % i)).kvs[0]
            assert (kv.value, kv.mod_revision) == (b"v%d" % i, rev)
        assert m.kv.Put(pb.PutRequest(key=b"after", value=b"1")).header.revision == revs[-1] + 1
    finally:
        m.stop()


def test_raft_snapshots_compact_the_log_and_restart(tmp_path: Path) -> None:
    cfg = member_config(tmp_path / "m", snapshot_count=20)
    m = start_member(cfg)
    for i in range(70):
        m.kv.Put(pb.PutRequest(key=b"k", value=b"%d" % i))
    assert list((tmp_path / "m" / "member" / "snap").glob("*.snap"))
    m.stop()
    m = start_member(cfg)
    try:
        assert m.kv.Range(pb.RangeRequest(key=b"k")).kvs[0].value == b"69"
    finally:
        m.stop()
