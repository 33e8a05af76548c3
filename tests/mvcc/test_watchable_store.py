"""The watchable store over a real KVStore: what catch-up passes read, how a
full stream is treated, and watches at the compact revision."""

from __future__ import annotations

from petcd.mvcc.history import StoreHistory
from petcd.mvcc.kvstore import KVStore
from petcd.mvcc.watchable_store import WatchableStore, WatchBatch, Watcher, WatchSink, events_size
from petcd.proto import kv_pb2, rpc_pb2
from tests.mvcc.conftest import Harness

PUT, DELETE = kv_pb2.Event.PUT, kv_pb2.Event.DELETE


class CountingHistory(StoreHistory):
    """The store's history, counting what catch-up passes read from it."""

    def __init__(self, kv: KVStore) -> None:
        super().__init__(kv)
        self.reads: list[tuple[int, int, int]] = []  # (start, end, bytes)

    def events(self, start_rev: int, end_rev: int, key: bytes, end: bytes, prev_kv: bool) -> list[kv_pb2.Event]:
        got = super().events(start_rev, end_rev, key, end, prev_kv)
        self.reads.append((start_rev, end_rev, events_size(got)))
        return got

    def events_limited(
        self, start_rev: int, end_rev: int, key: bytes, end: bytes, prev_kv: bool, max_bytes: int
    ) -> tuple[list[kv_pb2.Event], int]:
        got, stop = super().events_limited(start_rev, end_rev, key, end, prev_kv, max_bytes)
        self.reads.append((start_rev, stop, events_size(got)))
        return got, stop


class Outbox(WatchSink):
    """A stream outbox that takes `room` batches, then refuses until drained."""

    def __init__(self, room: int) -> None:
        self.room = room
        self.batches: list[WatchBatch] = []
        self.refused = False

    def has_room(self) -> bool:
        return not self.refused and len(self.batches) < self.room

    def offer(self, batch: WatchBatch) -> bool:
        if len(self.batches) >= self.room:
            self.refused = True
            return False
        self.batches.append(batch)
        return True

    def drain(self) -> list[WatchBatch]:
        out, self.batches, self.refused = self.batches, [], False
        return out


def _watcher(sink: WatchSink, key: bytes = b"k", end: bytes = b"", prev_kv: bool = False) -> Watcher:
    return Watcher(id=1, key=key, end=end, sink=sink, next_rev=0, prev_kv=prev_kv)


def _revs(batches: list[WatchBatch]) -> list[int]:
    return [e.kv.mod_revision for b in batches for e in b.events]


def test_a_full_stream_reads_no_history_until_it_drains(h: Harness) -> None:
    for i in range(20):
        h.put(b"k", b"%d" % i)  # revisions 2..21
    history = CountingHistory(h.kv)
    store = WatchableStore(history)
    store.SYNC_CHUNK_REVS = 5  # several passes for 20 revisions
    sink = Outbox(room=1)
    store.watch(_watcher(sink), 2)
    store.sync_once()
    assert len(sink.batches) == 1
    reads = len(history.reads)
    for _ in range(5):  # passes while the stream is full: nothing read
        store.sync_once()
    assert len(history.reads) == reads
    first = sink.drain()
    store.resume()
    while store._unsynced:  # catch up, draining as a client would
        store.sync_once()
        first += sink.drain()
        if len(history.reads) > 100:
            break
    assert _revs(first) == list(range(2, 22))


def test_catch_up_reads_are_bounded_in_bytes(h: Harness) -> None:
    big = b"x" * (1 << 20)
    for _ in range(40):
        h.put(b"k", big)  # 40 MB of history
    history = CountingHistory(h.kv)
    store = WatchableStore(history)
    sink = Outbox(room=10_000)
    store.watch(_watcher(sink), 2)
    for _ in range(200):
        store.sync_once()
        if not store._unsynced:
            break
    assert not store._unsynced
    assert _revs(sink.batches) == list(range(2, 42))
    # no pass read more than its byte budget and the revision that crossed it
    assert len(history.reads) >= 40 * len(big) // WatchableStore.SYNC_CHUNK_BYTES
    assert max(size for _, _, size in history.reads) <= WatchableStore.SYNC_CHUNK_BYTES + len(big) + 1024


def test_watch_at_the_compact_revision_is_served(h: Harness) -> None:
    h.put(b"a", b"1")  # 2
    h.put(b"b", b"1")  # 3
    txn = rpc_pb2.TxnRequest(success=[
        rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=b"a", value=b"2")),
        rpc_pb2.RequestOp(request_delete_range=rpc_pb2.DeleteRangeRequest(key=b"b")),
    ])
    compact = h.txn(txn).header.revision  # 4
    h.put(b"c", b"1")  # 5
    job = h.kv.compact(compact)
    while not job.step(100):
        pass
    store = WatchableStore(StoreHistory(h.kv))
    at, below = Outbox(room=100), Outbox(room=100)
    store.watch(_watcher(at, b"\0", b"\0", prev_kv=True), compact)
    store.watch(_watcher(below, b"\0", b"\0", prev_kv=True), compact - 1)
    store.sync_once()
    # from the compact revision: its put (no previous value: compacted), not
    # its deletion (removed by the compaction), then what follows
    got = [(e.type, e.kv.key, e.kv.mod_revision, e.HasField("prev_kv")) for b in at.batches for e in b.events]
    assert got == [(PUT, b"a", 4, False), (PUT, b"c", 5, False)]
    assert [(b.compact_revision, b.events) for b in below.batches] == [(compact, [])]


