"""The raft peer transport over real sockets on 127.0.0.1: delivery, order, reconnects,
refusals, bounded memory towards dead or stuck peers, and snapshots beside heartbeats.

Every test runs on the default asyncio loop and on uvloop (the server's loop).
"""

from __future__ import annotations

import asyncio
import logging
import struct
import time

import pytest

from petcd.raft import ConfState, Entry, Message, MessageType, Snapshot, SnapshotMetadata
from petcd.raft.bounds import MAX_ENTRIES_PER_MESSAGE
from petcd.server.transport import (
    HANDSHAKE_SIZE,
    MAGIC,
    BadURLError,
    PeerTransport,
)
from petcd.testing.harness import free_port
from tests.server.transport_nodes import (
    CLUSTER,
    Node,
    Run,
    frame,
    handshake,
    heartbeat,
    hung_up,
    link,
    make_node,
    started,
    wait_until,
)

try:
    import uvloop
except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
    uvloop = None  # type: ignore[assignment]



def app(frm: int, to: int, index: int, payload: bytes = b"v") -> Message:
    return Message(MessageType.MsgApp, to=to, from_=frm, term=3, log_term=3, index=index, commit=index,
                   entries=[Entry(3, index + 1, data=payload)])


def test_messages_round_trip_in_order(run: Run[None]) -> None:
    a, b = make_node(0xA1), make_node(0xB2)

    async def main() -> None:
        async with started(a, b):
            link(a, b)
            n = 1000
            for start in range(0, n, 7):  # several messages per call; the first ones wait for the dial
                a.transport.send([app(a.id, b.id, i, b"x" * (i % 50)) for i in range(start, min(start + 7, n))])
                b.transport.send([heartbeat(b.id, a.id, i) for i in range(start, min(start + 7, n))])
                if start % 140 == 0:
                    await asyncio.sleep(0)
            await wait_until(lambda: len(b.received) == n and len(a.received) == n, what="1000 messages each way")
            assert [m.index for m in b.received] == list(range(n))
            assert all(m.to == b.id and m.from_ == a.id and m.type == MessageType.MsgApp for m in b.received)
            assert b.received[77].entries == [Entry(3, 78, data=b"x" * 27)]
            assert [m.commit for m in a.received] == list(range(n))
            assert a.transport.active_since(b.id) is not None
            assert b.transport.active_since(a.id) is not None
            assert a.unreachable == [] and b.unreachable == []

    run(main())


def test_peer_that_starts_later_is_reached_after_reconnect(run: Run[None]) -> None:
    port = free_port()
    a = make_node(0xA1)
    b = make_node(0xB2, port=port)

    async def main() -> None:
        async with started(a):
            a.transport.add_peer(b.id, [f"http://127.0.0.1:{port}"])
            a.transport.send([heartbeat(a.id, b.id)])
            await wait_until(lambda: bool(a.unreachable), what="the refused dial to be reported")
            assert a.unreachable[0][0] == b.id
            assert a.transport.active_since(b.id) is None
            async with started(b):
                t0 = time.monotonic()
                k = 0
                while not b.received:  # keep raft-like traffic going; the backoff redial picks it up
                    k += 1
                    a.transport.send([heartbeat(a.id, b.id, k)])
                    assert time.monotonic() - t0 < 15, "peer never reached"
                    await asyncio.sleep(0.01)
                assert a.transport.active_since(b.id) is not None
                assert b.received[0].from_ == a.id and b.received[0].type == MessageType.MsgHeartbeat

    run(main())


def test_cluster_id_mismatch_is_refused(run: Run[None], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="petcd.server.transport")
    a = make_node(0xA1, cluster_id=0xC1)
    b = make_node(0xB2, cluster_id=0xC2)

    async def main() -> None:
        async with started(a, b):
            link(a, b)
            refused = "petcd: peer a1 is in cluster c1, not c2"

            def logged() -> bool:
                return any(r.getMessage() == refused and r.levelno == logging.ERROR for r in caplog.records)

            while not logged():
                a.transport.send([heartbeat(a.id, b.id)])
                await wait_until(lambda: logged() or bool(b.received), what="the refusal")
            # The refused connection is closed: the sender notices and reports the peer unreachable.
            await wait_until(lambda: any(i == b.id for i, _ in a.unreachable), what="the closed connection")
            assert b.received == []

    run(main())


