"""The acceptor's side of the peer port: one protocol object per inbound connection.

It reads the opening (the raft or call handshake, or the member-list
request of a joining member), checks that the dialer is in this cluster and
dialed this member, then decodes frames (petcd/server/transport/wire.py
bounds them before they are buffered) and hands each message to the owner in
order; on a call connection, calls go to an ``Answering``
(petcd/server/transport/calls.py). A malformed frame closes this connection
only, with a logged reason; a dialer that sends no handshake within
HANDSHAKE_TIMEOUT is dropped.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, cast

from petcd import stats
from petcd.raft import MessageType
from petcd.server.transport.calls import Answering
from petcd.server.transport.peer import set_nodelay
from petcd.server.transport.wire import (
    CALL_MAGIC,
    HANDSHAKE_SIZE,
    SNAP_ACK,
    FrameError,
    Handshake,
    Opening,
    check_sender,
    classify_opening,
    read_frame,
)

if TYPE_CHECKING:
    from petcd.server.transport.peer_transport import PeerTransport

log = logging.getLogger("petcd.server.transport")

HANDSHAKE_TIMEOUT = 10.0


class Inbound(asyncio.Protocol):
    """The acceptor's side of one connection: check the handshake, then decode frames and deliver them."""

    def __init__(self, owner: PeerTransport) -> None:
        self.owner = owner
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.peer_id: int | None = None  # set once the handshake is accepted
        self.need = HANDSHAKE_SIZE  # bytes buf must hold before parsing is worth trying
        self.closed = False
        self.timer: asyncio.TimerHandle | None = None
        self.answering: Answering | None = None  # set once a call handshake is accepted

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        set_nodelay(transport)
        self.owner.inbound.add(self)
        why = self.owner.refused(transport, inbound=True)
        if why is not None:
            log.warning("petcd: rejected peer connection from %s: %s", self.remote(), why)
            self.close()
            return
        self.timer = self.owner.loop.call_later(HANDSHAKE_TIMEOUT, self.handshake_timeout)

    def handshake_timeout(self) -> None:
        if self.peer_id is None:
            log.warning("petcd: peer connection from %s sent no handshake in %.0f s; closing",
                        self.remote(), HANDSHAKE_TIMEOUT)
            self.close()

    def remote(self) -> str:
        addr = self.transport.get_extra_info("peername") if self.transport is not None else None
        return f"{addr[0]}:{addr[1]}" if isinstance(addr, tuple) else str(addr)

    def close(self) -> None:
        self.closed = True
        self.buf = bytearray()
        if self.transport is not None:
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        self.buf += data
        if self.answering is not None:
            self.answer_calls()
            return
        if self.peer_id is None:
            opening = classify_opening(self.buf)
            if opening is Opening.MEMBERS:
                self.answer_members()
                return
            if opening is Opening.BAD:
                log.warning("petcd: closing connection from %s: not a petcd raft peer (bad magic)", self.remote())
                self.close()
                return
        if len(self.buf) < self.need:
            return
        try:
            self.parse()
        except FrameError as exc:
            log.warning("petcd: closing connection from peer %x at %s: %s", self.peer_id or 0, self.remote(), exc)
            self.close()

    def answer_calls(self) -> None:
        assert self.answering is not None
        try:
            self.answering.feed()
        except FrameError as exc:
            log.warning("petcd: closing the call connection from peer %x at %s: %s",
                        self.peer_id or 0, self.remote(), exc)
            self.close()

    def answer_members(self) -> None:
        info = self.owner.members_info
        if self.transport is not None and info is not None:
            self.transport.write(info())
        self.close()

    def accept(self, hs: Handshake) -> bool:
        """Whether the handshake is for this member of this cluster from another member (logged if not)."""
        owner = self.owner
        if hs.cluster_id != owner.cluster_id:
            log.error("petcd: peer %x is in cluster %x, not %x", hs.from_id, hs.cluster_id, owner.cluster_id)
            return False
        if hs.to_id != owner.local_id:
            log.error("petcd: peer %x dialed member %x, but this is member %x (cluster %x)",
                      hs.from_id, hs.to_id, owner.local_id, owner.cluster_id)
            return False
        if hs.from_id in (0, owner.local_id):
            log.error("petcd: closing connection from %s: its handshake claims to come from member %x",
                      self.remote(), hs.from_id)
            return False
        return True

    def parse(self) -> None:
        buf = self.buf
        off = 0
        if self.peer_id is None:
            hs = Handshake.decode(buf)
            if not self.accept(hs):
                self.close()
                return
            self.peer_id = hs.from_id
            if self.timer is not None:
                self.timer.cancel()
            log.debug("petcd: peer %x connected from %s", hs.from_id, self.remote())
            off = HANDSHAKE_SIZE
            if hs.magic == CALL_MAGIC:
                del buf[:off]
                self.answering = Answering(self, hs.from_id, self.owner.on_call)
                self.answer_calls()
                return
        max_message_bytes = self.owner.max_message_bytes
        while True:
            got = read_frame(buf, off, max_message_bytes)
            if isinstance(got, int):
                need = got
                break
            msg, off = got
            check_sender(msg, self.peer_id)
            if not self.owner.deliver(msg, self) and msg.type == MessageType.MsgSnap:
                # No ack is coming: hang up so the sender reports the snapshot failed now, not at its timeout.
                self.close()
            if self.closed or self.owner.stopped:
                return
        stats.PEER_RECEIVED[self.peer_id] += off  # etcd_network_peer_received_bytes_total
        del buf[:off]
        self.need = need

    def ack_snapshot(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.write(SNAP_ACK)

    def pause_writing(self) -> None:
        if self.answering is not None:
            self.answering.pause_writing()

    def resume_writing(self) -> None:
        if self.answering is not None:
            self.answering.resume_writing()

    def eof_received(self) -> bool:
        if self.buf and not self.closed:
            log.warning("petcd: peer %x at %s hung up in the middle of a frame", self.peer_id or 0, self.remote())
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.buf = bytearray()
        if self.timer is not None:
            self.timer.cancel()
        if self.answering is not None:
            self.answering.close()
        self.owner.inbound.discard(self)
