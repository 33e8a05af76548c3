"""PeerTransport: the raft peer transport's face to the server.

It listens on the member's peer URLs (petcd/server/transport/inbound.py
serves each accepted connection), keeps one ``Peer`` per remote member
(petcd/server/transport/peer.py: the outbound state machine) and routes
``send`` to them; ``call`` asks a member something on the call connection
to it (petcd/server/transport/calls.py), and a prober pings every peer on
it to measure the round trip (etcd_network_peer_round_trip_time_seconds).
The guarantees are listed in the package's docstring.
"""

from __future__ import annotations

import asyncio
import logging
import math
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from petcd import stats
from petcd.raft import Message, MessageType
from petcd.server.transport.call_wire import PING
from petcd.server.transport.calls import CallChannel, CallHandler, CallTimeout
from petcd.server.transport.inbound import Inbound
from petcd.server.transport.peer import Peer
from petcd.server.transport.tls import TLS_HANDSHAKE_TIMEOUT, PeerTLS
from petcd.server.transport.wire import (
    DEFAULT_MAX_MESSAGE_BYTES,
    BadURLError,
    TransportError,
)
from petcd.server.urls import PEER_SCHEMES, URL, URLError, parse_url

log = logging.getLogger("petcd.server.transport")

UNREACHABLE_INTERVAL = 0.1
DEFAULT_QUEUE_MESSAGES = 4096
DEFAULT_QUEUE_BYTES = 64 << 20
# How often each peer is pinged for its round-trip time (etcd probes every few seconds too).
PROBE_INTERVAL = 5.0


@dataclass(slots=True, frozen=True)
class Backlog:
    """What is waiting to go to one peer: queued messages, and bytes not yet in the kernel."""

    messages: int
    bytes: int


