"""The cluster version: set once, through raft, by a new cluster's leader.

etcd's leader proposes the cluster version as it takes office in a cluster
that has none, and every member applies and persists it; `/version` shows
it ("not_decided" before), `etcd_cluster_version` labels it, and it takes
one raft entry, which `etcdctl endpoint status` counts in the raft index.
A member that restarts does not set it again, but publishes its attributes
again (one entry per start).
"""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import pytest

from petcd.proto import rpc_pb2, rpc_pb2_grpc
from petcd.testing.harness import Server, etcd_server, petcd_cluster, petcd_server, wait_for

pytestmark = pytest.mark.timeout(300)


def _cluster_version(s: Server) -> str:
    with urllib.request.urlopen(s.client_url + "/version", timeout=10) as r:
        doc: dict[str, str] = json.loads(r.read())
    return doc["etcdcluster"]


def _settled_status(s: Server) -> tuple[int, int]:
    """(raft index, applied index) once the version is set and this
    member's attributes are published (both entries of a start)."""
    wait_for(lambda: _cluster_version(s) != "not_decided", 60, f"{s.kind} to set the cluster version")
    wait_for(lambda: all(m.name for m in _members(s)), 60, f"{s.kind} to publish its name")
    st = s.maintenance().Status(rpc_pb2.StatusRequest(), timeout=10)
    return st.raftIndex, st.raftAppliedIndex


def _members(s: Server) -> list[rpc_pb2.Member]:
    return list(rpc_pb2_grpc.ClusterStub(s.channel()).MemberList(rpc_pb2.MemberListRequest(), timeout=10).members)


def test_a_new_member_sets_the_cluster_version_once_as_etcd_does(tmp_path: Path) -> None:
    (tmp_path / "p").mkdir()
    (tmp_path / "e").mkdir()
    servers = [petcd_server(tmp_path / "p"), etcd_server(tmp_path / "e")]
    try:
        for s in servers:
            s.start()
        first = [_settled_status(s) for s in servers]
        assert first[0] == first[1], f"petcd {first[0]}, etcd {first[1]}"
        assert [_cluster_version(s) for s in servers] == ["3.4.0", "3.4.0"]
        for s in servers:
            s.stop()
            s.start()
        again = [_settled_status(s) for s in servers]
        assert again[0] == again[1], f"after a restart: petcd {again[0]}, etcd {again[1]}"
        assert again[0][0] == first[0][0] + 2  # the new term's empty entry and the publish: no second version
    finally:
        for s in servers:
            s.stop()


def test_every_member_of_a_cluster_applies_the_version(tmp_path: Path) -> None:
    members = petcd_cluster(tmp_path, 3)
    try:
        for m in members:
            wait_for(lambda m=m: _cluster_version(m) == "3.4.0", 60, f"{m.client_url} to apply the cluster version")
            with urllib.request.urlopen(m.client_url + "/metrics", timeout=10) as r:
                assert 'etcd_cluster_version{cluster_version="3.4"} 1.0' in r.read().decode()
    finally:
        for m in members:
            m.stop()
