"""A three-member cluster: every member serves reads and writes, members
agree, a killed leader is replaced, leadership moves on request, a member
is removed."""

from __future__ import annotations

import json
import threading

import grpc
import pytest

from petcd.proto import rpc_pb2, rpc_pb2_grpc
from petcd.testing.harness import Server, etcdctl, wait_for, when_healthy
from tests.cluster.helpers import hash_kv_converges, leader, status

pytestmark = pytest.mark.timeout(600)


def test_members_know_each_other_and_serve_reads_and_writes(cluster: list[Server]) -> None:
    lead = leader(cluster)
    out = json.loads(etcdctl(cluster[0].endpoint, "member", "list", "-w", "json").stdout)
    names = sorted(m.get("name", "") for m in out["members"])
    assert names == ["m0", "m1", "m2"]
    wait_for(lambda: all(m.get("clientURLs") for m in json.loads(
        etcdctl(cluster[1].endpoint, "member", "list", "-w", "json").stdout)["members"]), 30, "published client URLs")
    followers = [m for m in cluster if m is not lead]
    for i, m in enumerate(cluster):
        etcdctl(m.endpoint, "put", f"k{i}", f"v{i}")
    for m in cluster:  # linearizable reads everywhere see every write
        for i in range(3):
            assert etcdctl(m.endpoint, "get", f"k{i}", "--print-value-only").stdout.strip() == f"v{i}"
    lease = etcdctl(followers[0].endpoint, "lease", "grant", "60").stdout.split()[1]
    etcdctl(followers[1].endpoint, "put", "leased", "x", f"--lease={lease}")
    assert "keepalived" in etcdctl(followers[1].endpoint, "lease", "keep-alive", "--once", lease).stdout
    ttl = etcdctl(followers[0].endpoint, "lease", "timetolive", lease, "--keys").stdout
    assert "attached keys([leased])" in ttl
    st = [status(m) for m in cluster]
    assert len({s.leader for s in st}) == 1
    hash_kv_converges(cluster)


def test_killing_the_leader_elects_another_and_loses_nothing(cluster: list[Server]) -> None:
    lead = leader(cluster)
    acked = []
    for i in range(50):
        m = cluster[i % 3]
        resp = m.kv().Put(rpc_pb2.PutRequest(key=b"f%03d" % i, value=b"v"), timeout=30)
        acked.append((b"f%03d" % i, resp.header.revision))
    lead.kill()
    rest = [m for m in cluster if m is not lead]
    new = leader(rest)
    assert new is not lead
    new.kv().Put(rpc_pb2.PutRequest(key=b"after", value=b"failover"), timeout=30)
    lead.start()  # the old leader rejoins as a follower and catches up
    leader(cluster)
    hash_kv_converges(cluster)
    for m in cluster:
        got = m.kv().Range(rpc_pb2.RangeRequest(key=b"f", range_end=b"g"), timeout=30)
        assert [(kv.key, kv.mod_revision) for kv in got.kvs] == acked
        assert m.kv().Range(rpc_pb2.RangeRequest(key=b"after"), timeout=30).kvs[0].value == b"failover"


def test_move_leader(cluster: list[Server]) -> None:
    lead = leader(cluster)
    target = next(m for m in cluster if m is not lead)
    target_id = status(target).header.member_id
    out = etcdctl(lead.endpoint, "move-leader", f"{target_id:x}")
    assert "Leadership transferred" in out.stdout
    assert leader(cluster) is target
    follower = next(m for m in cluster if m is not target)
    # etcdctl itself refuses a non-leader endpoint; the RPC says "not leader"
    with pytest.raises(grpc.RpcError) as err:
        follower.maintenance().MoveLeader(rpc_pb2.MoveLeaderRequest(targetID=target_id), timeout=30)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert err.value.details() == "etcdserver: not leader"


def test_removing_a_member(cluster: list[Server]) -> None:
    lead = leader(cluster)
    victim = next(m for m in cluster if m is not lead)
    vid = status(victim).header.member_id
    stub = rpc_pb2_grpc.ClusterStub(lead.channel())
    resp = when_healthy(lambda: stub.MemberRemove(rpc_pb2.MemberRemoveRequest(ID=vid), timeout=30))
    assert sorted(m.ID for m in resp.members) == sorted(status(m).header.member_id for m in cluster if m is not victim)
    assert victim.proc is not None
    wait_for(lambda: victim.proc is not None and victim.proc.poll() is not None, 60, "the removed member to exit")
    rest = [m for m in cluster if m is not victim]
    rest[0].kv().Put(rpc_pb2.PutRequest(key=b"two", value=b"members"), timeout=30)
    with pytest.raises(grpc.RpcError) as err:
        stub.MemberRemove(rpc_pb2.MemberRemoveRequest(ID=vid), timeout=30)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert err.value.details() == "etcdserver: member not found"


def test_concurrent_linearizable_reads_on_every_member(cluster: list[Server]) -> None:
    """Read rounds of different members must not be confused by the leader."""
    leader(cluster)
    cluster[0].kv().Put(rpc_pb2.PutRequest(key=b"r", value=b"1"), timeout=30)
    errors: list[BaseException] = []

    def reads(m: Server) -> None:
        kv = rpc_pb2_grpc.KVStub(grpc.insecure_channel(m.endpoint))
        try:
            for _ in range(150):
                assert kv.Range(rpc_pb2.RangeRequest(key=b"r"), timeout=5).kvs[0].value == b"1"
        except BaseException as exc:  # collected for the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=reads, args=(m,)) for m in cluster for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[0]
