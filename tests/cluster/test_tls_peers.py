"""TLS between members, with real processes: https peer URLs with mutual TLS
and certificates made by the test; a member with a certificate from another
CA is kept out; auto TLS; TLS handshakes that stall or send garbage do not
hurt a member."""

from __future__ import annotations

import os
import socket
import ssl
import struct
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from petcd.proto import rpc_pb2
from petcd.testing.certs import CA, CertFiles
from petcd.testing.harness import Server, etcdctl_when_healthy, free_port, wait_for
from tests.cluster.helpers import hash_kv_converges, leader, status

pytestmark = pytest.mark.timeout(600)

NAMES = ("m0", "m1", "m2")


class TLSCluster:
    """Three members with https peer URLs; each member's TLS flags can be changed before a (re)start."""

    def __init__(self, tmp: Path, tls: dict[str, list[str]]) -> None:
        self.peer_ports = {n: free_port() for n in NAMES}
        self.peer_urls = {n: f"https://127.0.0.1:{p}" for n, p in self.peer_ports.items()}
        initial = ",".join(f"{n}={u}" for n, u in self.peer_urls.items())
        self.members: dict[str, Server] = {}
        for n in NAMES:
            client = f"http://127.0.0.1:{free_port()}"
            args = [
                sys.executable, "-m", "petcd", "--name", n, "--data-dir", str(tmp / f"{n}.petcd"),
                "--listen-client-urls", client, "--advertise-client-urls", client,
                "--listen-peer-urls", self.peer_urls[n], "--initial-advertise-peer-urls", self.peer_urls[n],
                "--initial-cluster", initial, "--initial-cluster-token", f"tls-{tmp.name}",
            ]
            self.members[n] = Server("petcd", args + tls[n], tmp / f"{n}.petcd", client, tmp / f"{n}.log")

    def retls(self, name: str, tls: list[str]) -> None:
        m = self.members[name]
        m.args = m.args[: m.args.index("--initial-cluster-token") + 2] + tls

    def all(self) -> list[Server]:
        return list(self.members.values())

    def stop(self) -> None:
        for m in self.members.values():
            m.stop()


def tls_flags(files: CertFiles) -> list[str]:
    return ["--peer-cert-file", str(files.cert), "--peer-key-file", str(files.key),
            "--peer-trusted-ca-file", str(files.ca), "--peer-client-cert-auth", "--peer-cert-allowed-cn", "petcd-peer"]


def put(m: Server, key: bytes, value: bytes) -> int:
    resp = m.kv().Put(rpc_pb2.PutRequest(key=key, value=value), timeout=30)
    return int(resp.header.revision)


def serializable_get(m: Server, key: bytes) -> bytes | None:
    resp = m.kv().Range(rpc_pb2.RangeRequest(key=key, serializable=True), timeout=10)
    return resp.kvs[0].value if resp.kvs else None


@pytest.fixture
def pki(tmp_path: Path) -> dict[str, CertFiles]:
    ca, rogue = CA(tmp_path / "pki"), CA(tmp_path / "rogue", "rogue CA")
    out = {n: ca.issue("petcd-peer", file_name=n) for n in (*NAMES, "m3")}
    out["rogue"] = rogue.issue("petcd-peer", file_name="rogue")
    return out


@pytest.fixture
def stopper() -> Iterator[list[TLSCluster]]:
    clusters: list[TLSCluster] = []
    yield clusters
    for c in clusters:
        c.stop()


