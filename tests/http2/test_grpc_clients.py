"""Real gRPC clients (grpcio's C-core, sync and asyncio), curl and h2load
against petcd's HTTP/2 front end serving a tiny test service."""

from __future__ import annotations

import asyncio
import queue
import resource
import socket
import subprocess
import threading
import time
from collections.abc import Iterator

import grpc
import pytest

from petcd.http2 import frames as f
from petcd.http2 import server as srv
from petcd.http2.connection import H2Settings
from petcd.http2.grpc import frame_message
from petcd.testing.harness import require_binary, wait_for
from tests.http2.conftest import HELD_YIELDED, BytesValue, Served, serve, shutdown
from tests.http2.rawclient import RawClient

SER = BytesValue.SerializeToString
DES = BytesValue.FromString


def unary(ch: grpc.Channel, name: str) -> grpc.UnaryUnaryMultiCallable:
    return ch.unary_unary(f"/test.Echo/{name}", request_serializer=SER, response_deserializer=DES)


@pytest.fixture
def channel(served: Served) -> Iterator[grpc.Channel]:
    ch = grpc.insecure_channel(served.target)
    yield ch
    ch.close()


def test_unary_roundtrip(channel: grpc.Channel) -> None:
    for i in range(50):
        assert unary(channel, "Unary")(BytesValue(value=b"v%d" % i), timeout=10).value == b"v%d" % i
    assert unary(channel, "Slow")(BytesValue(value=b"0.02"), timeout=10).value == b"slept"


def test_synchronous_handler_is_answered_without_a_task(channel: grpc.Channel) -> None:
    assert unary(channel, "Where")(BytesValue(), timeout=10).value == b"inline"
    assert unary(channel, "Where")(BytesValue(value=b"wait"), timeout=10).value == b"task"


def test_silent_connection_is_closed(served: Served) -> None:
    served.call(lambda: setattr(served.port, "first_bytes_timeout", 0.2))
    with socket.create_connection(served.addr, timeout=10) as s:
        assert s.recv(10) == b""  # closed by the server, not by our timeout


def test_status_and_percent_encoded_message(channel: grpc.Channel) -> None:
    with pytest.raises(grpc.RpcError) as ei:
        unary(channel, "Fail")(BytesValue(value="9:etcdserver: bad ü 100% \n done".encode()), timeout=10)
    assert ei.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert ei.value.details() == "etcdserver: bad ü 100% \n done"


def test_handler_exception_is_unknown(channel: grpc.Channel) -> None:
    with pytest.raises(grpc.RpcError) as ei:
        unary(channel, "Crash")(BytesValue(), timeout=10)
    assert ei.value.code() == grpc.StatusCode.UNKNOWN
    assert ei.value.details() == "boom"
    assert unary(channel, "Unary")(BytesValue(value=b"still"), timeout=10).value == b"still"


def test_unknown_method_is_unimplemented(channel: grpc.Channel) -> None:
    with pytest.raises(grpc.RpcError) as ei:
        unary(channel, "Nope")(BytesValue(), timeout=10)
    assert ei.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert ei.value.details() == "unknown method Nope for service test.Echo"
    with pytest.raises(grpc.RpcError) as ei:
        channel.unary_unary("/test.Other/Nope")(b"", timeout=10)
    assert (ei.value.code(), ei.value.details()) == (grpc.StatusCode.UNIMPLEMENTED, "unknown service test.Other")


def test_metadata_and_deadline_reach_the_handler(channel: grpc.Channel) -> None:
    md = (("token", "abc.def"), ("hasleader", "true"), ("bin-bin", b"\x00\x01"))
    got = unary(channel, "Meta")(BytesValue(), metadata=md, timeout=30).value.decode()
    text, rem = got.split("|")
    assert "token='abc.def'" in text and "hasleader='true'" in text and "bin-bin=b'\\x00\\x01'" in text
    assert 20 <= int(rem) <= 30
    assert unary(channel, "Meta")(BytesValue()).value.decode().endswith("|none")


