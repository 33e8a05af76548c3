"""The HTTP/1.1 protocol's parsing, driven without sockets: the bytes of a
connection fed in every split, the requests the application sees (and the
bodies it reads) checked. Go's net/http is the model: a head's lines may
end in a bare LF; a chunked body that breaks reaches its reader as BadBody
with Go's words for the fault."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from petcd.api.http1 import MAX_HEAD, BadBody, Body, Http1Protocol, Request, Response


class _Transport(asyncio.Transport):
    """Collects what the protocol writes."""

    def __init__(self) -> None:
        super().__init__()
        self.out = bytearray()
        self.closing = False

    def write(self, data: Any) -> None:
        self.out += data

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        pass

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


async def _serve(pieces: list[bytes]) -> tuple[list[tuple[str, str, list[tuple[str, str]], bytes | str]], bytes]:
    """Feed the pieces to a protocol; the requests its application saw
    (method, target, headers, body or the BadBody text) and what it wrote."""
    seen: list[tuple[str, str, list[tuple[str, str]], bytes | str]] = []

    async def app(req: Request) -> Response:
        try:
            body: bytes | str = await req.body.read(1 << 20)
        except BadBody as exc:
            body = str(exc)
        seen.append((req.method, req.target, req.headers, body))
        return Response(200, body=b"ok")

    proto = Http1Protocol(app)
    t = _Transport()
    proto.connection_made(t)
    for piece in pieces:
        proto.data_received(piece)
        await asyncio.sleep(0)
    proto.eof_received()
    assert proto.task is not None
    await asyncio.wait_for(proto.task, 5)
    return seen, bytes(t.out)


def _splits(data: bytes) -> list[list[bytes]]:
    """The data whole, byte by byte, and cut in two at every offset."""
    return [[data], [data[i:i + 1] for i in range(len(data))]] + [[data[:i], data[i:]] for i in range(1, len(data))]


BARE_LF = (b"GET /version HTTP/1.1\nHost: x\nA: b\n\n"
           b"POST /v3/kv/range HTTP/1.1\nHost: x\nContent-Length: 2\n\n{}"
           b"PUT /p?q=1 HTTP/1.1\r\nHost: y\n\r\n"  # CRLF and LF mixed
           b"GET /last HTTP/1.0\n\n")


def test_head_lines_ending_in_a_bare_lf_are_read_as_go_reads_them() -> None:
    expected = [
        ("GET", "/version", [("host", "x"), ("a", "b")], b""),
        ("POST", "/v3/kv/range", [("host", "x"), ("content-length", "2")], b"{}"),
        ("PUT", "/p?q=1", [("host", "y")], b""),
        ("GET", "/last", [], b""),
    ]
    for pieces in _splits(BARE_LF):
        seen, out = asyncio.run(_serve(pieces))
        assert seen == expected, pieces
        assert out.count(b" 200 OK\r\n") == 4, pieces


def test_a_bare_lf_in_a_body_is_the_bodys() -> None:
    data = b"POST /b HTTP/1.1\nHost: x\nContent-Length: 3\n\n{\n}GET /n HTTP/1.1\r\nHost: x\r\n\r\n"
    for pieces in _splits(data):
        seen, _ = asyncio.run(_serve(pieces))
        assert [(m, t, b) for m, t, _, b in seen] == [("POST", "/b", b"{\n}"), ("GET", "/n", b"")], pieces


CHUNKED = b"POST /v3/kv/put HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
# a broken chunked body -> what Go's chunked reader says of it
BROKEN = {
    b"zz\r\n{}\r\n0\r\n\r\n": "invalid byte in chunk length",
    b"1ffffffffffffffff\r\n": "http chunk length too large",
    b"1\r\n{XX": "malformed chunked encoding",
    b"1\r\n{\n1\r\n}\r\n0\r\n\r\n": "malformed chunked encoding",  # Go wants CRLF after chunk data
}


@pytest.mark.parametrize("body", sorted(BROKEN))
def test_a_broken_chunked_body_reaches_its_reader_in_gos_words(body: bytes) -> None:
    for pieces in _splits(CHUNKED + body + b"GET /never HTTP/1.1\r\nHost: x\r\n\r\n"):
        seen, out = asyncio.run(_serve(pieces))
        # the request is the application's to answer; nothing after it is read
        assert [(m, t, b) for m, t, _, b in seen] == [("POST", "/v3/kv/put", BROKEN[body])], pieces
        assert out.startswith(b"HTTP/1.1 200 OK\r\n"), out
        assert b"\r\nConnection: close\r\n" in out.partition(b"\r\n\r\n")[0] + b"\r\n", out


def test_a_broken_body_keeps_the_bytes_before_the_fault() -> None:
    async def scenario() -> None:
        body = Body(lambda: None)
        body._feed(b'{"key"')
        body._fail("malformed chunked encoding")
        with pytest.raises(BadBody) as exc:
            await body.read(1 << 20)
        assert (str(exc.value), exc.value.data) == ("malformed chunked encoding", b'{"key"')
        body = Body(lambda: None)
        body._feed(b"{}")
        body._fail("invalid byte in chunk length")
        got = []
        with pytest.raises(BadBody):
            async for chunk in body:
                got.append(chunk)
        assert got == [b"{}"]
        assert body.failed

    asyncio.run(scenario())


def test_head_size_limit_is_gos_to_the_byte() -> None:
    def head(total: int) -> bytes:
        pre, post = b"GET /version HTTP/1.1\r\nHost: x\r\nX-Big: ", b"\r\n\r\n"
        return pre + b"a" * (total - len(pre) - len(post)) + post

    assert MAX_HEAD == (1 << 20) + 4096  # Go's DefaultMaxHeaderBytes and its reader's slack
    for total, status in ((MAX_HEAD, b"200"), (MAX_HEAD + 1, b"431")):
        data = head(total)
        for pieces in ([data], [data[i:i + 65536] for i in range(0, len(data), 65536)]):
            _, out = asyncio.run(_serve(pieces))
            assert out.startswith(b"HTTP/1.1 %s " % status), (total, out[:80])


def test_no_more_of_a_head_than_the_limit_is_ever_parsed() -> None:
    """However large the reads, the parser (which keeps a header whole until
    it ends) is fed at most a byte past MAX_HEAD of a head."""
    fed: list[int] = []

    class Counting(Http1Protocol):
        def _feed(self, data: bytes) -> None:
            fed.append(len(data))
            super()._feed(data)

    async def scenario() -> bytes:
        async def app(req: Request) -> Response:
            return Response(200)

        proto = Counting(app)
        t = _Transport()
        proto.connection_made(t)
        proto.data_received(b"GET /version HTTP/1.1\r\nHost: x\r\nX-Big: ")
        proto.data_received(b"a" * (4 * MAX_HEAD))  # one read far past the limit
        proto.eof_received()
        assert proto.task is not None
        await asyncio.wait_for(proto.task, 5)
        return bytes(t.out)

    out = asyncio.run(scenario())
    assert out.startswith(b"HTTP/1.1 431 Request Header Fields Too Large\r\n"), out[:80]
    assert sum(fed) <= MAX_HEAD + 1, fed
