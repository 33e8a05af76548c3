"""A follower forwards what only the leader answers (lease keepalive and
time-to-live) to the leader over the peer port, on the peer transport's TLS:
with mutual TLS on both ports (https-only client URLs with a private CA and
client certificates demanded), forwarding needs nothing of the client port's
TLS and works with the peer certificates alone."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from petcd.proto import rpc_pb2, rpc_pb2_grpc
from petcd.testing.certs import CA
from petcd.testing.harness import Server, free_port, start_together

pytestmark = pytest.mark.timeout(600)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[list[Server]]:
    """Three members with mutual TLS on https peer URLs and https client URLs
    (the only ones they advertise), and a plain client listener each, which
    the test talks to."""
    ca = CA(tmp_path / "pki")
    files = ca.issue("member", file_name="member")
    peer_files = ca.issue("peer", file_name="peer")
    names = ["m0", "m1", "m2"]
    peers = {n: f"https://127.0.0.1:{free_port()}" for n in names}
    initial = ",".join(f"{n}={peers[n]}" for n in names)
    members = []
    for n in names:
        https, plain = f"https://127.0.0.1:{free_port()}", f"http://127.0.0.1:{free_port()}"
        args = [
            sys.executable, "-m", "petcd", "--name", n, "--data-dir", str(tmp_path / f"{n}.petcd"),
            "--listen-client-urls", f"{https},{plain}", "--advertise-client-urls", https,
            "--listen-peer-urls", peers[n], "--initial-advertise-peer-urls", peers[n],
            "--initial-cluster", initial, "--initial-cluster-token", f"t-{tmp_path.name}",
            "--cert-file", str(files.cert), "--key-file", str(files.key),
            "--trusted-ca-file", str(files.ca), "--client-cert-auth",
            "--peer-cert-file", str(peer_files.cert), "--peer-key-file", str(peer_files.key),
            "--peer-trusted-ca-file", str(peer_files.ca), "--peer-client-cert-auth",
        ]
        members.append(Server("petcd", args, tmp_path / f"{n}.petcd", plain, tmp_path / f"{n}.log"))
    start_together(members)
    yield members
    for m in members:
        m.stop()


def test_lease_keepalive_through_a_follower_reaches_an_https_only_leader(cluster: list[Server]) -> None:
    statuses = [m.maintenance().Status(rpc_pb2.StatusRequest(), timeout=30) for m in cluster]
    follower = next(m for m, st in zip(cluster, statuses, strict=True) if st.leader != st.header.member_id)
    members = rpc_pb2_grpc.ClusterStub(follower.channel()).MemberList(rpc_pb2.MemberListRequest(), timeout=30)
    assert all(u.startswith("https://") for mem in members.members for u in mem.clientURLs)
    lease = rpc_pb2_grpc.LeaseStub(follower.channel())
    granted = lease.LeaseGrant(rpc_pb2.LeaseGrantRequest(TTL=60), timeout=30)

    def one_keepalive() -> rpc_pb2.LeaseKeepAliveResponse:
        stream = lease.LeaseKeepAlive(iter([rpc_pb2.LeaseKeepAliveRequest(ID=granted.ID)]), timeout=30)
        try:
            return next(stream)
        finally:
            stream.cancel()

    resp = one_keepalive()
    assert (resp.ID, resp.TTL) == (granted.ID, 60)
    ttl = lease.LeaseTimeToLive(rpc_pb2.LeaseTimeToLiveRequest(ID=granted.ID), timeout=30)
    assert 0 < ttl.TTL <= 60 and ttl.grantedTTL == 60
    # an unknown lease: the leader's answer (TTL -1, as etcd) comes back through the follower
    assert lease.LeaseTimeToLive(rpc_pb2.LeaseTimeToLiveRequest(ID=granted.ID + 1), timeout=30).TTL == -1
