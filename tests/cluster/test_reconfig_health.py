"""Membership changes refused while the cluster is not healthy, as etcd
refuses them (its strict reconfiguration check, on by default).

Before a change is proposed, etcd counts the voters that have published
their names (started, up or not) against the quorum the change leaves, and
the voters its transport has been connected to for 5 s: an add needs every
voter connected; a remove needs the voters left connected to make a quorum,
unless the member removed is down (then it is no part of the active quorum).
Refusals are UNAVAILABLE "etcdserver: unhealthy cluster".
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import grpc
import pytest

from petcd.proto import rpc_pb2, rpc_pb2_grpc
from petcd.testing.harness import Server, etcd_cluster, free_port, petcd_cluster, wait_for, when_healthy

pytestmark = pytest.mark.timeout(300)

UNHEALTHY = (grpc.StatusCode.UNAVAILABLE, "etcdserver: unhealthy cluster")


def _status(m: Server) -> rpc_pb2.StatusResponse:
    resp: rpc_pb2.StatusResponse = m.maintenance().Status(rpc_pb2.StatusRequest(), timeout=10)
    return resp


def _outcome(call: Callable[[], object]) -> object:
    try:
        call()
    except grpc.RpcError as exc:
        return exc.code(), exc.details()
    return "ok"


def _outcomes(members: list[Server]) -> dict[str, object]:
    """A follower stopped, then each change the leader is asked for."""
    lead = next(m for m in members if _status(m).leader == _status(m).header.member_id)
    down, up = (m for m in members if m is not lead)
    ids = {m.client_url: _status(m).header.member_id for m in members}
    cluster = rpc_pb2_grpc.ClusterStub(lead.channel())

    def add(learner: bool) -> None:
        cluster.MemberAdd(rpc_pb2.MemberAddRequest(peerURLs=[f"http://127.0.0.1:{free_port()}"], isLearner=learner),
                          timeout=30)

    # healthy once every member has been connected for 5 s: a learner comes and goes
    added = when_healthy(lambda: cluster.MemberAdd(
        rpc_pb2.MemberAddRequest(peerURLs=[f"http://127.0.0.1:{free_port()}"], isLearner=True), timeout=30))
    cluster.MemberRemove(rpc_pb2.MemberRemoveRequest(ID=added.member.ID), timeout=30)
    down.kill()
    wait_for(lambda: _outcome(lambda: add(True)) == UNHEALTHY, 60, "the leader to see the member down")
    out: dict[str, object] = {}
    out["add a learner"] = _outcome(lambda: add(True))
    out["add a voter"] = _outcome(lambda: add(False))
    out["remove a member that is up"] = _outcome(lambda: cluster.MemberRemove(
        rpc_pb2.MemberRemoveRequest(ID=ids[up.client_url]), timeout=30))
    out["remove the member that is down"] = _outcome(lambda: cluster.MemberRemove(
        rpc_pb2.MemberRemoveRequest(ID=ids[down.client_url]), timeout=30))
    out["members left"] = len(cluster.MemberList(rpc_pb2.MemberListRequest(), timeout=30).members)
    return out


def test_changes_while_a_member_is_down_are_refused_as_etcd_refuses_them(tmp_path: Path) -> None:
    got = {}
    for kind, make in (("petcd", petcd_cluster), ("etcd", etcd_cluster)):
        (tmp_path / kind).mkdir()
        members = make(tmp_path / kind, 3)
        try:
            got[kind] = _outcomes(members)
        finally:
            for m in members:
                m.stop()
    assert got["petcd"]["add a voter"] == UNHEALTHY and got["petcd"]["remove the member that is down"] == "ok"
    assert got["petcd"] == got["etcd"]
