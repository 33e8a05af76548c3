"""Which response headers etcd fills, call by call, and petcd the same.

etcd 3.4 does not fill one header for all: the Cluster service's carry no
revision (membership is not mvcc state), and Alarm, Defragment and
MoveLeader answer with no header at all. Clients that print responses
(``etcdctl -w json``, the JSON gateway) show the difference."""

from __future__ import annotations

from collections.abc import Callable

import grpc
import pytest
from google.protobuf.message import Message

from petcd.proto import rpc_pb2, rpc_pb2_grpc
from petcd.testing.harness import Server

pytestmark = pytest.mark.timeout(300)

# (has a header, cluster id, member id, revision, raft term)
Shape = tuple[bool, bool, bool, bool, bool]


def _shape(resp: Message) -> Shape:
    h = resp.header  # type: ignore[attr-defined]
    return resp.HasField("header"), h.cluster_id > 0, h.member_id > 0, h.revision > 0, h.raft_term > 0


def _shapes(server: Server) -> dict[str, Shape]:
    ch = server.channel()
    kv = rpc_pb2_grpc.KVStub(ch)
    m = rpc_pb2_grpc.MaintenanceStub(ch)
    c = rpc_pb2_grpc.ClusterStub(ch)
    lease = rpc_pb2_grpc.LeaseStub(ch)
    kv.Put(rpc_pb2.PutRequest(key=b"a", value=b"b"), timeout=30)
    me = m.Status(rpc_pb2.StatusRequest(), timeout=30).header.member_id
    granted = lease.LeaseGrant(rpc_pb2.LeaseGrantRequest(TTL=60), timeout=30)
    alarm = rpc_pb2.AlarmRequest
    calls: dict[str, Callable[[], Message]] = {
        "Status": lambda: m.Status(rpc_pb2.StatusRequest(), timeout=30),
        "Hash": lambda: m.Hash(rpc_pb2.HashRequest(), timeout=30),
        "HashKV": lambda: m.HashKV(rpc_pb2.HashKVRequest(), timeout=30),
        "AlarmActivate": lambda: m.Alarm(alarm(action=alarm.ACTIVATE, memberID=me, alarm=rpc_pb2.NOSPACE), timeout=30),
        "AlarmGet": lambda: m.Alarm(alarm(action=alarm.GET), timeout=30),
        "AlarmDeactivate": lambda: m.Alarm(alarm(action=alarm.DEACTIVATE, memberID=me, alarm=rpc_pb2.NOSPACE),
                                           timeout=30),
        "Defragment": lambda: m.Defragment(rpc_pb2.DefragmentRequest(), timeout=60),
        "MoveLeader": lambda: m.MoveLeader(rpc_pb2.MoveLeaderRequest(targetID=me), timeout=30),
        "MemberList": lambda: c.MemberList(rpc_pb2.MemberListRequest(), timeout=30),
        "LeaseTimeToLive": lambda: lease.LeaseTimeToLive(rpc_pb2.LeaseTimeToLiveRequest(ID=granted.ID), timeout=30),
        "LeaseLeases": lambda: lease.LeaseLeases(rpc_pb2.LeaseLeasesRequest(), timeout=30),
        "Compact": lambda: kv.Compact(rpc_pb2.CompactionRequest(revision=1), timeout=30),
    }
    out = {name: _shape(call()) for name, call in calls.items()}
    added = c.MemberAdd(rpc_pb2.MemberAddRequest(peerURLs=["http://127.0.0.1:9"], isLearner=True), timeout=30)
    out["MemberAdd"] = _shape(added)
    out["MemberUpdate"] = _shape(c.MemberUpdate(
        rpc_pb2.MemberUpdateRequest(ID=added.member.ID, peerURLs=["http://127.0.0.1:10"]), timeout=30))
    out["MemberRemove"] = _shape(c.MemberRemove(rpc_pb2.MemberRemoveRequest(ID=added.member.ID), timeout=30))
    return out


def test_each_call_fills_the_header_etcd_fills(petcd: Server, etcd: Server) -> None:
    try:
        want = _shapes(etcd)
        got = _shapes(petcd)
    except grpc.RpcError as exc:
        pytest.fail(f"a call failed: {exc}")
    assert want["MemberList"] == (True, True, True, False, True)  # the oracle is as described above
    assert want["Defragment"][0] is False
    diff = {name: (want[name], got[name]) for name in want if want[name] != got[name]}
    assert not diff, f"header shapes differ (etcd, petcd): {diff}"
