"""TLS on the peer port: etcd's --peer-* security flags as ssl contexts.

A member's peer certificate serves both ends of its connections: it is the
server certificate of its listener and the client certificate it presents
when it dials. As in etcd:

- ``--peer-trusted-ca-file`` verifies the other end (both ways); without it
  the system's roots do;
- ``--peer-client-cert-auth`` makes the listener demand a client certificate
  that verifies; without it the listener asks for none;
- ``--peer-cert-allowed-cn`` refuses a peer whose certificate's common name
  is another (checked on both ends once the handshake is done, before a byte
  of raft is read or written);
- ``--peer-auto-tls`` (when no certificate is given) makes a self-signed
  certificate in ``<data-dir>/fixtures/peer`` (kept across restarts), and the
  dialer then skips verifying the other end, which has one of its own;
- the dialer checks that the certificate is for the host it dialed.

Certificate files are read again when they change (checked at each new
connection), so a rotation needs no restart.
"""

from __future__ import annotations

import datetime
import ipaddress
import logging
import os
import ssl
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from petcd.server.transport.wire import TransportError

if TYPE_CHECKING:
    from petcd.server.config import ServerConfig

log = logging.getLogger("petcd.server.transport")

# What a TLS handshake may take before the listener hangs up (etcd: Go's default of none, but
# a peer that opens connections and never finishes them must not hold them forever).
TLS_HANDSHAKE_TIMEOUT = 10.0
# etcd's --self-signed-cert-validity default: one year.
SELF_SIGNED_VALIDITY_DAYS = 365


class TLSConfigError(TransportError):
    """Peer TLS settings or files petcd cannot start with."""


@dataclass(slots=True)
class PeerTLS:
    """The peer port's TLS settings, and the ssl contexts built from them (rebuilt when the files change)."""

    cert_file: str
    key_file: str
    trusted_ca_file: str = ""
    client_cert_auth: bool = False
    allowed_cn: str = ""
    # a self-signed certificate of petcd's own (--peer-auto-tls): the dialer skips verification
    self_signed: bool = False
    _stamp: tuple[tuple[int, int], ...] = field(default=(), repr=False)
    _server: ssl.SSLContext | None = field(default=None, repr=False)
    _client: ssl.SSLContext | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if not self.cert_file or not self.key_file:
            raise TLSConfigError("KeyFile and CertFile are not presented")
        self._load()

    def _files(self) -> list[str]:
        return [f for f in (self.cert_file, self.key_file, self.trusted_ca_file) if f]

    def _current_stamp(self) -> tuple[tuple[int, int], ...]:
        out = []
        for f in self._files():
            try:
                st = os.stat(f)
            except OSError as exc:
                raise TLSConfigError(f"open {f}: {_go_error(exc)}") from None
            out.append((st.st_mtime_ns, st.st_size))
        return tuple(out)

    def _load(self) -> None:
        """Build both contexts from the files. On a reload the listener's
        context is updated in place (it keeps the object; OpenSSL uses a
        context's certificate for the connections made after), and only once
        a fresh one has loaded, so a bad file set never half-replaces a good one."""
        stamp = self._current_stamp()
        server, client = self._build(), self._build(client=True)
        if self._server is not None:
            self._server.load_cert_chain(self.cert_file, self.key_file)
            if self.trusted_ca_file:
                self._server.load_verify_locations(self.trusted_ca_file)
            server = self._server
        self._server, self._client, self._stamp = server, client, stamp

    def _build(self, *, client: bool = False) -> ssl.SSLContext:
        try:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT if client else ssl.PROTOCOL_TLS_SERVER)
            ctx.minimum_version = ssl.TLSVersion.TLSv1_2  # etcd's default --tls-min-version
            ctx.load_cert_chain(self.cert_file, self.key_file)
            if self.trusted_ca_file:
                ctx.load_verify_locations(self.trusted_ca_file)
            else:
                ctx.load_default_certs(ssl.Purpose.SERVER_AUTH if client else ssl.Purpose.CLIENT_AUTH)
        except ssl.SSLError as exc:
            raise TLSConfigError(f"cannot load peer TLS files {', '.join(self._files())}: {exc}") from None
        except OSError as exc:
            raise TLSConfigError(f"open {exc.filename or ', '.join(self._files())}: {_go_error(exc)}") from None
        if client:
            if self.self_signed:
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
        else:
            ctx.verify_mode = ssl.CERT_REQUIRED if self.client_cert_auth else ssl.CERT_NONE
        return ctx

    def refresh(self) -> None:
        """Re-read the files if they changed since they were last read. A
        broken new set (a key that does not match, a half-written file) keeps
        the last good one, with a logged reason."""
        try:
            if self._current_stamp() != self._stamp:
                self._load()
                log.info("petcd: reloaded peer TLS files %s", ", ".join(self._files()))
        except TLSConfigError as exc:
            log.warning("petcd: keeping the peer TLS certificates in use: %s", exc)

    def server_context(self) -> ssl.SSLContext:
        """The listener's context: always the same object, updated in place by refresh()."""
        assert self._server is not None
        return self._server

    def client_context(self) -> ssl.SSLContext:
        """The dialer's context, fresh if the files changed."""
        self.refresh()
        assert self._client is not None
        return self._client

    def check_peer(self, cert: object, *, inbound: bool) -> str | None:
        """Why the other end's certificate (ssl's getpeercert() dict) is refused; None if it is not.
        A listener that asks for no client certificate has none to check (as in etcd)."""
        if not self.allowed_cn or (inbound and not self.client_cert_auth):
            return None
        cn = common_name(cert)
        if cn != self.allowed_cn:
            return f"CommonName authentication failed (certificate CN {cn!r}, allowed {self.allowed_cn!r})"
        return None


