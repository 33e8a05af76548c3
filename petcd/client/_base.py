"""What Client and AsyncClient share besides the operations: endpoints,
credentials and channel options."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import grpc

from petcd.client._core import Endpoint, parse_endpoints

PathOrPem = str | bytes | os.PathLike[str]

# etcd's responses can be as large as the cluster allows; never refuse one here.
CHANNEL_OPTIONS: list[tuple[str, int]] = [
    ("grpc.max_receive_message_length", -1),
    ("grpc.max_send_message_length", -1),
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.enable_retries", 0),  # the client decides what is safe to retry
]


def _read_pem(value: PathOrPem | None) -> bytes | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        return value
    with open(value, "rb") as f:
        return f.read()


@dataclass(frozen=True, slots=True)
class Settings:
    """A client's configuration, checked once at construction."""

    endpoints: list[Endpoint]
    timeout: float | None
    username: str | None
    password: str | None
    credentials: grpc.ChannelCredentials | None

    @classmethod
    def build(cls, endpoints: str | Sequence[str], timeout: float | None, username: str | None,
              password: str | None, ca_cert: PathOrPem | None, cert: PathOrPem | None,
              key: PathOrPem | None) -> Settings:
        eps = parse_endpoints(endpoints)
        if (username is None) != (password is None):
            raise ValueError("username and password go together")
        if (cert is None) != (key is None):
            raise ValueError("cert and key go together")
        creds = None
        if ca_cert is not None or cert is not None or any(e.tls for e in eps):
            creds = grpc.ssl_channel_credentials(
                root_certificates=_read_pem(ca_cert), private_key=_read_pem(key),
                certificate_chain=_read_pem(cert))
        return cls(eps, timeout, username, password, creds)