def test_watch_at_the_compact_revision_before_the_compaction_finished(h: Harness) -> None:
    h.put(b"a", b"1")
    h.put(b"b", b"1")
    h.delete(b"b")  # 4: a deletion at the compact revision
    h.put(b"a", b"2")  # 5
    h.kv.compact(4)  # scheduled, not yet run: the tombstone is still stored
    store = WatchableStore(StoreHistory(h.kv))
    at = Outbox(room=100)
    store.watch(_watcher(at, b"\0", b"\0", prev_kv=True), 4)
    store.sync_once()
    # the same as once it has run: deletions at the compact revision are gone
    assert [(e.type, e.kv.mod_revision) for b in at.batches for e in b.events] == [(PUT, 5)]


def test_wants_prev_kv_while_a_synced_watcher_asked_for_it(h: Harness) -> None:
    """Puts skip reading the previous value unless a watcher that gets live
    events asked for prev_kv: the store says so while one is synced, and
    not once it is parked (catching up reads prev_kv from the history) or
    cancelled."""
    h.put(b"k", b"0")
    store = WatchableStore(StoreHistory(h.kv))
    plain = _watcher(Outbox(room=10))
    store.watch(plain, 0)
    assert not store.wants_prev_kv(b"k")
    w = Watcher(id=2, key=b"k", end=b"", sink=Outbox(room=0), next_rev=0, prev_kv=True)
    store.watch(w, 0)
    assert store.wants_prev_kv(b"k")
    h.kv.on_events = store.notify
    h.put(b"k", b"1")  # the sink has no room: the watcher is parked
    assert not w.synced and not store.wants_prev_kv(b"k")
    store.cancel(w)
    store.cancel(plain)
    assert not store.wants_prev_kv(b"k")
    again = Watcher(id=3, key=b"k", end=b"", sink=Outbox(room=10), next_rev=0, prev_kv=True)
    store.watch(again, 0)
    assert store.wants_prev_kv(b"k")
    store.cancel(again)
    assert not store.wants_prev_kv(b"k")


def test_a_revision_is_one_batch_per_stream_for_its_watchers_alike(h: Harness) -> None:
    store = WatchableStore(StoreHistory(h.kv))
    h.kv.on_events = store.notify
    one, two = Outbox(room=100), Outbox(room=100)
    watchers = [
        Watcher(id=1, key=b"k", end=b"", sink=one, next_rev=0),
        Watcher(id=2, key=b"k", end=b"", sink=one, next_rev=0),
        Watcher(id=3, key=b"k", end=b"", sink=one, next_rev=0, prev_kv=True),  # other options
        Watcher(id=4, key=b"k", end=b"", sink=two, next_rev=0),  # another stream
        Watcher(id=5, key=b"j", end=b"", sink=one, next_rev=0),  # another key
    ]
    for w in watchers:
        store.watch(w, 0)
    h.put(b"k", b"1")
    h.put(b"k", b"2")
    ids = [[w.id for w in b.watchers] for b in one.batches]
    assert ids == [[1, 2], [3], [1, 2], [3]]
    assert [[w.id for w in b.watchers] for b in two.batches] == [[4], [4]]
    assert [b.events[0].HasField("prev_kv") for b in one.batches] == [False, False, False, True]
    assert _revs(two.batches) == _revs(one.batches[::2]) == [2, 3]


def test_a_refused_batch_parks_all_its_watchers_and_each_catches_up(h: Harness) -> None:
    store = WatchableStore(StoreHistory(h.kv))
    h.kv.on_events = store.notify
    sink = Outbox(room=0)
    a = Watcher(id=1, key=b"k", end=b"", sink=sink, next_rev=0)
    b = Watcher(id=2, key=b"k", end=b"", sink=sink, next_rev=0)
    store.watch(a, 0)
    store.watch(b, 0)
    h.put(b"k", b"1")  # 2: refused
    assert not a.synced and not b.synced and a.next_rev == b.next_rev == 2
    assert store.watcher_count() == 2
    sink.room = 100
    sink.drain()
    store.resume()
    store.sync_once()
    assert a.synced and b.synced
    assert sorted((w.id, _revs([batch])) for batch in sink.batches for w in batch.watchers) == [(1, [2]), (2, [2])]
    h.put(b"k", b"2")  # 3: live again, one batch for both
    # (in the order they caught up, which the unsynced set decides)
    assert [sorted(w.id for w in batch.watchers) for batch in sink.batches[2:]] == [[1, 2]]
