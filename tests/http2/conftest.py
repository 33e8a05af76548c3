"""A tiny gRPC service on petcd's HTTP/2 front end, served from a thread
with its own uvloop loop, for tests that drive it with real clients."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import uvloop
from google.protobuf import wrappers_pb2

from petcd.http2 import server as srv
from petcd.http2.connection import H2Settings
from petcd.http2.grpc import RpcError, StatusCode

BytesValue = wrappers_pb2.BytesValue
StringValue = wrappers_pb2.StringValue


def _decode(raw: bytes) -> BytesValue:
    m = BytesValue()
    try:
        m.ParseFromString(raw)
    except Exception as exc:
        raise RpcError(StatusCode.INTERNAL, f"grpc: error unmarshalling request: {exc}") from None
    return m


def _encode(m: Any) -> bytes:
    return bytes(m.SerializeToString())


async def unary(req: BytesValue, ctx: srv.CallContext) -> BytesValue:
    return BytesValue(value=req.value)


async def where(req: BytesValue, ctx: srv.CallContext) -> BytesValue:
    """Says whether it runs on a task, or inline in the data callback."""
    if req.value:
        await asyncio.sleep(0)
    return BytesValue(value=b"inline" if asyncio.current_task() is None else b"task")


def _number(raw: bytes, default: str) -> float:
    try:
        return float(raw or default)
    except ValueError:
        raise RpcError(StatusCode.INVALID_ARGUMENT, f"not a number: {raw[:20]!r}") from None


async def slow(req: BytesValue, ctx: srv.CallContext) -> BytesValue:
    await asyncio.sleep(_number(req.value, "0.01"))
    return BytesValue(value=b"slept")


async def fail(req: BytesValue, ctx: srv.CallContext) -> BytesValue:
    code, _, msg = req.value.decode().partition(":")
    raise RpcError(StatusCode(int(code)), msg)


async def crash(req: BytesValue, ctx: srv.CallContext) -> BytesValue:
    raise ValueError("boom")


async def meta(req: BytesValue, ctx: srv.CallContext) -> BytesValue:
    md = ctx.invocation_metadata()
    text = ";".join(f"{k}={v!r}" for k, v in md)
    rem = ctx.time_remaining()
    return BytesValue(value=f"{text}|{'none' if rem is None else round(rem)}".encode())


async def hang(req: BytesValue, ctx: srv.CallContext) -> BytesValue:
    await asyncio.Event().wait()
    raise AssertionError("unreachable")


async def big(req: BytesValue, ctx: srv.CallContext) -> BytesValue:
    return BytesValue(value=b"x" * int(_number(req.value, "0")))


async def stream(req: BytesValue, ctx: srv.CallContext) -> AsyncIterator[BytesValue]:
    """value 'N:SIZE': N messages of SIZE bytes each, byte i%256 marks message i."""
    n, _, size = req.value.partition(b":")
    for i in range(int(_number(n, "0"))):
        yield BytesValue(value=bytes([i % 256]) * int(_number(size, "0")))


# set by held() just before it yields its second message
HELD_YIELDED = threading.Event()


async def held(req: BytesValue, ctx: srv.CallContext) -> AsyncIterator[BytesValue]:
    """b"0", then, once that has been written, b"1" on its own: a streamed
    message that waits for the coalescing tick."""
    yield BytesValue(value=b"0")
    await asyncio.sleep(0.01)  # the first message's write (a call_soon) runs meanwhile
    HELD_YIELDED.set()
    yield BytesValue(value=b"1")


async def bidi(reqs: AsyncIterator[BytesValue], ctx: srv.CallContext) -> AsyncIterator[BytesValue]:
    """Echo every message; after the client half-closes, 3 more, then end."""
    async for r in reqs:
        if r.value == b"fail":
            raise RpcError(StatusCode.FAILED_PRECONDITION, "asked to fail")
        yield BytesValue(value=r.value)
    for i in range(3):
        await asyncio.sleep(0.01)
        yield BytesValue(value=b"after-close-%d" % i)


async def sink(reqs: AsyncIterator[BytesValue], ctx: srv.CallContext) -> AsyncIterator[BytesValue]:
    """Takes one message, answers it, then reads nothing more."""
    async for r in reqs:
        yield BytesValue(value=r.value)
        break
    await asyncio.Event().wait()


METHODS: dict[str, srv.Method] = {
    "/test.Echo/Unary": srv.Method(srv.Kind.UNARY, _decode, _encode, unary),
    "/test.Echo/Where": srv.Method(srv.Kind.UNARY, _decode, _encode, where),
    "/test.Echo/Slow": srv.Method(srv.Kind.UNARY, _decode, _encode, slow),
    "/test.Echo/Fail": srv.Method(srv.Kind.UNARY, _decode, _encode, fail),
    "/test.Echo/Crash": srv.Method(srv.Kind.UNARY, _decode, _encode, crash),
    "/test.Echo/Meta": srv.Method(srv.Kind.UNARY, _decode, _encode, meta),
    "/test.Echo/Hang": srv.Method(srv.Kind.UNARY, _decode, _encode, hang),
    "/test.Echo/Big": srv.Method(srv.Kind.UNARY, _decode, _encode, big),
    "/test.Echo/Stream": srv.Method(srv.Kind.SERVER_STREAM, _decode, _encode, stream),
    "/test.Echo/Held": srv.Method(srv.Kind.SERVER_STREAM, _decode, _encode, held),
    "/test.Echo/Bidi": srv.Method(srv.Kind.BIDI, _decode, _encode, bidi),
    "/test.Echo/Sink": srv.Method(srv.Kind.BIDI, _decode, _encode, sink),
}


@dataclass
class Served:
    port: srv.ClientPort
    loop: asyncio.AbstractEventLoop
    thread: threading.Thread

    @property
    def target(self) -> str:
        host, p = self.port.addresses()[0][:2]
        return f"{host}:{p}"

    @property
    def addr(self) -> tuple[str, int]:
        host, p = self.port.addresses()[0][:2]
        return host, p

    def call(self, fn: Any) -> Any:
        """Run fn() on the server's loop and return its result."""

        async def run() -> Any:
            return fn()

        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(30)


def serve(
    max_recv: int = 1 << 20,
    settings: H2Settings | None = None,
    keepalive: srv.Keepalive | None = None,
) -> Served:
    socks = srv.bind(["http://127.0.0.1:0"])
    port = srv.ClientPort(
        socks,
        max_recv=max_recv,
        settings=settings or H2Settings(),
        keepalive=keepalive or srv.Keepalive(),
    )
    for path, m in METHODS.items():
        port.add(path, m)
    loop = uvloop.new_event_loop()
    started = threading.Event()

    def run() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(port.start())
        started.set()
        loop.run_forever()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    started.wait(10)
    return Served(port, loop, t)


def shutdown(s: Served, grace: float = 0.5) -> None:
    """Stop the port (calls get grace seconds to finish), then its loop and thread."""
    fut = asyncio.run_coroutine_threadsafe(s.port.stop(grace=grace), s.loop)
    fut.result(grace + 30)
    s.loop.call_soon_threadsafe(s.loop.stop)
    s.thread.join(10)


@pytest.fixture
def served() -> Iterator[Served]:
    s = serve()
    try:
        yield s
    finally:
        shutdown(s)
