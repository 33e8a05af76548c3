"""TLS for petcd's ports: etcd's certificate flags as ssl contexts (etcd's transport.TLSInfo).

One ``TLSInfo`` per port. For the peer port a member's certificate serves
both ends of its connections (the listener's server certificate, and the
client certificate it presents when it dials); for the client port only the
listener's side is used. As in etcd:

- ``trusted_ca_file`` verifies the other end; without it the system's roots do;
- ``client_cert_auth`` makes the listener demand a client certificate that
  verifies; without it the listener asks for none;
- ``allowed_cn`` (peers) refuses another end whose certificate's common name
  is another (checked once the handshake is done, before a byte is read);
- auto TLS (when no certificate is given) uses a self-signed certificate
  made in ``<data-dir>/fixtures/<peer|client>`` and kept across restarts;
  a dialer then skips verifying the other end, which has one of its own;
- a dialer checks that the certificate is for the host it dialed;
- TLS 1.2 at least (etcd's default --tls-min-version).

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

from petcd.server.urls import parse_url

if TYPE_CHECKING:
    from petcd.server.config import ServerConfig

log = logging.getLogger("petcd.server.tls")

# What a TLS handshake may take before the listener hangs up (etcd: Go's default of none, but
# a client that opens connections and never finishes them must not hold them forever).
TLS_HANDSHAKE_TIMEOUT = 10.0
# etcd's --self-signed-cert-validity default: one year.
SELF_SIGNED_VALIDITY_DAYS = 365


class TLSConfigError(Exception):
    """TLS settings or files petcd cannot start with; str() is etcd's wording where it has one."""


@dataclass(slots=True)
class TLSInfo:
    """One port's TLS settings, and the ssl contexts built from them (rebuilt when the files change)."""

    cert_file: str
    key_file: str
    trusted_ca_file: str = ""
    client_cert_auth: bool = False
    allowed_cn: str = ""
    # a self-signed certificate of petcd's own (--auto-tls, --peer-auto-tls): a dialer skips verification
    self_signed: bool = False
    # ALPN protocols the listener offers, most preferred first (the client port: h2, http/1.1)
    alpn: tuple[str, ...] = ()
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
            raise TLSConfigError(f"cannot load TLS files {', '.join(self._files())}: {exc}") from None
        except OSError as exc:
            raise TLSConfigError(f"open {exc.filename or ', '.join(self._files())}: {_go_error(exc)}") from None
        if client:
            if self.self_signed:
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
        else:
            ctx.verify_mode = ssl.CERT_REQUIRED if self.client_cert_auth else ssl.CERT_NONE
            if self.alpn:
                ctx.set_alpn_protocols(list(self.alpn))
        return ctx

    def refresh(self) -> None:
        """Re-read the files if they changed since they were last read. A
        broken new set (a key that does not match, a half-written file) keeps
        the last good one, with a logged reason."""
        try:
            if self._current_stamp() != self._stamp:
                self._load()
                log.info("petcd: reloaded TLS files %s", ", ".join(self._files()))
        except TLSConfigError as exc:
            log.warning("petcd: keeping the TLS certificates in use: %s", exc)

    def server_context(self) -> ssl.SSLContext:
        """The listener's context: always the same object, updated in place by refresh()."""
        assert self._server is not None
        return self._server

    def listener_context(self) -> ssl.SSLContext:
        """The listener's context for the next connection, the files re-read first if they changed."""
        self.refresh()
        return self.server_context()

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
    log.info("petcd: made a self-signed certificate in %s for %s", directory, ", ".join(hosts))
    return cert_path, key_path


def tls_from_config(cfg: ServerConfig, *, peer: bool) -> TLSInfo | None:
    """The TLS a member's configuration asks for on its peer port (peer=True:
    the --peer-* flags) or its client port (None: plain TCP only).
    TLSConfigError, with etcd's wording, for files that cannot be used."""
    if peer:
        cert, key, ca = cfg.peer_cert_file, cfg.peer_key_file, cfg.peer_trusted_ca_file
        client_auth, auto, allowed_cn, urls = (cfg.peer_client_cert_auth, cfg.peer_auto_tls,
                                               cfg.peer_cert_allowed_cn, cfg.listen_peer_urls)
        alpn: tuple[str, ...] = ()
    else:
        cert, key, ca = cfg.cert_file, cfg.key_file, cfg.trusted_ca_file
        client_auth, auto, allowed_cn, urls = cfg.client_cert_auth, cfg.auto_tls, "", cfg.listen_client_urls
        alpn = ("h2", "http/1.1")
    which = "peer" if peer else "client"
    if auto and not (cert or key):
        hosts = [parse_url(u).host for u in urls]
        cert, key = self_signed(os.path.join(cfg.data_dir, "fixtures", which), hosts)
        return TLSInfo(cert, key, allowed_cn=allowed_cn, self_signed=True, alpn=alpn)
    if auto:
        log.warning("petcd: ignoring %s since certificate files are given", "--peer-auto-tls" if peer else "--auto-tls")
    if not (cert or key):
        return None  # etcd's TLSInfo.Empty(): no certificate, no TLS (an https URL is then refused)
    return TLSInfo(cert, key, ca, client_auth, allowed_cn, alpn=alpn)
