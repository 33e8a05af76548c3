"""Membership changes with real processes: a learner joins a running
cluster (catching up from a snapshot of the leader's backend when the log is
compacted), is promoted, and serves reads and writes as a voter."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest

from petcd.proto import rpc_pb2, rpc_pb2_grpc
from petcd.testing.harness import (
    Server,
    etcdctl,
    etcdctl_when_healthy,
    free_port,
    petcd_cluster,
    petcd_joiner,
    wait_for,
    when_healthy,
)
from tests.cluster.helpers import hash_kv_converges, leader, status

pytestmark = pytest.mark.timeout(900)


def _put_many(m: Server, n: int) -> None:
    def put(i: int) -> None:
        ch = grpc.insecure_channel(m.endpoint)
        rpc_pb2_grpc.KVStub(ch).Put(rpc_pb2.PutRequest(key=b"bulk/%05d" % i, value=b"x" * 100), timeout=30)
        ch.close()

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(put, range(n)))


def test_a_learner_joins_catches_up_from_a_snapshot_and_is_promoted(tmp_path: Path) -> None:
    members = petcd_cluster(tmp_path, 3, extra=["--snapshot-count", "100"])
    new: Server | None = None
    try:
        lead = leader(members)
        _put_many(lead, 5300)  # past the 5000 entries kept behind a raft snapshot: the log is compacted
        peer = f"http://127.0.0.1:{free_port()}"
        out = etcdctl_when_healthy(lead.endpoint, "member", "add", "m3", f"--peer-urls={peer}", "--learner")
        assert "added to cluster" in out.stdout
        initial = [ln for ln in out.stdout.splitlines() if ln.startswith("ETCD_INITIAL_CLUSTER=")][0]
        initial = initial.split("=", 1)[1].strip('"')
        new = petcd_joiner(tmp_path, "m3", peer, initial, extra=["--snapshot-count", "100"]).start()
        wait_for(lambda: status(new).header.revision == status(lead).header.revision, 120, "the learner to catch up")
        st = status(new)
        assert st.isLearner
        with pytest.raises(grpc.RpcError) as err:  # learners take no writes
            new.kv().Put(rpc_pb2.PutRequest(key=b"no", value=b"no"), timeout=30)
        assert err.value.details() == "etcdserver: rpc not supported for learner"
        got = new.kv().Range(rpc_pb2.RangeRequest(key=b"bulk/", range_end=b"bulk0", count_only=True,
                                                  serializable=True), timeout=30)
        assert got.count == 5300
        new_id = st.header.member_id
        wait_for(lambda: etcdctl(lead.endpoint, "member", "promote", f"{new_id:x}", check=False).returncode == 0,
                 60, "the learner to be promotable")
        listed = json.loads(etcdctl(lead.endpoint, "member", "list", "-w", "json").stdout)["members"]
        assert len(listed) == 4 and not any(m.get("isLearner") for m in listed)
        wait_for(lambda: not status(new).isLearner, 30, "the new member to know it is a voter")
        new.kv().Put(rpc_pb2.PutRequest(key=b"from-new", value=b"voter"), timeout=30)
        everyone = [*members, new]
        for m in everyone:
            assert m.kv().Range(rpc_pb2.RangeRequest(key=b"from-new"), timeout=30).kvs[0].value == b"voter"
        hash_kv_converges(everyone)
    finally:
        for m in members + ([new] if new else []):
            m.stop()


def test_membership_errors_are_etcds(tmp_path: Path) -> None:
    members = petcd_cluster(tmp_path, 3)
    try:
        lead = leader(members)
        stub = rpc_pb2_grpc.ClusterStub(lead.channel())
        peer = json.loads(etcdctl(lead.endpoint, "member", "list", "-w", "json").stdout)["members"][0]["peerURLs"]
        for req, code, msg in [
            (rpc_pb2.MemberAddRequest(peerURLs=peer), grpc.StatusCode.FAILED_PRECONDITION,
             "etcdserver: Peer URLs already exists"),
            (rpc_pb2.MemberAddRequest(peerURLs=["not a url"]), grpc.StatusCode.INVALID_ARGUMENT,
             "etcdserver: given member URLs are invalid"),
        ]:
            with pytest.raises(grpc.RpcError) as err:
                when_healthy(lambda req=req: stub.MemberAdd(req, timeout=30))
            assert (err.value.code(), err.value.details()) == (code, msg)
        voter = status(members[1]).header.member_id
        with pytest.raises(grpc.RpcError) as err:
            stub.MemberPromote(rpc_pb2.MemberPromoteRequest(ID=voter), timeout=30)
        assert err.value.details() == "etcdserver: can only promote a learner member"
        with pytest.raises(grpc.RpcError) as err:
            stub.MemberUpdate(rpc_pb2.MemberUpdateRequest(ID=12345, peerURLs=["http://127.0.0.1:1"]), timeout=30)
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
        first = stub.MemberAdd(rpc_pb2.MemberAddRequest(peerURLs=[f"http://127.0.0.1:{free_port()}"],
                                                        isLearner=True), timeout=30)
        with pytest.raises(grpc.RpcError) as err:
            stub.MemberAdd(rpc_pb2.MemberAddRequest(peerURLs=[f"http://127.0.0.1:{free_port()}"], isLearner=True),
                           timeout=30)
        assert err.value.details() == "etcdserver: too many learner members in cluster"
        with pytest.raises(grpc.RpcError) as err:  # a learner that never started is not in sync
            stub.MemberPromote(rpc_pb2.MemberPromoteRequest(ID=first.member.ID), timeout=30)
        assert err.value.details() == "etcdserver: can only promote a learner member which is in sync with leader"
        stub.MemberRemove(rpc_pb2.MemberRemoveRequest(ID=first.member.ID), timeout=30)
        assert len(stub.MemberList(rpc_pb2.MemberListRequest(), timeout=30).members) == 3
    finally:
        for m in members:
            m.stop()


def test_membership_changes_under_load_keep_the_history_linearizable(tmp_path: Path) -> None:
    from tests.cluster.test_faults import Workload

    members = petcd_cluster(tmp_path, 3)
    new: Server | None = None
    try:
        work = Workload(members)
        lead = leader(members)
        victim = next(m for m in members if m is not lead)
        stub = rpc_pb2_grpc.ClusterStub(lead.channel())
        victim_id = status(victim).header.member_id
        when_healthy(lambda: stub.MemberRemove(rpc_pb2.MemberRemoveRequest(ID=victim_id), timeout=30))
        wait_for(lambda: victim.proc is not None and victim.proc.poll() is not None, 60, "the removed member to exit")
        rest = [m for m in members if m is not victim]
        peer = f"http://127.0.0.1:{free_port()}"
        added = stub.MemberAdd(rpc_pb2.MemberAddRequest(peerURLs=[peer], isLearner=True), timeout=30)
        initial = ",".join(f"{m.name or 'm3'}={m.peerURLs[0]}" for m in added.members)
        new = petcd_joiner(tmp_path, "m3", peer, initial).start()

        def promoted() -> bool:
            try:
                stub.MemberPromote(rpc_pb2.MemberPromoteRequest(ID=added.member.ID), timeout=30)
                return True
            except grpc.RpcError as exc:
                if "in sync" not in (exc.details() or ""):
                    raise
                return False

        wait_for(promoted, 120, "the learner to catch up under load and be promoted")
        work.finish_and_check([*rest, new])
    finally:
        for m in members + ([new] if new else []):
            m.stop()