def test_wrong_member_id_is_refused(run: Run[None], caplog: pytest.LogCaptureFixture) -> None:
    a, b = make_node(0xA1), make_node(0xB2)

    async def main() -> None:
        async with started(a, b):
            a.transport.add_peer(0xC3, [b.url])  # a believes member c3 lives at b's address
            refused = "petcd: peer a1 dialed member c3, but this is member b2 (cluster c1)"
            t0 = time.monotonic()
            while not any(r.getMessage() == refused for r in caplog.records):
                a.transport.send([heartbeat(a.id, 0xC3)])
                assert time.monotonic() - t0 < 15, "the refusal was not logged"
                await asyncio.sleep(0.01)
            assert b.received == []

    run(main())


def test_dead_peer_drops_reports_unreachable_and_never_blocks(run: Run[None]) -> None:
    a = make_node(0xA1, max_queue_messages=64)
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens here

    async def main() -> None:
        async with started(a):
            a.transport.add_peer(0xD4, [dead])
            t0 = time.monotonic()
            slowest = 0.0
            sent = 0
            while len(a.unreachable) < 4:
                batch = [app(a.id, 0xD4, sent + i, b"y" * 100) for i in range(50)]
                s = time.monotonic()
                a.transport.send(batch)
                slowest = max(slowest, time.monotonic() - s)
                sent += len(batch)
                backlog = a.transport.backlog(0xD4)
                assert backlog.messages <= 64, backlog
                assert backlog.bytes <= 64 * 200, backlog
                assert time.monotonic() - t0 < 15, "on_unreachable was not called"
                await asyncio.sleep(0.001)
            elapsed = time.monotonic() - t0
            assert {i for i, _ in a.unreachable} == {0xD4}
            # Reported at most once per 100 ms.
            times = [t for _, t in a.unreachable]
            assert all(t2 - t1 >= 0.095 for t1, t2 in zip(times, times[1:], strict=False)), times
            assert len(a.unreachable) <= elapsed / 0.1 + 1
            assert slowest < 0.5, f"send blocked for {slowest:.3f} s"
            assert a.transport.active_since(0xD4) is None
            assert sent > 64 * 4

    run(main())