def _go_error(exc: OSError) -> str:
    """An OS error worded as Go words it ("no such file or directory"), as etcd reports it."""
    text = exc.strerror or str(exc)
    return text[:1].lower() + text[1:]


def common_name(cert: object) -> str | None:
    """The subject common name of a certificate as ssl's getpeercert() gives it."""
    if not isinstance(cert, dict):
        return None
    for rdn in cert.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    return None


def self_signed(directory: str, hosts: list[str], validity_days: int = SELF_SIGNED_VALIDITY_DAYS) -> tuple[str, str]:
    """(cert file, key file) of a self-signed certificate for hosts in
    directory, made now unless both files are already there (etcd keeps them
    across restarts the same way)."""
    cert_path = os.path.join(directory, "cert.pem")
    key_path = os.path.join(directory, "key.pem")
    if os.path.exists(cert_path) and os.path.exists(key_path):
        return cert_path, key_path
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    os.makedirs(directory, mode=0o700, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = []
    for h in dict.fromkeys(hosts):
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            names.append(x509.DNSName(h))
    now = datetime.datetime.now(datetime.UTC)
    subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "petcd")])
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=validity_days))
        .add_extension(x509.KeyUsage(digital_signature=True, key_encipherment=True, content_commitment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                     crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH,
                                              x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
    )
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    cert = builder.sign(key, hashes.SHA256())
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    with open(cert_path, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    log.info("petcd: made a self-signed peer certificate in %s for %s", directory, ", ".join(hosts))
    return cert_path, key_path


def peer_tls_from_config(cfg: ServerConfig) -> PeerTLS | None:
    """The peer TLS a member's configuration asks for (None: plain TCP only).
    TLSConfigError, with etcd's wording, for files that cannot be used."""
    cert, key = cfg.peer_cert_file, cfg.peer_key_file
    if cfg.peer_auto_tls and not (cert or key):
        from petcd.server.urls import parse_url

        hosts = [parse_url(u).host for u in cfg.listen_peer_urls]
        cert, key = self_signed(os.path.join(cfg.data_dir, "fixtures", "peer"), hosts)
        return PeerTLS(cert, key, allowed_cn=cfg.peer_cert_allowed_cn, self_signed=True)
    if cfg.peer_auto_tls:
        log.warning("petcd: ignoring --peer-auto-tls since certificate files are given")
    if not (cert or key):
        return None  # etcd's TLSInfo.Empty(): no certificate, no TLS (an https peer URL is then refused)
    return PeerTLS(cert, key, cfg.peer_trusted_ca_file, cfg.peer_client_cert_auth, cfg.peer_cert_allowed_cn)