def test_deadline_exceeded(channel: grpc.Channel) -> None:
    t0 = time.monotonic()
    with pytest.raises(grpc.RpcError) as ei:
        unary(channel, "Hang")(BytesValue(), timeout=0.3)
    assert ei.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert time.monotonic() - t0 < 5
    assert unary(channel, "Unary")(BytesValue(value=b"ok"), timeout=10).value == b"ok"


def test_server_side_deadline_is_enforced(served: Served) -> None:
    """Even a client that never gives up gets DEADLINE_EXCEEDED from us."""
    c = RawClient(served.addr)
    c.request(1, "/test.Echo/Hang", b"", extra=[("grpc-timeout", "200m")])
    headers, _ = c.response(1)
    assert headers["grpc-status"] == "4", headers
    c.close()


def _calls_held(s: Served) -> int:
    """Calls the server holds open, over all its connections."""
    return int(s.call(lambda: sum(len(p.calls) for p in s.port.protocols)))


def test_cancelled_call_frees_the_stream(served: Served, channel: grpc.Channel) -> None:
    fut = unary(channel, "Hang").future(BytesValue(), timeout=30)
    wait_for(lambda: _calls_held(served) == 1, 30, "the server to hold the call")
    fut.cancel()
    wait_for(lambda: _calls_held(served) == 0, 30, "the cancelled call to be freed")
    assert unary(channel, "Unary")(BytesValue(value=b"ok"), timeout=10).value == b"ok"


def test_receive_limit_is_resource_exhausted(served: Served) -> None:
    ch = grpc.insecure_channel(served.target, options=[("grpc.max_send_message_length", 64 << 20)])
    limit = served.port.max_recv
    with pytest.raises(grpc.RpcError) as ei:
        unary(ch, "Unary")(BytesValue(value=b"x" * (limit + 10)), timeout=30)
    assert ei.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "grpc: received message larger than max (" in str(ei.value.details())
    assert unary(ch, "Unary")(BytesValue(value=b"x" * (limit - 10)), timeout=30).value == b"x" * (limit - 10)
    ch.close()


def test_gzip_requests_are_decompressed(served: Served) -> None:
    ch = grpc.insecure_channel(served.target, compression=grpc.Compression.Gzip)
    assert unary(ch, "Unary")(BytesValue(value=b"z" * 5000), timeout=10).value == b"z" * 5000
    ch.close()


def test_unsupported_encoding_is_unimplemented(served: Served) -> None:
    c = RawClient(served.addr)
    c.request(1, "/test.Echo/Unary", b"\x01\x02", extra=[("grpc-encoding", "snappy")])
    headers, _ = c.response(1)
    assert headers["grpc-status"] == "12"
    assert headers["grpc-message"] == 'grpc: Decompressor is not installed for grpc-encoding "snappy"'
    c.close()


def test_server_streaming_large(channel: grpc.Channel) -> None:
    call = channel.unary_stream("/test.Echo/Stream", request_serializer=SER, response_deserializer=DES)
    msgs = list(call(BytesValue(value=b"200:100000"), timeout=60))
    assert len(msgs) == 200
    assert all(m.value == bytes([i % 256]) * 100000 for i, m in enumerate(msgs))


def test_bidi_half_close_keeps_the_server_stream(channel: grpc.Channel) -> None:
    call = channel.stream_stream("/test.Echo/Bidi", request_serializer=SER, response_deserializer=DES)
    got = [m.value for m in call(iter([BytesValue(value=b"a"), BytesValue(value=b"b")]), timeout=10)]
    assert got == [b"a", b"b", b"after-close-0", b"after-close-1", b"after-close-2"]