class PeerTransport:
    """Long-lived connections between members carrying raft messages."""

    def __init__(
        self,
        local_id: int,
        cluster_id: int,
        listen_urls: list[str],
        on_message: Callable[[Message], None],
        on_unreachable: Callable[[int], None] = lambda _id: None,
        on_snapshot_status: Callable[[int, bool], None] = lambda _id, _ok: None,
        *,
        members_info: Callable[[], bytes] | None = None,
        on_call: CallHandler | None = None,
        on_snapshot: Callable[[Message], Awaitable[bool]] | None = None,
        probe_interval: float = PROBE_INTERVAL,
        max_queue_messages: int = DEFAULT_QUEUE_MESSAGES,
        max_queue_bytes: int = DEFAULT_QUEUE_BYTES,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        tls: PeerTLS | None = None,
    ) -> None:
        self.tls = tls  # None: plain TCP only; https peers cannot be dialed, https listen URLs are refused
        for u in listen_urls:
            if self.parse_url(u).tls and tls is None:
                raise BadURLError(f"cannot listen on TLS for {self.parse_url(u).netloc}: "
                                  "KeyFile and CertFile are not presented")
        self.local_id = local_id
        self.cluster_id = cluster_id
        self.listen_urls = list(listen_urls)
        self.on_message = on_message
        self.on_unreachable = on_unreachable
        self.on_snapshot_status = on_snapshot_status
        self.members_info = members_info
        self.on_call = on_call  # answers peers' calls (PING is answered here); None: every call is refused
        # takes a received MsgSnap, which is acked once it returns True (False
        # or an error hangs up on the sender); None: on_message takes it
        self.on_snapshot = on_snapshot
        self._receiving: set[asyncio.Task[None]] = set()  # MsgSnaps with on_snapshot
        self.probe_interval = probe_interval  # 0: no probing
        self.max_queue_messages = max_queue_messages
        self.max_queue_bytes = max_queue_bytes
        self.max_message_bytes = max_message_bytes  # the largest MsgApp/MsgProp frame accepted from a peer
        self.stopped = False
        self.inbound: set[Inbound] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._servers: list[asyncio.Server] = []
        self._peers: dict[int, Peer] = {}
        self._last_unreachable: dict[int, float] = {}
        self._channels: dict[int, CallChannel] = {}
        self._prober: asyncio.Task[None] | None = None

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        return self._loop

    def parse_url(self, url: str) -> URL:
        """A listen or peer URL this transport can use; BadURLError otherwise."""
        try:
            return parse_url(url, PEER_SCHEMES)
        except URLError as exc:
            raise BadURLError(f"petcd: bad peer URL: {exc}") from None

    def dial_target(self, url: str) -> tuple[str, int, ssl.SSLContext | None]:
        """(host, port, TLS context or None) to dial a peer URL with."""
        u = self.parse_url(url)
        if not u.tls:
            return u.host, u.port, None
        if self.tls is None:
            raise TransportError(f"peer URL {url} needs TLS, and no peer certificate is configured "
                                 "(--peer-cert-file, --peer-key-file)")
        return u.host, u.port, self.tls.client_context()

    def refused(self, transport: asyncio.BaseTransport, *, inbound: bool) -> str | None:
        """Why a connection whose TLS handshake is done must be dropped (its
        certificate's common name is not the allowed one); None for a plain one."""
        if self.tls is None or transport.get_extra_info("ssl_object") is None:
            return None
        return self.tls.check_peer(transport.get_extra_info("peercert"), inbound=inbound)

    def _accept(self, tls: bool) -> Inbound:
        if tls and self.tls is not None:
            self.tls.refresh()  # before this connection's handshake: rotated files take effect now
        return Inbound(self)

    async def start(self) -> None:
        """Listen on every listen URL; raises OSError if one cannot be bound (nothing is left listening then)."""
        loop = self.loop
        try:
            for url in self.listen_urls:
                u = self.parse_url(url)
                if u.tls:
                    assert self.tls is not None  # __init__ refused an https listen URL without TLS
                    server = await loop.create_server(
                        lambda: self._accept(True), u.host, u.port, reuse_address=True,
                        ssl=self.tls.server_context(), ssl_handshake_timeout=TLS_HANDSHAKE_TIMEOUT)
                else:
                    server = await loop.create_server(lambda: self._accept(False), u.host, u.port,
                                                      reuse_address=True)
                self._servers.append(server)
                log.info("petcd: listening for peers on %s", url)
        except BaseException:
            for s in self._servers:
                s.close()
            self._servers.clear()
            raise
        if self.probe_interval > 0:
            self._prober = loop.create_task(self._probe(), name="petcd-peer-prober")

    @property
    def addresses(self) -> list[tuple[str, int]]:
        """The (host, port) pairs actually listened on (useful when a listen URL asked for port 0)."""
        out = []
        for server in self._servers:
            for sock in server.sockets:
                name = sock.getsockname()
                out.append((str(name[0]), int(name[1])))
        return out

    def add_peer(self, member_id: int, urls: list[str]) -> None:
        """Know a peer by its URLs; the connection is made when the first message for it is sent."""
        if member_id in self._peers:
            self.update_peer(member_id, urls)
            return
        self._peers[member_id] = Peer(self, member_id, urls)

    def update_peer(self, member_id: int, urls: list[str]) -> None:
        """Give a peer new URLs; an open connection to a URL no longer listed is closed and redialed."""
        peer = self._peers.get(member_id)
        if peer is None:
            self.add_peer(member_id, urls)
        else:
            peer.update(urls)

    def remove_peer(self, member_id: int) -> None:
        """Forget a peer: close its connection, drop what is queued, abandon snapshots in flight."""
        peer = self._peers.pop(member_id, None)
        if peer is not None:
            peer.shutdown()
        self._last_unreachable.pop(member_id, None)
        channel = self._channels.pop(member_id, None)
        if channel is not None:
            channel.close()

    def peer_urls(self, member_id: int) -> list[str]:
        """The URLs a peer is known by (none for an unknown one)."""
        peer = self._peers.get(member_id)
        return list(peer.urls) if peer is not None else []

    async def call(self, member_id: int, kind: int, body: bytes, timeout: float) -> bytes:
        """Ask a peer one call of kind with body, on the call connection to it;
        the answer's body. Raises CallFailed (the peer's error message),
        CallTimeout, or TransportError (unknown peer, unreachable, connection lost)."""
        if self.stopped:
            raise TransportError("the transport is stopped")
        if member_id not in self._peers:
            raise TransportError(f"peer {member_id:x} is not known")
        channel = self._channels.get(member_id)
        if channel is None:
            channel = self._channels[member_id] = CallChannel(self, member_id)
        return await channel.call(kind, body, timeout)

    async def _probe(self) -> None:
        """Ping every peer each probe_interval; each answer's round trip is
        observed into etcd_network_peer_round_trip_time_seconds{To=peer}."""
        async def ping(member_id: int) -> None:
            channel = self._channels.get(member_id)
            try:
                if channel is None or channel.up_since is None:
                    await self.call(member_id, PING, b"", self.probe_interval)  # dials: not a round trip
                start = time.perf_counter()  # not loop.time(): uvloop's counts whole milliseconds
                await self.call(member_id, PING, b"", self.probe_interval)
            except CallTimeout:
                # A ping is answered by the peer's transport at once: no answer means the connection
                # is dead without having been closed (a peer host gone). Dial anew next time.
                channel = self._channels.get(member_id)
                if channel is not None:
                    channel.reset(f"no answer to a ping in {self.probe_interval:.1f} s")
                return
            except TransportError:
                return  # etcd's prober observes nothing for a peer it cannot reach either
            rtt = stats.PEER_RTT.get(member_id)
            if rtt is None:
                rtt = stats.PEER_RTT[member_id] = stats.Histogram(stats.PEER_RTT_BUCKETS)
            rtt.observe(time.perf_counter() - start)

        await asyncio.sleep(min(1.0, self.probe_interval))  # the first probe soon, so a new member shows one
        while not self.stopped:
            peers = list(self._peers)
            for member_id, got in zip(peers, await asyncio.gather(*(ping(p) for p in peers), return_exceptions=True),
                                      strict=True):
                if isinstance(got, Exception):
                    log.error("petcd: probing peer %x failed", member_id, exc_info=got)
            await asyncio.sleep(self.probe_interval)

    def send(self, msgs: list[Message]) -> None:
        """Hand messages to their peers' connections; never blocks. MsgSnap goes on its own connection."""
        if self.stopped:
            return
        if len(msgs) == 1 and msgs[0].type != MessageType.MsgSnap:
            self._send_to(msgs[0].to, msgs)
            return
        groups: dict[int, list[Message]] = {}
        for m in msgs:
            if m.type == MessageType.MsgSnap:
                self._send_snapshot(m)
                continue
            group = groups.get(m.to)
            if group is None:
                groups[m.to] = [m]
            else:
                group.append(m)
        for to, group in groups.items():
            self._send_to(to, group)

    def _send_to(self, to: int, msgs: list[Message]) -> None:
        peer = self._peers.get(to)
        if peer is None:
            log.debug("petcd: dropped %d messages to unknown peer %x", len(msgs), to)
            self.unreachable(to)
            return
        peer.enqueue(msgs)

    def _send_snapshot(self, msg: Message) -> None:
        peer = self._peers.get(msg.to)
        if peer is None:
            log.warning("petcd: cannot send a snapshot to unknown peer %x", msg.to)
            self.unreachable(msg.to)
            self.loop.call_soon(self.report_snapshot, msg.to, False)
            return
        peer.send_snapshot(msg)

    def active_since(self, member_id: int) -> float | None:
        """loop.time() since when a connection to the peer has been up (the
        raft one or the call one, whichever came up first); None while both
        are down. The call connection counts because a follower sends raft
        messages to the leader only: the prober's call connection is what
        tells it, as etcd's streams tell etcd, that another follower is up."""
        peer = self._peers.get(member_id)
        if peer is None:
            return None
        channel = self._channels.get(member_id)
        times = [t for t in (peer.up_since, channel.up_since if channel is not None else None) if t is not None]
        return min(times, default=None)

    def backlog(self, member_id: int) -> Backlog:
        """How much is waiting to go to a peer (zero for an unknown one)."""
        peer = self._peers.get(member_id)
        return Backlog(*peer.backlog()) if peer is not None else Backlog(0, 0)

    async def stop(self) -> None:
        """Stop listening, close every connection, abandon queued messages and snapshots in flight."""
        if self.stopped:
            return
        self.stopped = True
        for server in self._servers:
            server.close()
        tasks: list[asyncio.Task[None]] = []
        if self._prober is not None:
            self._prober.cancel()
            tasks.append(self._prober)
        for channel in self._channels.values():
            channel.close()
        self._channels.clear()
        for peer in self._peers.values():
            tasks.extend(peer.shutdown())
        for conn in list(self.inbound):
            if conn.transport is not None:
                conn.transport.abort()
        for task in self._receiving:
            task.cancel()
            tasks.append(task)
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        for server in self._servers:
            await server.wait_closed()
        self._servers.clear()

    # --- called by the connections -----------------------------------------------------------

    def unreachable(self, member_id: int) -> None:
        """Tell the caller, soon and at most once per 100 ms per peer, that messages to it were dropped."""
        now = self.loop.time()
        if now - self._last_unreachable.get(member_id, -math.inf) < UNREACHABLE_INTERVAL:
            return
        self._last_unreachable[member_id] = now
        self.loop.call_soon(self._call_unreachable, member_id)

    def _call_unreachable(self, member_id: int) -> None:
        if self.stopped:
            return
        try:
            self.on_unreachable(member_id)
        except Exception:
            log.exception("petcd: on_unreachable(%x) failed", member_id)

    def deliver(self, msg: Message, conn: Inbound) -> bool:
        """Hand one received message to on_message (acking a MsgSnap); False if it was dropped or failed."""
        if msg.to != self.local_id:
            log.debug("petcd: dropped a %s for member %x from peer %x: this is member %x",
                      msg.type.name, msg.to, msg.from_, self.local_id)
            return False
        if msg.type == MessageType.MsgSnap and self.on_snapshot is not None:
            task = self.loop.create_task(self._receive_snapshot(self.on_snapshot, msg, conn))
            self._receiving.add(task)
            task.add_done_callback(self._receiving.discard)
            return True
        try:
            self.on_message(msg)
        except Exception:
            log.exception("petcd: handling a %s from peer %x failed", msg.type.name, msg.from_)
            return False
        if msg.type == MessageType.MsgSnap:
            conn.ack_snapshot()
        return True

    async def _receive_snapshot(self, on_snapshot: Callable[[Message], Awaitable[bool]], msg: Message,
                                conn: Inbound) -> None:
        try:
            taken = await on_snapshot(msg)
        except Exception:
            log.exception("petcd: handling a MsgSnap from peer %x failed", msg.from_)
            taken = False
        if taken:
            conn.ack_snapshot()
        else:
            conn.close()  # no ack is coming: the sender reports the snapshot failed now, not at its timeout

    def report_snapshot(self, member_id: int, ok: bool) -> None:
        try:
            self.on_snapshot_status(member_id, ok)
        except Exception:
            log.exception("petcd: on_snapshot_status(%x, %s) failed", member_id, ok)
