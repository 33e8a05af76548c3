"""etcd's member and listener URLs: the one parser every layer uses.

etcd takes every URL flag and every member URL through one rule (its
``types.NewURLs``): the scheme is http, https, unix or unixs, the address is
``host:port``, there is no path. petcd parses them here and nowhere else:
the flags (petcd/server/config.py), the peer transport, member add/update
(petcd/api/validation.py, the cluster code) and the applier's check of
committed member records all call ``parse_url``, and turn a ``URLError`` into
their own error type (a ConfigError, etcd's ErrBadURLs, the transport's
BadURLError). The messages are etcd's.

Pure: no I/O, no name resolution.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

# The schemes etcd's URL rule accepts at all; which of them a use supports is the caller's `schemes`.
ETCD_SCHEMES = ("http", "https", "unix", "unixs")
TLS_SCHEMES = frozenset({"https", "unixs"})
# What the peer transport can listen on and dial.
PEER_SCHEMES = ("http", "https")


class URLError(ValueError):
    """A URL etcd's rule refuses, or one petcd cannot use for this purpose.

    ``reason`` says which check failed: "syntax" (not a URL, a bad port),
    "scheme" (not one of etcd's schemes), "unsupported" (an etcd scheme this
    use does not support), "address" (no host:port), "path" (has a path)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class URL:
    """A parsed ``scheme://host:port`` URL. ``host`` is without IPv6 brackets."""

    text: str
    scheme: str
    host: str
    port: int

    @property
    def tls(self) -> bool:
        """Whether the URL asks for TLS (https, unixs)."""
        return self.scheme in TLS_SCHEMES

    @property
    def netloc(self) -> str:
        """``host:port`` as a dialer or grpc target wants it (IPv6 hosts in brackets)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def parse_url(text: str, schemes: Iterable[str] = ETCD_SCHEMES) -> URL:
    """Parse one URL by etcd's rule; ``schemes`` narrows the schemes this use supports.

    Raises URLError with etcd's message: "URL scheme must be http, https,
    unix, or unixs: U", 'URL address does not have the form "host:port": U',
    "URL must not contain a path: U"; and "SCHEME URLs are not supported yet:
    U" for an etcd scheme outside ``schemes``."""
    text = text.strip()
    try:
        parts = urlsplit(text)
        port = parts.port
        host = parts.hostname
    except ValueError as exc:  # a bad IPv6 literal, a port out of range or not a number
        raise URLError("syntax", f"invalid URL {text!r}: {exc}") from None
    if parts.scheme not in ETCD_SCHEMES:
        raise URLError("scheme", f"URL scheme must be http, https, unix, or unixs: {text}")
    if parts.scheme not in tuple(schemes):
        raise URLError("unsupported", f"{parts.scheme} URLs are not supported yet: {text}")
    if not host or port is None:
        raise URLError("address", f'URL address does not have the form "host:port": {text}')
    if parts.path:
        raise URLError("path", f"URL must not contain a path: {text}")
    return URL(text, parts.scheme, host, port)


def parse_urls(texts: Iterable[str], schemes: Iterable[str] = ETCD_SCHEMES) -> list[URL]:
    """Every URL of a list by parse_url's rule; at least one ("no valid URLs given", as etcd says)."""
    out = [parse_url(t, schemes) for t in texts]
    if not out:
        raise URLError("empty", "no valid URLs given")
    return out