def test_bidi_error_status(channel: grpc.Channel) -> None:
    call = channel.stream_stream("/test.Echo/Bidi", request_serializer=SER, response_deserializer=DES)
    it = call(iter([BytesValue(value=b"a"), BytesValue(value=b"fail")]), timeout=10)
    assert next(it).value == b"a"
    with pytest.raises(grpc.RpcError) as ei:
        next(it)
    assert ei.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert ei.value.details() == "asked to fail"


def test_a_streamed_answer_to_a_client_message_is_not_held_for_the_coalescing_tick(
    channel: grpc.Channel, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Streamed messages are written at most once per STREAM_COALESCE tick
    (a busy watch stream); the first a handler yields after taking one of
    its client's messages (a lease keep-alive's answer) goes at once. With
    the tick at 60 s, every round trip after the first would wait out most
    of it."""
    monkeypatch.setattr(srv, "STREAM_COALESCE", 60.0)
    asks: queue.SimpleQueue[BytesValue | None] = queue.SimpleQueue()

    def requests() -> Iterator[BytesValue]:
        while (m := asks.get()) is not None:
            yield m

    call = channel.stream_stream("/test.Echo/Bidi", request_serializer=SER, response_deserializer=DES)
    answers = call(requests(), timeout=120)
    try:
        for i in range(5):
            started = time.monotonic()
            asks.put(BytesValue(value=b"ka-%d" % i))
            assert next(answers).value == b"ka-%d" % i
            assert time.monotonic() - started < 30, f"round trip {i} waited for the coalescing tick"
    finally:
        asks.put(None)
        answers.cancel()


def test_a_unary_answer_brings_the_stream_tick_forward(
    channel: grpc.Channel, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A unary answer on a connection whose streamed messages wait for the
    coalescing tick is written at once, and takes those messages with it
    (puts beside a busy watch stream on one connection). With the tick at
    60 s, the answer and the held message would each wait out most of it."""
    monkeypatch.setattr(srv, "STREAM_COALESCE", 60.0)
    HELD_YIELDED.clear()
    stream = channel.unary_stream("/test.Echo/Held", request_serializer=SER, response_deserializer=DES)
    messages = stream(BytesValue(), timeout=120)
    assert next(messages).value == b"0"
    # the loop yields "1" in the step that sets this; the request below is
    # read in a later one, with "1" waiting for the tick
    assert HELD_YIELDED.wait(60)
    started = time.monotonic()
    # answered from a task 0.2 s on, when the client has nothing more to
    # send (reading its frames would also write what is queued)
    slow = unary(channel, "Slow")
    assert slow(BytesValue(value=b"0.2"), timeout=120).value == b"slept"
    assert time.monotonic() - started < 30, "the answer waited for the stream's tick"
    assert next(messages).value == b"1"
    assert time.monotonic() - started < 30, "the held message waited for the tick"


def test_asyncio_client_concurrency(served: Served) -> None:
    async def run() -> None:
        async with grpc.aio.insecure_channel(served.target) as ch:
            u = ch.unary_unary("/test.Echo/Unary", request_serializer=SER, response_deserializer=DES)
            s = ch.unary_unary("/test.Echo/Slow", request_serializer=SER, response_deserializer=DES)
            got = await asyncio.gather(*(u(BytesValue(value=b"%d" % i), timeout=60) for i in range(500)))
            assert [g.value for g in got] == [b"%d" % i for i in range(500)]
            slow = await asyncio.gather(*(s(BytesValue(value=b"0.2"), timeout=60) for _ in range(300)))
            assert all(g.value == b"slept" for g in slow)
            bidi = ch.stream_stream("/test.Echo/Bidi", request_serializer=SER, response_deserializer=DES)
            call = bidi()
            for i in range(20):
                await call.write(BytesValue(value=b"m%d" % i))
                assert (await call.read()).value == b"m%d" % i
            await call.done_writing()
            rest = []
            while (m := await call.read()) is not grpc.aio.EOF:
                rest.append(m.value)
            assert rest == [b"after-close-0", b"after-close-1", b"after-close-2"]

    asyncio.run(run())


