"""Calls between members on the peer port (petcd/server/transport/calls.py)
over real sockets on 127.0.0.1: answers and errors, many calls on one
connection, timeouts, lost connections, probes, and the bounds on what a
caller can make the answering member buffer.

Every test runs on the default asyncio loop and on uvloop (the server's loop).
"""

from __future__ import annotations

import asyncio
import random
import struct
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest

from petcd import stats
from petcd.server.transport import PeerTransport, TransportError
from petcd.server.transport.call_wire import MAX_CALL_BODY, PING, encode_call, read_answer
from petcd.server.transport.calls import MAX_INFLIGHT, Answering, CallFailed, CallTimeout
from petcd.server.transport.wire import CALL_MAGIC
from petcd.testing.harness import free_port
from tests.server.transport_nodes import Run

try:
    import uvloop
except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
    uvloop = None  # type: ignore[assignment]

CLUSTER = 0xC1
Handler = Callable[[int, int, bytes], Awaitable[bytes]]


async def wait_until(cond: Callable[[], bool], timeout: float = 15.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.002)


def node(member_id: int, on_call: Handler | None = None, probe_interval: float = 0, port: int = 0) -> PeerTransport:
    return PeerTransport(member_id, CLUSTER, [f"http://127.0.0.1:{port}"], on_message=lambda m: None,
                         on_call=on_call, probe_interval=probe_interval)


def url(tr: PeerTransport) -> str:
    return f"http://127.0.0.1:{tr.addresses[0][1]}"


@asynccontextmanager
async def started(*nodes: PeerTransport) -> AsyncIterator[None]:
    for n in nodes:
        await n.start()
    for a in nodes:
        for b in nodes:
            if a is not b:
                a.add_peer(b.local_id, [url(b)])
    try:
        yield
    finally:
        for n in nodes:
            await n.stop()


def answering(tr: PeerTransport) -> list[Answering]:
    return [c.answering for c in tr.inbound if c.answering is not None]


async def echo(peer_id: int, kind: int, body: bytes) -> bytes:
    if kind == 1:
        await asyncio.sleep(random.random() / 100)  # answers come back out of order
        return body[::-1]
    if kind == 2:
        raise CallFailed("etcdserver: requested lease not found")
    if kind == 3:
        raise ValueError("a bug")
    await asyncio.Event().wait()  # kind 4: never answers
    return b""


def test_calls_are_answered_in_any_order_on_one_connection(run: Run[None]) -> None:
    async def main() -> None:
        a, b = node(0xA), node(0xB, echo)
        async with started(a, b):
            bodies = [random.randbytes(random.randrange(0, 200)) for _ in range(500)]
            got = await asyncio.gather(*(a.call(0xB, 1, body, 10) for body in bodies))
            assert got == [body[::-1] for body in bodies]
            assert await a.call(0xB, PING, b"", 10) == b""
            assert len(answering(b)) == 1  # every call shared one connection
            with pytest.raises(CallFailed) as err:
                await a.call(0xB, 2, b"", 10)
            assert err.value.message == "etcdserver: requested lease not found"
            with pytest.raises(CallFailed) as err:
                await a.call(0xB, 3, b"", 10)
            assert err.value.message == "petcd: internal error"
            with pytest.raises(CallFailed, match="answers no calls"):
                await b.call(0xA, 1, b"", 10)  # a has no handler: refused, not hung
            with pytest.raises(TransportError, match="not known"):
                await a.call(0xC, 1, b"", 10)
            with pytest.raises(TransportError):
                await a.call(0xB, 1, b"x" * (MAX_CALL_BODY + 1), 10)  # refused before it is sent
            assert await a.call(0xB, 1, b"ok", 10) == b"ko"
            assert len(answering(b)) == 1

    run(main())