def test_members_form_over_mutual_tls_and_a_member_from_another_ca_is_kept_out(
        tmp_path: Path, pki: dict[str, CertFiles], stopper: list[TLSCluster]) -> None:
    # m2 starts with a certificate (and trust) from another CA: m0 and m1 must form the cluster without it.
    c = TLSCluster(tmp_path, {"m0": tls_flags(pki["m0"]), "m1": tls_flags(pki["m1"]), "m2": tls_flags(pki["rogue"])})
    stopper.append(c)
    m0, m1, m2 = (c.members[n] for n in NAMES)
    for m in c.all():
        m.launch()
    lead = leader([m0, m1])
    rev = put(lead, b"k", b"over-tls")
    for m in (m0, m1):  # replicated: linearizable reads on both see it
        got = m.kv().Range(rpc_pb2.RangeRequest(key=b"k"), timeout=30)
        assert got.kvs[0].value == b"over-tls" and got.header.revision >= rev
    # Both sides refuse: the leader (dialing m2) does not trust its certificate, and m2 trusts none of theirs.
    wait_for(lambda: "certificate verify failed" in lead.log_tail(400), 60, "the leader to refuse m2's certificate")
    wait_for(lambda: "certificate verify failed" in m2.log_tail(400), 60, "m2 to refuse the others' certificates")
    # Nothing reached m2: it has no leader and none of the data (after the write was applied by both others).
    assert status(m2).leader == 0 and serializable_get(m2, b"k") is None
    # With a certificate of the cluster's CA, the same member (same data dir) joins and catches up.
    m2.stop()
    c.retls("m2", tls_flags(pki["m2"]))
    m2.start()
    assert leader(c.all()).proc is not None
    got = m2.kv().Range(rpc_pb2.RangeRequest(key=b"k"), timeout=30)
    assert got.kvs[0].value == b"over-tls"
    for i in range(20):
        put(c.all()[i % 3], b"after-%02d" % i, b"v")
    hash_kv_converges(c.all())
    # A fourth member joins over TLS: it asks a peer for the member list (petcd/server/join.py) over https.
    peer = f"https://127.0.0.1:{free_port()}"
    # m2 reconnected moments ago: like etcd, the leader refuses a new member
    # until every voter's connection has lasted a health interval
    out = etcdctl_when_healthy(m0.endpoint, "member", "add", "m3", f"--peer-urls={peer}")
    initial = next(ln for ln in out.stdout.splitlines() if ln.startswith("ETCD_INITIAL_CLUSTER="))
    client = f"http://127.0.0.1:{free_port()}"
    args = [
        sys.executable, "-m", "petcd", "--name", "m3", "--data-dir", str(tmp_path / "m3.petcd"),
        "--listen-client-urls", client, "--advertise-client-urls", client,
        "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
        "--initial-cluster", initial.split("=", 1)[1].strip('"'), "--initial-cluster-state", "existing",
        *tls_flags(pki["m3"]),
    ]
    m3 = Server("petcd", args, tmp_path / "m3.petcd", client, tmp_path / "m3.log")
    c.members["m3"] = m3
    m3.start()
    assert m3.kv().Range(rpc_pb2.RangeRequest(key=b"k"), timeout=30).kvs[0].value == b"over-tls"
    hash_kv_converges(c.all())
    # Plain TCP to a TLS peer port is not a peer: the raft handshake gets no further than the TLS layer.
    with socket.create_connection(("127.0.0.1", c.peer_ports["m0"]), timeout=30) as s:
        s.sendall(b"PETCDRAFT1" + struct.pack(">QQQ", 1, 2, 3))
        try:
            while s.recv(65536):
                pass
        except ConnectionError:
            pass


def _open_stalled(port: int, n: int) -> list[socket.socket]:
    socks = []
    for i in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=30)
        if i % 2:
            s.sendall(b"\x16\x03\x01\x00\xff\x01\x00\x00\xfb\x03\x03")  # a ClientHello that never finishes
        socks.append(s)
    return socks


def _closed_by_peer(s: socket.socket, timeout: float) -> bool:
    s.settimeout(timeout)
    try:
        while s.recv(65536):
            pass
    except ConnectionError:
        pass
    return True


def test_auto_tls_cluster_shrugs_off_stalled_and_garbage_tls_handshakes(
        tmp_path: Path, stopper: list[TLSCluster]) -> None:
    c = TLSCluster(tmp_path, {n: ["--peer-auto-tls"] for n in NAMES})
    stopper.append(c)
    for m in c.all():
        m.launch()
    lead = leader(c.all())
    for n in NAMES:  # each made its own certificate in its data dir, as etcd does
        assert (tmp_path / f"{n}.petcd" / "fixtures" / "peer" / "cert.pem").is_file()
    lead_name = next(n for n, m in c.members.items() if m is lead)
    term = status(lead).raftTerm
    port = c.peer_ports[lead_name]
    stalled = _open_stalled(port, 60)
    garbage = []
    for junk in (os.urandom(8192), b"\x16\x03\x01\x02\x00" + os.urandom(700), b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
                 b"\x16\x03\x03\x00\x05\x01\x00\x00\x01\x00"):
        s = socket.create_connection(("127.0.0.1", port), timeout=30)
        s.sendall(junk)
        garbage.append(s)
    try:
        # The member keeps leading and serving while they hang around.
        started = time.monotonic()
        i = 0
        while time.monotonic() - started < 3.0:
            put(c.all()[i % 3], b"g%04d" % i, b"v")
            i += 1
        for s in garbage:
            assert _closed_by_peer(s, 30)
        # The stalled handshakes are dropped at the TLS handshake timeout.
        for s in stalled:
            assert _closed_by_peer(s, 40)
        assert leader(c.all()) is lead and status(lead).raftTerm == term
        hash_kv_converges(c.all())
    finally:
        for s in stalled + garbage:
            s.close()
    # And a TLS client that completes the handshake but is not a member gets nowhere either.
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port), timeout=30) as raw, \
            ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s:
        s.sendall(b"PETCDRAFT1" + struct.pack(">QQQ", 0xBAD, 2, 3))
        assert _closed_by_peer(s, 30)
    assert status(lead).raftTerm == term