def test_ten_thousand_concurrent_streams_on_one_connection(served: Served) -> None:
    n = 10_000

    async def run() -> None:
        async with grpc.aio.insecure_channel(served.target) as ch:
            s = ch.unary_unary("/test.Echo/Slow", request_serializer=SER, response_deserializer=DES)
            calls = [s(BytesValue(value=b"1.0"), timeout=120) for _ in range(n)]
            got = await asyncio.gather(*calls)
            assert len(got) == n and all(g.value == b"slept" for g in got)
            assert served.call(lambda: len(served.port.protocols)) == 1

    asyncio.run(run())


def test_many_connections(served: Served) -> None:
    clients = [RawClient(served.addr) for _ in range(300)]
    for i, c in enumerate(clients):
        c.request(1, "/test.Echo/Unary", BytesValue(value=b"%d" % i).SerializeToString())
    for i, c in enumerate(clients):
        headers, data = c.response(1)
        assert headers["grpc-status"] == "0"
        assert DES(data[5:]).value == b"%d" % i
        c.close()


def test_slow_reader_with_64k_window_gets_everything(served: Served) -> None:
    """A 20 MB response to a client that grants 64 KiB and credits it back
    slowly: the server never overruns a window and nothing is lost."""
    c = RawClient(served.addr, settings={f.SETTINGS_INITIAL_WINDOW_SIZE: 65535})
    c.request(1, "/test.Echo/Big", BytesValue(value=b"20000000").SerializeToString())
    stream_window = conn_window = 65535
    data = b""
    trailers: dict[str, str] = {}
    reads = 0
    while True:
        fr = c.read_frame(60)
        assert fr is not None
        if fr.type == f.DATA:
            stream_window -= len(fr.payload)
            conn_window -= len(fr.payload)
            assert stream_window >= 0 and conn_window >= 0, "the server sent past a window"
            assert len(fr.payload) <= 16384
            data += fr.payload
            reads += 1
            if reads % 50 == 0:
                time.sleep(0.01)  # a slow reader
            if stream_window < 32768:
                grant = 65535 - stream_window
                c.send(f.window_update(1, grant) + f.window_update(0, 65535 - conn_window))
                stream_window += grant
                conn_window = 65535
        elif fr.type == f.HEADERS:
            for k, v in c.dec.decode(fr.payload):
                trailers[str(k)] = str(v)
            if fr.flags & f.FLAG_END_STREAM:
                break
    assert trailers["grpc-status"] == "0"
    assert len(data) == 5 + len(BytesValue(value=b"x" * 20000000).SerializeToString())
    assert DES(data[5:]).value == b"x" * 20000000
    c.close()


def test_memory_stays_bounded_for_a_reader_that_stops(served: Served) -> None:
    """A stream whose client stops reading stops being produced: the
    server holds at most a high-water mark of it, not the whole stream."""
    c = RawClient(served.addr, settings={f.SETTINGS_INITIAL_WINDOW_SIZE: 65535})
    c.request(1, "/test.Echo/Stream", BytesValue(value=b"100000:10000").SerializeToString())
    time.sleep(1.0)
    buffered = served.call(lambda: sum(p.conn.buffered(1) for p in served.port.protocols))
    assert buffered <= srv.STREAM_HIGH_WATER + 20000
    c.close()


def test_curl_http2_prior_knowledge(served: Served, tmp_path: object) -> None:
    curl = require_binary("curl")
    body = frame_message(BytesValue(value=b"curl!").SerializeToString())
    out = subprocess.run(
        [curl, "-s", "--http2-prior-knowledge", "-D", "-", "-H", "content-type: application/grpc",
         "-H", "te: trailers", "--data-binary", "@-", f"http://{served.target}/test.Echo/Unary", "-o", "/dev/stdout"],
        input=body, capture_output=True, timeout=30, check=True,
    ).stdout
    assert b"HTTP/2 200" in out
    assert body in out
    assert b"grpc-status: 0" in out