def test_a_call_without_answer_times_out_and_the_connection_stays(run: Run[None]) -> None:
    async def main() -> None:
        a, b = node(0xA), node(0xB, echo)
        async with started(a, b):
            start = time.monotonic()
            with pytest.raises(CallTimeout):
                await a.call(0xB, 4, b"", 0.3)
            assert 0.25 < time.monotonic() - start < 5
            assert await a.call(0xB, 1, b"ab", 10) == b"ba"
            assert len(answering(b)) == 1

    run(main())


def test_unreachable_and_lost_members_fail_calls_promptly(run: Run[None]) -> None:
    async def main() -> None:
        a, b = node(0xA), node(0xB, echo)
        async with started(a, b):
            a.add_peer(0xD, [f"http://127.0.0.1:{free_port()}"])  # nobody listens there
            start = time.monotonic()
            with pytest.raises(TransportError) as err:
                await a.call(0xD, 1, b"", 10)
            assert not isinstance(err.value, CallTimeout | CallFailed)
            assert time.monotonic() - start < 5
            # a call in flight when the member goes away fails at once, not at its deadline
            stuck = asyncio.ensure_future(a.call(0xB, 4, b"", 30))
            await wait_until(lambda: any(ans.tasks for ans in answering(b)), what="the call to reach b")
            start = time.monotonic()
            await b.stop()
            with pytest.raises(TransportError) as err:
                await stuck
            assert not isinstance(err.value, CallTimeout) and time.monotonic() - start < 5

    run(main())


def test_a_new_connection_is_dialed_after_one_is_lost(run: Run[None]) -> None:
    async def main() -> None:
        port = free_port()
        a, b = node(0xA), node(0xB, echo, port=port)
        async with started(a, b):
            assert await a.call(0xB, 1, b"12", 10) == b"21"
            await b.stop()
            with pytest.raises(TransportError):
                await a.call(0xB, 1, b"", 10)
            b2 = node(0xB, echo, port=port)
            await b2.start()
            try:
                async def again() -> bytes | None:
                    try:
                        return await a.call(0xB, 1, b"34", 10)
                    except TransportError:
                        await asyncio.sleep(0.05)  # the hold-off after a failed dial
                        return None

                got = None
                deadline = time.monotonic() + 10
                while got is None and time.monotonic() < deadline:
                    got = await again()
                assert got == b"43"
            finally:
                await b2.stop()

    run(main())


