"""TLS on the peer port: the peer transport's view of petcd/server/tls.py.

A member's peer certificate (--peer-cert-file) is both its listener's and
the one it presents when it dials; --peer-cert-allowed-cn is checked on both
ends. See petcd/server/tls.py for the rules, which are etcd's.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from petcd.server.tls import (
    TLS_HANDSHAKE_TIMEOUT,
    TLSConfigError,
    TLSInfo,
    common_name,
    self_signed,
    tls_from_config,
)

if TYPE_CHECKING:
    from petcd.server.config import ServerConfig

PeerTLS = TLSInfo


def peer_tls_from_config(cfg: ServerConfig) -> PeerTLS | None:
    """The peer TLS a member's configuration asks for (None: plain TCP only)."""
    return tls_from_config(cfg, peer=True)


__all__ = ["TLS_HANDSHAKE_TIMEOUT", "PeerTLS", "TLSConfigError", "common_name", "peer_tls_from_config", "self_signed"]
