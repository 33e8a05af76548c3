"""etcd 3.5's --tls-min-version, --tls-max-version and --cipher-suites on a
real member: both ports (client and peer listeners) refuse a client below
the minimum or without an allowed suite, the member's own dialers use the
same bounds, and unknown names are refused at start with etcd's message
(the cipher suite one checked against the installed etcd 3.4)."""

from __future__ import annotations

import socket
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from petcd.server.config import ServerConfig
from petcd.server.tls import tls_from_config
from petcd.testing.certs import CA, CertFiles
from petcd.testing.harness import Server, free_port, require_binary

pytestmark = pytest.mark.timeout(600)


@pytest.fixture
def certs(tmp_path: Path) -> CertFiles:
    return CA(tmp_path / "pki").issue("petcd", file_name="server")


class Member:
    """A petcd process with https client and peer URLs and a plain client URL (for readiness)."""

    def __init__(self, tmp: Path, certs: CertFiles, extra: list[str]) -> None:
        self.tls_port, self.peer_port = free_port(), free_port()
        https, http = f"https://127.0.0.1:{self.tls_port}", f"http://127.0.0.1:{free_port()}"
        peer = f"https://127.0.0.1:{self.peer_port}"
        files = ["--cert-file", str(certs.cert), "--key-file", str(certs.key), "--trusted-ca-file", str(certs.ca),
                 "--peer-cert-file", str(certs.cert), "--peer-key-file", str(certs.key),
                 "--peer-trusted-ca-file", str(certs.ca)]
        args = [sys.executable, "-m", "petcd", "--name", "v", "--data-dir", str(tmp / "v.petcd"),
                "--listen-client-urls", f"{https},{http}", "--advertise-client-urls", https,
                "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer, "--initial-cluster", f"v={peer}",
                *files, *extra]
        self.server = Server("petcd", args, tmp / "v.petcd", http, tmp / "v.log")


@pytest.fixture
def member_factory(tmp_path: Path, certs: CertFiles) -> Iterator[list[Member]]:
    started: list[Member] = []
    yield started
    for m in started:
        m.server.stop()


def start(tmp: Path, certs: CertFiles, extra: list[str], started: list[Member]) -> Member:
    m = Member(tmp, certs, extra)
    started.append(m)
    m.server.start()
    return m


def handshake(port: int, ca: Path, *, max_version: ssl.TLSVersion | None = None,
              ciphers: str | None = None) -> tuple[str, str]:
    """(TLS version, cipher) a client with these limits gets; ssl.SSLError if refused."""
    ctx = ssl.create_default_context(cafile=str(ca))
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if max_version is not None:
        ctx.maximum_version = max_version
    if ciphers is not None:
        ctx.set_ciphers(ciphers)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
            ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s:
        version, cipher = s.version(), s.cipher()
        assert version is not None and cipher is not None
        return version, cipher[0]


def test_min_version_tls13_refuses_tls12_on_both_ports(tmp_path: Path, certs: CertFiles,
                                                       member_factory: list[Member]) -> None:
    m = start(tmp_path, certs, ["--tls-min-version", "TLS1.3"], member_factory)
    for port in (m.tls_port, m.peer_port):
        assert handshake(port, certs.ca)[0] == "TLSv1.3"
        with pytest.raises(ssl.SSLError):
            handshake(port, certs.ca, max_version=ssl.TLSVersion.TLSv1_2)


def test_max_version_and_cipher_suites_on_both_ports(tmp_path: Path, certs: CertFiles,
                                                     member_factory: list[Member]) -> None:
    m = start(tmp_path, certs, ["--tls-max-version", "TLS1.2",
                                "--cipher-suites", "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"], member_factory)
    for port in (m.tls_port, m.peer_port):
        assert handshake(port, certs.ca) == ("TLSv1.2", "ECDHE-ECDSA-AES128-GCM-SHA256")
        with pytest.raises(ssl.SSLError):  # a suite the member does not allow
            handshake(port, certs.ca, ciphers="ECDHE-ECDSA-AES256-GCM-SHA384")


def test_the_member_dials_with_the_same_bounds(tmp_path: Path, certs: CertFiles) -> None:
    cfg = ServerConfig(name="d", data_dir=str(tmp_path / "d"), cert_file=str(certs.cert), key_file=str(certs.key),
                       peer_cert_file=str(certs.cert), peer_key_file=str(certs.key),
                       tls_min_version="TLS1.2", tls_max_version="TLS1.2",
                       cipher_suites=["TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384"])
    for peer in (True, False):
        info = tls_from_config(cfg, peer=peer)
        assert info is not None
        ctx = info.client_context()
        assert ctx.maximum_version is ssl.TLSVersion.TLSv1_2
        # TLS 1.3's own suites are listed too (not configurable, as in Go); the 1.2 ones are only the one
        tls12 = [c["name"] for c in ctx.get_ciphers() if c["protocol"] != "TLSv1.3"]
        assert tls12 == ["ECDHE-ECDSA-AES256-GCM-SHA384"]


def _start_fails(args: list[str], tmp: Path) -> str:
    p = subprocess.run(args, capture_output=True, text=True, timeout=60, cwd=tmp)
    assert p.returncode == 1, (p.returncode, p.stdout, p.stderr)
    return p.stderr


@pytest.mark.parametrize(("flags", "message"), [
    (["--cipher-suites", "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,FOO"], 'unexpected TLS cipher suite "FOO"'),
    (["--tls-min-version", "TLS1.1"], 'unexpected TLS version "TLS1.1" (must be one of: TLS1.2, TLS1.3)'),
    (["--tls-max-version", "SSL3"], 'unexpected TLS version "SSL3" (must be one of: TLS1.2, TLS1.3)'),
    (["--tls-min-version", "TLS1.3", "--tls-max-version", "TLS1.2"],
     "min version (TLS1.3) is greater than max version (TLS1.2)"),
    (["--tls-min-version", "TLS1.3", "--cipher-suites", "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"],
     "cipher suites cannot be configured when only TLS1.3 is enabled"),
])
def test_unknown_names_refused_with_etcds_message(tmp_path: Path, flags: list[str], message: str) -> None:
    err = _start_fails([sys.executable, "-m", "petcd", "--data-dir", str(tmp_path / "x"), *flags], tmp_path)
    assert message in err, err
    assert not (tmp_path / "x").exists()


def test_unknown_cipher_suite_message_is_etcds(tmp_path: Path) -> None:
    etcd = require_binary("etcd")
    err = _start_fails([etcd, "--data-dir", str(tmp_path / "e"), "--cipher-suites", "FOO"], tmp_path)
    assert 'unexpected TLS cipher suite "FOO"' in err, err