def test_h2load(served: Served, tmp_path: object) -> None:
    h2load = require_binary("h2load")
    import pathlib

    body = pathlib.Path(str(tmp_path)) / "body"
    body.write_bytes(frame_message(BytesValue(value=b"h2load").SerializeToString()))
    out = subprocess.run(
        [h2load, "-n", "5000", "-c", "10", "-m", "10", "-d", str(body), "-H", "content-type: application/grpc",
         "-H", "te: trailers", f"http://{served.target}/test.Echo/Unary"],
        capture_output=True, text=True, timeout=120, check=True,
    ).stdout
    assert "5000 succeeded, 0 failed, 0 errored" in out, out


def test_http1_gets_404_and_other_versions_505(served: Served) -> None:
    for req, status in ((b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n", b"404"), (b"GET / HTTP/3.0\r\n\r\n", b"505")):
        with socket.create_connection(served.addr, timeout=10) as s:
            s.sendall(req)
            resp = b""
            while chunk := s.recv(4096):
                resp += chunk
        assert resp.startswith(b"HTTP/1.1 " + status), resp


def test_port_in_use_fails_at_once_with_a_clear_message(served: Served) -> None:
    host, port = served.addr
    free = socket.socket()
    free.bind(("127.0.0.1", 0))
    free_port = free.getsockname()[1]
    free.close()
    with pytest.raises(srv.BindError) as ei:
        srv.bind([f"http://127.0.0.1:{free_port}", f"http://{host}:{port}"])
    assert str(ei.value) == f"listen tcp {host}:{port}: bind: address already in use"
    # nothing was left bound: the first address is free again
    srv.bind([f"http://127.0.0.1:{free_port}"])[0].close()


def test_too_many_pings_gets_enhance_your_calm(served: Served) -> None:
    c = RawClient(served.addr)
    for i in range(4):
        c.send(f.ping(b"%08d" % i))
    last, code, debug = c.goaway()
    assert code == f.ErrorCode.ENHANCE_YOUR_CALM
    assert debug == b"too_many_pings"
    c.close()


def test_pings_within_policy_are_fine(served: Served) -> None:
    """Pings while the server sends data are not strikes (grpc-go's rule)."""
    c = RawClient(served.addr)
    for i in range(10):
        c.request(2 * i + 1, "/test.Echo/Unary", b"")
        c.response(2 * i + 1)
        c.send(f.ping(b"%08d" % i))
        assert c.until(f.PING).flags & f.FLAG_ACK
    c.request(99, "/test.Echo/Unary", b"")
    assert c.response(99)[0]["grpc-status"] == "0"
    c.close()


def test_server_keepalive_closes_a_silent_peer() -> None:
    s = serve(keepalive=srv.Keepalive(interval=0.2, timeout=0.3))
    try:
        silent = RawClient(s.addr)
        silent.until(f.PING, timeout=10)  # and never answer it
        deadline = time.monotonic() + 10
        while silent.read_frame(max(deadline - time.monotonic(), 0.01)) is not None:
            pass
        assert silent.closed
        live = RawClient(s.addr)
        for _ in range(3):
            fr = live.until(f.PING, timeout=10)
            live.send(f.ping(fr.payload, ack=True))
        live.request(1, "/test.Echo/Unary", b"")
        assert live.response(1)[0]["grpc-status"] == "0"
        live.close()
    finally:
        shutdown(s)


def test_graceful_stop_lets_calls_finish() -> None:
    s = serve()
    ch = grpc.insecure_channel(s.target)
    fut = unary(ch, "Slow").future(BytesValue(value=b"2"), timeout=60)
    # the stop begins with the call in flight, and its grace outlasts the call even on a slow machine
    wait_for(lambda: _calls_held(s) == 1, 30, "the server to hold the call", interval=0.01)
    stopper = threading.Thread(target=lambda: shutdown(s, grace=30))
    stopper.start()
    assert fut.result(60).value == b"slept"
    ch.close()  # the connection ends: the stop need not wait out its grace
    stopper.join(60)
    assert not stopper.is_alive()


def test_small_window_and_frame_settings_respected() -> None:
    s = serve(settings=H2Settings(initial_window_size=65535, connection_window=65535))
    try:
        ch = grpc.insecure_channel(s.target, options=[("grpc.max_send_message_length", 8 << 20)])
        v = b"q" * 600_000
        assert unary(ch, "Unary")(BytesValue(value=v), timeout=30).value == v
        ch.close()
    finally:
        shutdown(s)


def test_two_thousand_connections() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 2 * 2000 + 256  # both ends live in this process
    if soft < want:
        if hard != resource.RLIM_INFINITY and hard < want:
            pytest.skip(f"RLIMIT_NOFILE hard limit {hard} is below {want}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    s = serve()
    try:
        clients = []
        for i in range(2000):
            c = RawClient(s.addr, timeout=60)
            c.request(1, "/test.Echo/Unary", BytesValue(value=b"%d" % i).SerializeToString())
            clients.append(c)
        for i, c in enumerate(clients):
            headers, data = c.response(1, timeout=60)
            assert headers["grpc-status"] == "0" and DES(data[5:]).value == b"%d" % i
        assert s.call(lambda: s.port.connections) == 2000
        for c in clients:
            c.close()
    finally:
        shutdown(s)


def test_accepting_stops_at_the_connection_limit_and_resumes() -> None:
    s = serve()
    try:
        s.call(lambda: setattr(s.port, "max_connections", 20))
        first = [RawClient(s.addr) for _ in range(20)]
        for c in first:
            c.request(1, "/test.Echo/Unary", b"")
            assert c.response(1)[0]["grpc-status"] == "0"
        extra = RawClient(s.addr)  # the kernel queues it; petcd does not accept it yet
        extra.request(1, "/test.Echo/Unary", b"")
        with pytest.raises(TimeoutError):
            extra.read_frame(timeout=0.5)
        assert s.call(lambda: s.port.connections) == 20
        first[0].close()
        assert extra.response(1, timeout=10)[0]["grpc-status"] == "0"
        for c in first[1:] + [extra]:
            c.close()
    finally:
        shutdown(s)


def test_stop_closes_connections_that_never_spoke() -> None:
    s = serve()
    silent = socket.create_connection(s.addr, timeout=10)
    deadline = time.monotonic() + 10
    while s.call(lambda: len(s.port.undecided)) == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    shutdown(s)
    assert silent.recv(10) == b""
    silent.close()


def test_request_flood_to_a_handler_that_stops_reading_is_held_by_flow_control(served: Served) -> None:
    """Tiny messages sent to a bidi handler that no longer reads: the server
    decodes a bounded number, keeps the rest raw and uncredited, and the
    client's window runs out."""
    c = RawClient(served.addr)
    c.request(1, "/test.Echo/Sink", BytesValue(value=b"first").SerializeToString(), end=False)
    tiny = frame_message(b"")
    sent = 0
    window = H2Settings().initial_window_size
    chunk = tiny * 3000  # 15,000 bytes of 3,000 messages per frame
    while sent + len(chunk) <= window:
        c.send_frame(f.DATA, 0, 1, chunk)
        sent += len(chunk)

    def state() -> tuple[int, int, int]:
        call = next((p.calls[1] for p in served.port.protocols if 1 in p.calls), None)
        if call is None:
            return 0, 0, 0
        assert call.requests is not None
        return len(call.requests.items), sum(len(d) for d, _ in call.raw), call.queued

    deadline = time.monotonic() + 10
    while served.call(lambda: state()[1]) < sent - 20 * len(chunk) and time.monotonic() < deadline:
        time.sleep(0.05)
    items, raw, _ = served.call(state)
    assert items <= srv.QUEUE_ITEMS
    assert raw <= window
    assert raw >= sent - 20 * len(chunk)  # held back, not decoded
    c.close()


def test_nghttp_continuation_padding_priority_and_small_windows(served: Served, tmp_path: object) -> None:
    """nghttp2's own client sends its headers in CONTINUATIONs, pads every
    frame, sends priority fields, grants only 64 KiB windows and a header
    table of 0: a 3 MB answer still arrives whole."""
    nghttp = require_binary("nghttp")
    import pathlib

    body = pathlib.Path(str(tmp_path)) / "body"
    body.write_bytes(frame_message(BytesValue(value=b"3000000").SerializeToString()))
    out = subprocess.run(
        [nghttp, "--continuation", "-b", "50", "-w", "16", "-W", "16", "-c", "0",
         "-H", "content-type: application/grpc", "-H", "te: trailers", "-d", str(body),
         f"http://{served.target}/test.Echo/Big"],
        capture_output=True, timeout=120, check=True,
    ).stdout
    expected = BytesValue(value=b"x" * 3000000).SerializeToString()
    assert out == frame_message(expected)


def test_ping_ack_rides_with_the_response_of_a_running_call(served: Served) -> None:
    """A grpc-go client sends a BDP ping with its requests; while a call runs
    the server's PING ACK waits (at most PING_ACK_DELAY) to go out in the same
    write as the response: one write per request, not two."""
    c = RawClient(served.addr)
    c.request(1, "/test.Echo/Unary", b"")
    c.response(1)
    for i in range(5):
        sid = 3 + 2 * i
        queued: list[bytes] = []
        c.send = queued.append  # type: ignore[method-assign,assignment]  # request and ping in one segment
        c.request(sid, "/test.Echo/Slow", BytesValue(value=b"0.0005").SerializeToString())
        del c.send
        c.send(b"".join(queued) + f.ping(b"%08d" % i))
        first = c.read_frame()
        assert first is not None and first.type == f.PING and first.flags & f.FLAG_ACK
        # the response was already written with it: it is in the client's buffer
        assert len(c.buf) >= 9 and c.buf[3] == f.HEADERS, "the PING ACK was written alone"
        assert c.response(sid)[0]["grpc-status"] == "0"
    c.close()


def test_ping_ack_is_not_held_past_the_delay(served: Served) -> None:
    c = RawClient(served.addr)
    c.request(1, "/test.Echo/Slow", BytesValue(value=b"5").SerializeToString())
    t0 = time.monotonic()
    c.send(f.ping(b"12345678"))
    assert c.until(f.PING, timeout=4).flags & f.FLAG_ACK
    assert time.monotonic() - t0 < 4
    c.close()


def test_a_held_ping_ack_never_holds_back_responses(served: Served, monkeypatch: pytest.MonkeyPatch) -> None:
    """While a PING ACK waits for a response write, responses of calls that
    finish alongside other running calls still go out at once."""
    monkeypatch.setattr(srv, "PING_ACK_DELAY", 20.0)
    c = RawClient(served.addr)
    c.request(1, "/test.Echo/Unary", b"")
    c.response(1)  # the SETTINGS exchange is over: the next output is the PING ACK alone
    c.request(3, "/test.Echo/Slow", BytesValue(value=b"30").SerializeToString())  # keeps a call running
    queued: list[bytes] = []
    c.send = queued.append  # type: ignore[method-assign,assignment]
    c.request(5, "/test.Echo/Slow", BytesValue(value=b"0.05").SerializeToString())
    del c.send
    c.send(b"".join(queued) + f.ping(b"12345678"))  # the ACK is held: calls 1 and 3 run
    started = time.monotonic()
    headers, _ = c.response(5, timeout=15)
    assert headers["grpc-status"] == "0"
    assert time.monotonic() - started < 10, "the response waited for the held PING ACK's timer"
    c.close()
