"""Watch guarantees over real gRPC streams: ordered, gap-free, exactly once;
slow consumers do not hold up others; resumable across a restart."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from petcd.proto import rpc_pb2, rpc_pb2_grpc
from petcd.testing.harness import Server, petcd_server, wait_for

pytestmark = pytest.mark.timeout(600)


class WatchStream:
    """One Watch stream: send create/cancel requests, collect responses."""

    def __init__(self, channel: grpc.Channel, read: bool = True) -> None:
        self.requests: queue.Queue[rpc_pb2.WatchRequest | None] = queue.Queue()
        self.responses: list[rpc_pb2.WatchResponse] = []
        self.lock = threading.Lock()
        self.call = rpc_pb2_grpc.WatchStub(channel).Watch(self._requests())
        self.reading = threading.Event()
        if read:
            self.reading.set()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _requests(self) -> Iterator[rpc_pb2.WatchRequest]:
        while True:
            r = self.requests.get()
            if r is None:
                return
            yield r

    def _read(self) -> None:
        try:
            for resp in self.call:
                self.reading.wait()
                with self.lock:
                    self.responses.append(resp)
        except grpc.RpcError:
            pass

    def create(self, key: bytes, range_end: bytes = b"", start_revision: int = 0, prev_kv: bool = False) -> None:
        self.requests.put(rpc_pb2.WatchRequest(create_request=rpc_pb2.WatchCreateRequest(
            key=key, range_end=range_end, start_revision=start_revision, prev_kv=prev_kv)))

    def events(self, watch_id: int | None = None) -> list[tuple[int, int, bytes]]:
        """(revision, type, key) of every event received, in arrival order."""
        with self.lock:
            return [(e.kv.mod_revision, e.type, e.kv.key) for r in self.responses
                    if watch_id is None or r.watch_id == watch_id for e in r.events]

    def created(self) -> list[rpc_pb2.WatchResponse]:
        with self.lock:
            return [r for r in self.responses if r.created]

    def close(self) -> None:
        self.requests.put(None)
        self.call.cancel()


def _put_many(server: Server, keys: list[bytes], value: bytes = b"v") -> list[int]:
    ch = grpc.insecure_channel(server.endpoint)
    kv = rpc_pb2_grpc.KVStub(ch)
    revs = [kv.Put(rpc_pb2.PutRequest(key=k, value=value), timeout=30).header.revision for k in keys]
    ch.close()
    return revs


def _concurrent_puts(server: Server, prefix: bytes, n: int, writers: int, value: bytes = b"v") -> list[int]:
    revs: list[int] = []
    lock = threading.Lock()

    def work(w: int) -> None:
        got = _put_many(server, [b"%s%d/%06d" % (prefix, w, i) for i in range(n // writers)], value)
        with lock:
            revs.extend(got)

    threads = [threading.Thread(target=work, args=(w,)) for w in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sorted(revs)


def test_a_watcher_sees_all_puts_of_concurrent_writers_in_order_without_gaps(petcd: Server) -> None:
    w = WatchStream(petcd.channel())
    try:
        w.create(b"order/", b"order0")
        wait_for(lambda: w.created(), 30, "the watch to be created")
        revs = _concurrent_puts(petcd, b"order/", 10_000, 8)
        wait_for(lambda: len(w.events()) >= len(revs), 120, "every event")
        seen = [rev for rev, _, _ in w.events()]
    finally:
        w.close()
    assert seen == revs  # in order, each exactly once
    assert revs == list(range(revs[0], revs[0] + len(revs)))  # no other writes: no gaps


def test_a_slow_watcher_does_not_delay_a_fast_one_and_still_gets_everything(petcd: Server) -> None:
    slow = WatchStream(petcd.channel(), read=False)
    fast = WatchStream(petcd.channel())
    try:
        slow.create(b"slow/", b"slow0")
        fast.create(b"slow/", b"slow0")
        wait_for(lambda: fast.created(), 30, "the fast watch to be created")
        revs = _concurrent_puts(petcd, b"slow/", 3000, 4, value=b"x" * 1024)
        wait_for(lambda: len(fast.events()) >= len(revs), 60, "the fast watcher to get every event")
        assert [r for r, _, _ in fast.events()] == revs
        slow.reading.set()  # the slow client starts reading at last
        wait_for(lambda: len(slow.events()) >= len(revs), 120, "the slow watcher to catch up")
        assert [r for r, _, _ in slow.events()] == revs
    finally:
        slow.reading.set()
        slow.close()
        fast.close()


def test_a_thousand_watchers_on_one_stream_all_receive_every_event(petcd: Server) -> None:
    w = WatchStream(petcd.channel())
    try:
        for _ in range(1000):
            w.create(b"fan/", b"fan0")
        wait_for(lambda: len(w.created()) == 1000, 60, "1000 watchers to be created")
        ids = {r.watch_id for r in w.created()}
        assert len(ids) == 1000
        revs = _put_many(petcd, [b"fan/%d" % i for i in range(10)])
        wait_for(lambda: len(w.events()) >= 10_000, 120, "every watcher to get every event")
        for wid in ids:
            assert [r for r, _, _ in w.events(wid)] == revs
    finally:
        w.close()


def test_watchers_sharing_a_slow_stream_each_get_every_event_after_their_created(petcd: Server) -> None:
    """The watchers of a stream get a revision as one batch (merged with
    the next when they queue up); each still gets its own responses, in
    order, and a watcher created behind a backlog gets its created response
    before any of its events."""
    w = WatchStream(petcd.channel())
    try:
        w.create(b"share/", b"share0")
        w.create(b"share/", b"share0", prev_kv=True)
        wait_for(lambda: len(w.created()) == 2, 30, "two watchers")
        w.reading.clear()  # from here the client reads nothing: a backlog builds up
        first = _concurrent_puts(petcd, b"share/a", 1500, 3, value=b"x" * 512)
        w.create(b"share/", b"share0", start_revision=first[-1] + 1)  # queued behind the backlog
        second = _concurrent_puts(petcd, b"share/b", 1500, 3, value=b"x" * 512)
        w.reading.set()
        wait_for(lambda: len(w.created()) == 3, 60, "the third watcher's created response")
        ids = [r.watch_id for r in w.created()]
        wait_for(lambda: len(w.events(ids[2])) >= len(second) and len(w.events(ids[1])) >= len(first + second),
                 120, "every watcher to get its events")
        with w.lock:
            responses = list(w.responses)
    finally:
        w.reading.set()
        w.close()
    for wid in ids[:2]:
        assert [r for r, _, _ in w.events(wid)] == first + second
    assert [r for r, _, _ in w.events(ids[2])] == second
    created_at = next(i for i, r in enumerate(responses) if r.created and r.watch_id == ids[2])
    assert all(i > created_at for i, r in enumerate(responses) if r.watch_id == ids[2] and r.events)


def test_a_watch_resumed_after_a_restart_misses_nothing(tmp_path: Path) -> None:
    server = petcd_server(tmp_path).start()
    try:
        first = _put_many(server, [b"resume/%03d" % i for i in range(200)])
        w = WatchStream(server.channel())
        w.create(b"resume/", b"resume0", start_revision=first[0])
        wait_for(lambda: len(w.events()) >= 50, 60, "some events")
        server.kill()  # the watcher's stream dies with the server
        w.close()
        last_seen = max(r for r, _, _ in w.events())
        server.start()
        more = _put_many(server, [b"resume/%03d" % i for i in range(200, 300)])
        w2 = WatchStream(server.channel())
        w2.create(b"resume/", b"resume0", start_revision=last_seen + 1)
        want = [r for r in first + more if r > last_seen]
        wait_for(lambda: len(w2.events()) >= len(want), 60, "the resumed watch to catch up")
        assert [r for r, _, _ in w2.events()] == want
        w2.close()
    finally:
        server.stop()
