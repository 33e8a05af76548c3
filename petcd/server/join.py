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

from petcd.server.transport.tls import PeerTLS
from petcd.server.transport.wire import MEMBERS_MAGIC, BadURLError, TransportError
from petcd.server.urls import PEER_SCHEMES, URLError, parse_url


async def fetch_members(peer_urls: list[str], timeout: float = 5.0, tls: PeerTLS | None = None) -> bytes:
    """Ask the first peer that answers for its cluster's member list (the
    bytes its server's members_info gave); TransportError if none answers.
    https peers are dialed with tls (the member's own peer TLS), checked as
    the transport checks them."""
    errors = []
    for url in peer_urls:
        try:
            u = parse_url(url, PEER_SCHEMES)
        except URLError as exc:
            raise BadURLError(f"petcd: bad peer URL: {exc}") from None
        if u.tls and tls is None:
            errors.append(f"{url}: needs TLS, and no peer certificate is configured")
            continue
        ctx = tls.client_context() if u.tls and tls is not None else None
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(u.host, u.port, ssl=ctx, server_hostname=u.host if ctx is not None else None),
                timeout)
            try:
                why = tls.check_peer(writer.get_extra_info("peercert"), inbound=False) if ctx and tls else None
                if why is not None:
                    errors.append(f"{url}: {why}")
                    continue
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