def test_stuck_peer_bounds_memory(run: Run[None]) -> None:
    """A peer that accepts but never reads: the kernel and transport buffers fill, then the
    bounded queue, then messages are dropped and the peer reported; memory stays bounded."""
    a = make_node(0xA1, max_queue_messages=128)
    payload = b"z" * 16384

    async def main() -> None:
        conns: list[asyncio.StreamWriter] = []

        async def accept(_r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            conns.append(w)  # and never read

        server = await asyncio.start_server(accept, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with started(a):
            a.transport.add_peer(0xE5, [f"http://127.0.0.1:{port}"])
            sent = 0
            t0 = time.monotonic()
            while not a.unreachable:
                a.transport.send([app(a.id, 0xE5, sent + i, payload) for i in range(16)])
                sent += 16
                assert time.monotonic() - t0 < 15, "queue never filled"
                await asyncio.sleep(0)
            # Keep pushing well past the point of dropping: nothing grows any more.
            for _ in range(200):
                a.transport.send([app(a.id, 0xE5, sent + i, payload) for i in range(16)])
                sent += 16
                backlog = a.transport.backlog(0xE5)
                assert backlog.messages <= 128
                # the queue's bytes, plus the transport buffer (high-water mark + one call's batch)
                assert backlog.bytes <= (128 + 16 + 8) * (len(payload) + 64), backlog
                await asyncio.sleep(0)
            assert a.transport.active_since(0xE5) is not None  # still connected, just stuck
            assert a.unreachable[0][0] == 0xE5
        for w in conns:
            w.close()
        server.close()
        await server.wait_closed()

    run(main())


def test_unknown_peer_is_dropped_and_reported(run: Run[None]) -> None:
    a = make_node(0xA1)

    async def main() -> None:
        async with started(a):
            snap = Message(MessageType.MsgSnap, to=0x99, from_=a.id, term=3,
                           snapshot=Snapshot(b"s", SnapshotMetadata(ConfState([1]), 5, 3)))
            a.transport.send([heartbeat(a.id, 0x99), snap])
            assert a.unreachable == []  # reported from a later callback, never from inside send()
            await wait_until(lambda: bool(a.unreachable) and bool(a.snapshot_status), what="the reports")
            assert [i for i, _ in a.unreachable] == [0x99]
            assert a.snapshot_status == [(0x99, False)]
            assert a.transport.active_since(0x99) is None

    run(main())


def test_snapshot_is_delivered_while_heartbeats_keep_flowing(run: Run[None]) -> None:
    a, b = make_node(0xA1), make_node(0xB2)
    data = bytes(range(256)) * (20 * 4096)  # 20 MiB

    async def main() -> None:
        async with started(a, b):
            link(a, b)
            a.transport.send([heartbeat(a.id, b.id, 0)])
            await wait_until(lambda: len(b.received) == 1, what="the first heartbeat")
            up = a.transport.active_since(b.id)
            meta = SnapshotMetadata(ConfState([a.id, b.id]), index=4242, term=3)
            a.transport.send([Message(MessageType.MsgSnap, to=b.id, from_=a.id, term=3, snapshot=Snapshot(data, meta))])
            k = 0
            while not any(m.type == MessageType.MsgSnap for m in b.received):
                k += 1
                a.transport.send([heartbeat(a.id, b.id, k)])
                assert k < 1_000_000
                await asyncio.sleep(0)
            snaps = [i for i, m in enumerate(b.received) if m.type == MessageType.MsgSnap]
            assert len(snaps) == 1
            # Heartbeats sent after the snapshot overtook it on their own connection.
            before = [m.commit for m in b.received[1 : snaps[0]]]
            assert len(before) >= 3, f"only {len(before)} heartbeats arrived during the transfer"
            assert before == sorted(before)
            snap = b.received[snaps[0]].snapshot
            assert snap is not None and snap.data == data and snap.metadata == meta
            await wait_until(lambda: bool(a.snapshot_status), what="the snapshot status")
            assert a.snapshot_status == [(b.id, True)]
            assert a.transport.active_since(b.id) == up  # the ordinary connection was never disturbed
            assert a.unreachable == []

    run(main())


def test_snapshot_to_dead_peer_reports_failure(run: Run[None]) -> None:
    a = make_node(0xA1)

    async def main() -> None:
        async with started(a):
            a.transport.add_peer(0xD4, [f"http://127.0.0.1:{free_port()}"])
            snap = Snapshot(b"q" * 100_000, SnapshotMetadata(ConfState([1]), 9, 2))
            a.transport.send([Message(MessageType.MsgSnap, to=0xD4, from_=a.id, term=2, snapshot=snap)])
            await wait_until(lambda: bool(a.snapshot_status), what="the snapshot status")
            assert a.snapshot_status == [(0xD4, False)]

    run(main())


def test_snapshot_the_receiver_fails_to_handle_reports_failure(run: Run[None]) -> None:
    a = make_node(0xA1)

    def refuse(m: Message) -> None:
        raise RuntimeError("no room for a snapshot")

    b = PeerTransport(0xB2, CLUSTER, ["http://127.0.0.1:0"], on_message=refuse)

    async def main() -> None:
        async with started(a):
            await b.start()
            try:
                a.transport.add_peer(0xB2, [f"http://127.0.0.1:{b.addresses[0][1]}"])
                snap = Snapshot(b"q" * 300_000, SnapshotMetadata(ConfState([1]), 9, 2))
                t0 = time.monotonic()
                a.transport.send([Message(MessageType.MsgSnap, to=0xB2, from_=a.id, term=2, snapshot=snap)])
                await wait_until(lambda: bool(a.snapshot_status), what="the snapshot status")
                assert a.snapshot_status == [(0xB2, False)]
                assert time.monotonic() - t0 < 10  # told at once, not at the transfer timeout
            finally:
                await b.stop()

    run(main())


@pytest.mark.parametrize("taken", [True, False])
def test_a_snapshot_handed_to_on_snapshot_is_acked_only_once_it_is_taken(run: Run[None], taken: bool) -> None:
    """The receiver stages a snapshot's backend before raft takes it: the
    sender learns the outcome when on_snapshot returns (True: delivered;
    False: failed at once), and the peer's other messages keep flowing
    meanwhile."""
    a = make_node(0xA1)
    received: list[Message] = []
    staging: list[Message] = []
    release = asyncio.Event()

    async def on_snapshot(m: Message) -> bool:
        staging.append(m)
        await release.wait()
        return taken

    b = PeerTransport(0xB2, CLUSTER, ["http://127.0.0.1:0"], on_message=received.append, on_snapshot=on_snapshot)

    async def main() -> None:
        async with started(a):
            await b.start()
            try:
                a.transport.add_peer(0xB2, [f"http://127.0.0.1:{b.addresses[0][1]}"])
                snap = Snapshot(b"q" * 300_000, SnapshotMetadata(ConfState([1]), 9, 2))
                a.transport.send([Message(MessageType.MsgSnap, to=0xB2, from_=a.id, term=2, snapshot=snap)])
                await wait_until(lambda: bool(staging), what="the snapshot to reach on_snapshot")
                a.transport.send([heartbeat(a.id, 0xB2, 7)])
                await wait_until(lambda: bool(received), what="a heartbeat while the snapshot is staged")
                assert a.snapshot_status == [], "the snapshot was acked before on_snapshot returned"
                assert staging[0].snapshot is not None and staging[0].snapshot.data == snap.data
                assert not any(m.type == MessageType.MsgSnap for m in received)
                release.set()
                await wait_until(lambda: bool(a.snapshot_status), what="the snapshot status")
                assert a.snapshot_status == [(0xB2, taken)]
            finally:
                await b.stop()

    run(main())


def test_garbage_on_listener_closes_connection_and_transport_keeps_working(run: Run[None]) -> None:
    a, b = make_node(0xA1), make_node(0xB2)

    async def main() -> None:
        async with started(a, b):
            host, port = b.transport.addresses[0]
            # 1. not our protocol at all
            r, w = await asyncio.open_connection(host, port)
            w.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            assert await hung_up(r)
            w.close()
            # 2. a good handshake, one good message, a message for another member, then a bad frame
            r, w = await asyncio.open_connection(host, port)
            assert len(handshake(CLUSTER, 0xA1, 0xB2)) == HANDSHAKE_SIZE
            w.write(handshake(CLUSTER, 0xA1, 0xB2) + frame(heartbeat(0xA1, 0xB2, 7).to_bytes())
                    + frame(heartbeat(0xA1, 0xC3, 8).to_bytes()) + frame(b"\xff\xff\xff"))
            assert await hung_up(r)
            w.close()
            assert [m.commit for m in b.received] == [7]
            # 3. a magic that goes wrong part way, arriving in pieces
            r, w = await asyncio.open_connection(host, port)
            w.write(MAGIC[:5])
            await w.drain()
            w.write(b"XYZ")
            assert await hung_up(r)
            w.close()
            # 4. a good handshake, the start of a huge frame, then the sender hangs up
            r, w = await asyncio.open_connection(host, port)
            w.write(handshake(CLUSTER, 0xA1, 0xB2) + struct.pack(">I", 0x7FFF_FFFF) + b"\x08\x03")
            w.write_eof()
            assert await hung_up(r)
            w.close()
            # The listener still serves real peers.
            link(a, b)
            a.transport.send([heartbeat(a.id, b.id, i) for i in range(100, 110)])
            await wait_until(lambda: len(b.received) == 11, what="the real peer's messages")
            assert [m.commit for m in b.received[1:]] == list(range(100, 110))

    run(main())


def test_update_and_remove_peer(run: Run[None]) -> None:
    a, b1, b2 = make_node(0xA1), make_node(0xB2), make_node(0xB2)

    async def main() -> None:
        async with started(a, b1, b2):
            a.transport.add_peer(0xB2, [b1.url])
            a.transport.send([heartbeat(a.id, 0xB2, 1)])
            await wait_until(lambda: len(b1.received) == 1, what="delivery to the first address")
            a.transport.update_peer(0xB2, [b2.url])  # the member moved: redial at once

            async def delivered_to_b2() -> None:
                k = 1
                while not b2.received:
                    k += 1
                    a.transport.send([heartbeat(a.id, 0xB2, k)])
                    await asyncio.sleep(0.005)

            await asyncio.wait_for(delivered_to_b2(), 15)
            assert a.transport.active_since(0xB2) is not None
            a.transport.remove_peer(0xB2)
            assert a.transport.active_since(0xB2) is None
            a.transport.send([heartbeat(a.id, 0xB2, 999)])
            await wait_until(lambda: any(i == 0xB2 for i, _ in a.unreachable), what="unknown-peer report")
            assert all(m.commit != 999 for m in b1.received + b2.received)

    run(main())


def test_stop_closes_listener_and_send_after_stop_is_harmless(run: Run[None]) -> None:
    a, b = make_node(0xA1), make_node(0xB2)

    async def main() -> None:
        async with started(a, b):
            link(a, b)
            a.transport.send([heartbeat(a.id, b.id, 1)])
            await wait_until(lambda: len(b.received) == 1, what="delivery")
            host, port = b.transport.addresses[0]
        a.transport.send([heartbeat(a.id, b.id, 2)])  # after stop: dropped, no error
        with pytest.raises(OSError):
            await asyncio.open_connection(host, port)

    run(main())


def test_bad_urls_are_refused() -> None:
    with pytest.raises(BadURLError):
        PeerTransport(1, 1, ["https://127.0.0.1:2380"], on_message=lambda m: None)
    tr = PeerTransport(1, 1, ["http://127.0.0.1:0"], on_message=lambda m: None)
    with pytest.raises(BadURLError):
        tr.add_peer(2, ["127.0.0.1:2380"])


# ---- bounds on what a peer may send ------------------------------------------------------------

def _raw_msgapp(frm: int, to: int, entries: int, extra: bytes = b"") -> bytes:
    """A MsgApp body with `entries` empty entries (two bytes each on the wire) and extra fields after."""
    head = Message(MessageType.MsgApp, to=to, from_=frm, term=3, index=1, log_term=3).to_bytes()
    return head + _KEY_ENTRY_EMPTY * entries + extra


_KEY_ENTRY_EMPTY = b"\x3a\x00"  # Message.entries (field 7, length-delimited), an empty Entry


async def _refused(b: Node, payload: bytes, caplog: pytest.LogCaptureFixture, reason: str,
                   frm: int = 0xA1) -> None:
    """Open a connection to b as frm, send payload after the handshake: b must hang up and log reason."""
    host, port = b.transport.addresses[0]
    r, w = await asyncio.open_connection(host, port)
    w.write(handshake(CLUSTER, frm, b.id) + payload)
    assert await hung_up(r)
    w.close()
    assert any(reason in rec.getMessage() for rec in caplog.records), \
        f"no log line with {reason!r}: {[rec.getMessage() for rec in caplog.records][-3:]}"


def test_frames_out_of_bounds_close_only_their_connection(run: Run[None], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="petcd.server.transport")
    a, b = make_node(0xA1), make_node(0xB2, max_message_bytes=1 << 20)

    async def main() -> None:
        async with started(a, b):
            hb = heartbeat(0xA1, 0xB2, 5).to_bytes()
            # a type that does not exist, a type byte that is not one byte, and no type at all
            await _refused(b, frame(b"\x08\x63" + hb[2:]), caplog, "does not start with a raft message type")
            await _refused(b, frame(b"\x08\xff\x01" + hb[2:]), caplog, "does not start with a raft message type")
            await _refused(b, frame(hb[2:]), caplog, "does not start with a raft message type")
            await _refused(b, frame(b""), caplog, "0 bytes cannot hold a raft message")
            await _refused(b, frame(b"\x08"), caplog, "1 bytes cannot hold a raft message")
            # sizes: refused from the first six bytes, before the body is buffered
            await _refused(b, struct.pack(">I", 100 << 20) + b"\x08\x08", caplog,
                           f"a MsgHeartbeat of {100 << 20} bytes (at most 65536)")
            await _refused(b, struct.pack(">I", (1 << 20) + 1) + b"\x08\x03", caplog,
                           f"a MsgApp of {(1 << 20) + 1} bytes (at most 1048576)")
            await _refused(b, struct.pack(">I", 0xFFFF_FFFF) + b"\x08\x02", caplog, "a MsgProp of 4294967295 bytes")
            # entries: more than a MsgApp can hold, and a snapshot where none belongs
            await _refused(b, frame(_raw_msgapp(0xA1, 0xB2, MAX_ENTRIES_PER_MESSAGE + 1)), caplog,
                           f"more than {MAX_ENTRIES_PER_MESSAGE} entries")
            snap = b"\x4a" + bytes([3]) + b"\x12\x01\x00"
            await _refused(b, frame(_raw_msgapp(0xA1, 0xB2, 40_000, snap)), caplog, "a snapshot in a message that is not")
            # a snapshot whose non-data part is huge
            big_meta = Message(MessageType.MsgSnap, to=0xB2, from_=0xA1, term=3, snapshot=Snapshot(
                b"d" * 70_000, SnapshotMetadata(ConfState(voters=list(range(1, 400_000))), 9, 3))).to_bytes()
            await _refused(b, frame(big_meta), caplog, "bytes besides its data")
            # a message that says it comes from someone other than the connection's member
            await _refused(b, frame(heartbeat(0xC3, 0xB2, 6).to_bytes()), caplog,
                           "a MsgHeartbeat from member c3 on a1's connection")
            # a handshake from member 0, or from b itself
            for frm in (0, 0xB2):
                await _refused(b, frame(heartbeat(frm, 0xB2).to_bytes()), caplog,
                               f"its handshake claims to come from member {frm:x}", frm=frm)
            assert b.received == []
            # Within the bounds, all goes through: the most entries a MsgApp may carry, a transfer
            # request naming its transferee, and the listener still serves the real peer.
            host, port = b.transport.addresses[0]
            r, w = await asyncio.open_connection(host, port)
            transfer = Message(MessageType.MsgTransferLeader, to=0xB2, from_=0xC3, term=3)
            # forwarded again by a member that has just lost its leadership: they name their makers
            prop = Message(MessageType.MsgProp, to=0xB2, from_=0xC3, entries=[Entry(data=b"p")])
            read = Message(MessageType.MsgReadIndex, to=0xB2, from_=0xB2, entries=[Entry(data=b"ctx")])
            w.write(handshake(CLUSTER, 0xA1, 0xB2) + frame(_raw_msgapp(0xA1, 0xB2, MAX_ENTRIES_PER_MESSAGE))
                    + frame(transfer.to_bytes()) + frame(prop.to_bytes()) + frame(read.to_bytes()))
            await wait_until(lambda: len(b.received) == 4, what="the in-bounds messages")
            assert len(b.received[0].entries) == MAX_ENTRIES_PER_MESSAGE
            assert b.received[1:] == [transfer, prop, read]
            w.close()
            link(a, b)
            a.transport.send([heartbeat(a.id, b.id, i) for i in range(3)])
            await wait_until(lambda: len(b.received) == 7, what="the real peer's messages")

    run(main())


def test_a_message_too_big_for_the_receiver_is_not_sent(run: Run[None], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="petcd.server.transport")
    a, b = make_node(0xA1, max_message_bytes=1 << 16), make_node(0xB2, max_message_bytes=1 << 16)

    async def main() -> None:
        async with started(a, b):
            link(a, b)
            a.transport.send([app(a.id, b.id, 1, b"x" * (1 << 16)), app(a.id, b.id, 2, b"small")])
            await wait_until(lambda: len(b.received) == 1, what="the message within the limit")
            assert b.received[0].index == 2
            assert any("dropping a MsgApp of" in rec.getMessage() for rec in caplog.records)
            a.transport.send([heartbeat(a.id, b.id, 9)])  # the connection was not cut by the big one
            await wait_until(lambda: len(b.received) == 2, what="the next message")

    run(main())
