"""Joining a running cluster: ask its members who is in it.

A member started with ``--initial-cluster-state=existing`` after an
``etcdctl member add`` does not know its own member id or the cluster id yet:
it asks a peer (etcd asks its peers' ``/members``). On petcd's peer port the
question is the MEMBERS_MAGIC opening (petcd/server/transport/wire.py); the
peer answers with the bytes its server's ``members_info`` gives (a JSON
document, see the cluster code) and hangs up.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable

from petcd.server.transport.wire import MEMBERS_MAGIC, BadURLError, TransportError
from petcd.server.urls import PEER_SCHEMES, URLError, parse_url

# How to dial one peer URL: (host, port, TLS context or None). The default dials http URLs only.
DialTarget = Callable[[str], tuple[str, int, "ssl.SSLContext | None"]]


def plain_target(url: str) -> tuple[str, int, ssl.SSLContext | None]:
    """Dial an http:// peer URL without TLS; BadURLError for anything else."""
    try:
        u = parse_url(url, PEER_SCHEMES)
    except URLError as exc:
        raise BadURLError(f"petcd: bad peer URL: {exc}") from None
    if u.tls:
        raise BadURLError(f"petcd: peer URL {url} needs TLS, and no peer TLS is configured")
    return u.host, u.port, None


async def fetch_members(peer_urls: list[str], timeout: float = 5.0, dial: DialTarget = plain_target) -> bytes:
    """Ask the first peer that answers for its cluster's member list (the
    bytes its server's members_info gave); TransportError if none answers."""
    errors = []
    for url in peer_urls:
        host, port, ctx = dial(url)
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(host, port, ssl=ctx, server_hostname=host if ctx is not None else None),
                timeout)
            try:
                writer.write(MEMBERS_MAGIC)
                await writer.drain()
                data = await asyncio.wait_for(reader.read(), timeout)
            finally:
                writer.close()
            if data:
                return data
            errors.append(f"{url}: no answer")
        except (OSError, TimeoutError) as exc:  # ssl.SSLError is an OSError
            errors.append(f"{url}: {exc}")
    raise TransportError("could not get the member list from any peer (" + "; ".join(errors) + ")")