async def raw_call_connection(tr: PeerTransport, from_id: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", tr.addresses[0][1])
    writer.write(CALL_MAGIC + struct.pack(">QQQ", CLUSTER, from_id, tr.local_id))
    return reader, writer


def test_a_flood_of_calls_is_served_at_most_max_inflight_at_once(run: Run[None]) -> None:
    async def main() -> None:
        gate = asyncio.Event()
        running = 0
        most = 0

        async def slow(peer_id: int, kind: int, body: bytes) -> bytes:
            nonlocal running, most
            running += 1
            most = max(most, running)
            await gate.wait()
            running -= 1
            return body

        b = node(0xB, slow)
        async with started(b):
            n = 3 * MAX_INFLIGHT
            reader, writer = await raw_call_connection(b, 0xA)
            writer.write(b"".join(encode_call(1, i, b"%d" % i) for i in range(n)))
            await wait_until(lambda: running == MAX_INFLIGHT, what="the first calls to be served")
            await wait_until(lambda: all(x.reading_paused for x in answering(b)), what="reading to pause")
            assert most == MAX_INFLIGHT
            gate.set()
            buf = bytearray()
            seen: set[int] = set()
            while len(seen) < n:
                buf += await asyncio.wait_for(reader.read(1 << 16), 10)
                while not isinstance(got := read_answer(buf, 0, 1 << 20), int):
                    answer, off = got
                    assert answer.ok and answer.body == b"%d" % answer.call_id
                    seen.add(answer.call_id)
                    del buf[:off]
            assert most == MAX_INFLIGHT
            writer.close()

    run(main())


def test_a_caller_that_reads_no_answers_cannot_make_the_member_buffer_them(run: Run[None]) -> None:
    async def main() -> None:
        handled = 0
        big = b"x" * (256 << 10)

        async def answer_big(peer_id: int, kind: int, body: bytes) -> bytes:
            nonlocal handled
            handled += 1
            return big

        b = node(0xB, answer_big)
        async with started(b):
            n = 2000  # 500 MiB of answers, if they were all made
            reader, writer = await raw_call_connection(b, 0xA)
            writer.write(b"".join(encode_call(1, i, b"") for i in range(n)))
            await wait_until(lambda: any(x.write_paused and x.reading_paused for x in answering(b)),
                             what="the member to stop reading calls")
            stalled_at = handled
            assert stalled_at < n // 4
            # nothing more is served while the caller reads nothing: give the loop a few turns
            for _ in range(50):
                await asyncio.sleep(0.01)
            assert handled <= stalled_at + MAX_INFLIGHT
            buffered = sum(c.transport.get_write_buffer_size() for c in b.inbound if c.transport is not None)
            assert buffered < (MAX_INFLIGHT + 64) * len(big)
            # once the caller reads, every answer comes
            total = 0
            while total < n * (13 + len(big)):
                chunk = await asyncio.wait_for(reader.read(1 << 20), 20)
                assert chunk
                total += len(chunk)
            assert handled == n
            writer.close()

    run(main())


def test_a_call_frame_out_of_bounds_closes_only_its_connection(run: Run[None]) -> None:
    async def main() -> None:
        a, b = node(0xA), node(0xB, echo)
        async with started(a, b):
            reader, writer = await raw_call_connection(b, 0xA)
            writer.write(struct.pack(">I", 9 + MAX_CALL_BODY + 1))
            assert await asyncio.wait_for(reader.read(), 10) == b""  # hung up on
            writer.close()
            assert await a.call(0xB, 1, b"still", 10) == b"llits"

    run(main())


def test_the_prober_measures_round_trips_to_every_peer(run: Run[None]) -> None:
    async def main() -> None:
        ids = (0x10A, 0x10B, 0x10C)
        for i in ids:
            stats.PEER_RTT.pop(i, None)
        a, b, c = (node(i, probe_interval=0.05) for i in ids)
        async with started(a, b, c):
            await wait_until(lambda: all(i in stats.PEER_RTT and stats.PEER_RTT[i].count >= 3 for i in ids),
                             what="round trips to every peer")
            for i in ids:
                h = stats.PEER_RTT[i]
                assert 0 < h.sum / h.count < 1

    run(main())


def test_a_connection_that_answers_no_ping_is_dropped_and_dialed_anew(run: Run[None]) -> None:
    async def main() -> None:
        conns: list[asyncio.StreamWriter] = []

        async def black_hole(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            conns.append(writer)  # accepts, reads, never answers: a peer host that vanished mid-connection
            while await reader.read(1 << 16):
                pass

        hole = await asyncio.start_server(black_hole, "127.0.0.1", 0)
        a = node(0xA, probe_interval=0.2)
        await a.start()
        try:
            a.add_peer(0xB, [f"http://127.0.0.1:{hole.sockets[0].getsockname()[1]}"])
            await wait_until(lambda: len(conns) >= 3, what="the prober to redial after unanswered pings")
        finally:
            await a.stop()
            for w in conns:
                w.close()
            hole.close()
            await hole.wait_closed()

    run(main())


def test_a_peer_is_active_while_the_probers_connection_to_it_is_up(run: Run[None]) -> None:
    async def main() -> None:
        # no raft message ever goes from a to b (as from one follower to another): the probe's connection counts
        a, b = node(0xA, probe_interval=0.05), node(0xB)
        async with started(a, b):
            await wait_until(lambda: a.active_since(0xB) is not None, what="b to count as active")
            assert a.backlog(0xB).messages == 0
            await b.stop()
            await wait_until(lambda: a.active_since(0xB) is None, what="b to count as gone")

    run(main())
