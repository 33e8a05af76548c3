"""CPU per unary RPC of petcd's HTTP/2 front end alone: a child process
serves a do-nothing unary handler on petcd/http2 (uvloop), a load generator
drives it, and the child's CPU time (user + system, from /proc) is divided by
the requests answered. A benchmark, not a test.

    python3 bench/frontend_bench.py [--requests N] [--clients C] [--streams M]

Loads: h2load (nghttp2-client) sending gRPC-framed POSTs, and grpcio's
C-core client from threads. Target: at most 100 µs of CPU per RPC."""

from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from petcd.http2.grpc import frame_message  # noqa: E402

METHOD = "/bench.Echo/Nothing"


def serve(port: int) -> None:
    """The child: a front end with one do-nothing unary method."""
    import asyncio

    import uvloop

    from petcd.http2 import server as srv

    async def nothing(req: bytes, ctx: srv.CallContext) -> bytes:
        return b""

    async def main() -> None:
        cp = srv.ClientPort(srv.bind([f"http://127.0.0.1:{port}"]))
        cp.add(METHOD, srv.Method(srv.Kind.UNARY, lambda raw: raw, lambda resp: resp, nothing))
        await cp.start()
        print("ready", flush=True)
        await asyncio.Event().wait()

    uvloop.run(main())


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_h2load(port: int, n: int, clients: int, streams: int) -> tuple[int, str]:
    h2load = shutil.which("h2load")
    if h2load is None:
        raise SystemExit("h2load not found (apt-get install nghttp2-client)")
    with tempfile.NamedTemporaryFile(suffix=".bin", delete=False) as f:
        f.write(frame_message(b"\x0a\x03foo"))
        body = f.name
    try:
        out = subprocess.run(
            [
                h2load, "-n", str(n), "-c", str(clients), "-m", str(streams), "-d", body,
                "-H", "content-type: application/grpc", "-H", "te: trailers",
                f"http://127.0.0.1:{port}{METHOD}",
            ],
            capture_output=True, text=True, check=True,
        ).stdout
    finally:
        os.unlink(body)
    m = re.search(r"requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded", out)
    ok = int(m.group(2)) if m else 0
    summary = "\n".join(line for line in out.splitlines() if line.startswith(("finished in", "requests:", "status codes:")))
    return ok, summary


def run_grpcio(port: int, n: int, threads: int) -> tuple[int, str]:
    import grpc

    ch = grpc.insecure_channel(f"127.0.0.1:{port}")
    call = ch.unary_unary(METHOD)
    per = n // threads
    done = [0] * threads

    def work(i: int) -> None:
        for _ in range(per):
            call(b"\x0a\x03foo", timeout=10)
            done[i] += 1

    t0 = time.monotonic()
    ts = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    took = time.monotonic() - t0
    ch.close()
    total = sum(done)
    return total, f"{total} RPCs in {took:.2f}s ({total / took:.0f}/s) from {threads} threads"


def sans_io_compare(n: int = 20_000, batch: int = 8) -> None:
    """The HTTP/2 state machines alone on the same bytes: petcd's and the
    h2 library's (when installed), answering each request with headers, one
    message and trailers. Prints µs of CPU per request."""
    import hpack

    from petcd.http2 import connection as ours
    from petcd.http2 import frames as f
    from petcd.http2.grpc import OK_TRAILERS, RESPONSE_HEADERS

    enc = hpack.Encoder()
    body = frame_message(b"\x0a\x03foo")
    reqs = []
    for i in range(n):
        sid = 2 * i + 1
        block = enc.encode([(":method", "POST"), (":scheme", "http"), (":path", METHOD), (":authority", "x"),
                            ("content-type", "application/grpc"), ("te", "trailers"), ("user-agent", "bench")])
        reqs.append(f.frame(f.HEADERS, f.FLAG_END_HEADERS, sid, block) + f.frame(f.DATA, f.FLAG_END_STREAM, sid, body))
    chunks = [b"".join(reqs[i : i + batch]) for i in range(0, n, batch)]
    # the client grants windows big enough for every response
    start = (f.PREFACE + f.settings_frame({f.SETTINGS_INITIAL_WINDOW_SIZE: f.MAX_WINDOW})
             + f.window_update(0, f.MAX_WINDOW - f.DEFAULT_WINDOW))

    def run_ours() -> None:
        c = ours.H2Connection()
        c.initiate()
        c.receive_data(start)
        for chunk in chunks:
            for ev in c.receive_data(chunk):
                if type(ev) is ours.DataReceived:
                    c.acknowledge_received_data(ev.stream_id, ev.flow_len)
                    c.send_headers(ev.stream_id, RESPONSE_HEADERS)
                    c.send_data(ev.stream_id, body)
                    c.send_headers(ev.stream_id, OK_TRAILERS, True)
            c.data_to_send()

    results = [("petcd/http2", run_ours)]
    try:
        import h2.config
        import h2.connection
        import h2.events

        def run_h2() -> None:
            c = h2.connection.H2Connection(config=h2.config.H2Configuration(client_side=False, header_encoding=None))
            c.initiate_connection()
            c.receive_data(start)
            for chunk in chunks:
                for ev in c.receive_data(chunk):
                    if isinstance(ev, h2.events.DataReceived):
                        c.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                        c.send_headers(ev.stream_id, [(b":status", b"200"), (b"content-type", b"application/grpc")])
                        c.send_data(ev.stream_id, body)
                        c.send_headers(ev.stream_id, [(b"grpc-status", b"0")], end_stream=True)
                c.data_to_send()

        results.append(("h2 library", run_h2))
    except ImportError:
        pass
    print("== HTTP/2 state machine alone (sans-I/O), same request bytes")
    for name, fn in results:
        t0 = time.process_time()
        fn()
        used = time.process_time() - t0
        print(f"{name}: {used / n * 1e6:.1f} µs per request")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--requests", type=int, default=100_000)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--streams", type=int, default=8)
    ap.add_argument("--grpcio-requests", type=int, default=10_000)
    args = ap.parse_args()
    if args.serve:
        serve(args.serve)
        return
    sans_io_compare()
    port = free_port()
    child = subprocess.Popen([sys.executable, __file__, "--serve", str(port)], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        if child.stdout.readline().strip() != "ready":
            raise SystemExit("the server did not start")
        loads = [
            (
                f"h2load -c{args.clients} -m{args.streams}",
                lambda: run_h2load(port, args.requests, args.clients, args.streams),
            ),
            ("h2load -c1 -m1", lambda: run_h2load(port, max(args.requests // 10, 1000), 1, 1)),
            ("grpcio sync, 8 threads", lambda: run_grpcio(port, args.grpcio_requests, 8)),
        ]
        for name, load in loads:
            before = cpu_seconds(child.pid)
            ok, summary = load()
            used = cpu_seconds(child.pid) - before
            print(f"== {name}")
            print(summary)
            print(f"front end CPU: {used:.2f}s for {ok} RPCs = {used / max(ok, 1) * 1e6:.1f} µs per RPC (target <= 100)")
    finally:
        child.terminate()
        child.wait(10)


if __name__ == "__main__":
    main()
