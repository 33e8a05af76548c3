"""A watch stream's outbox: budgets count a batch once per watcher, and a
take splits a batch for more watchers than one chunk renders."""

from __future__ import annotations

import asyncio

from petcd.api import watch_service
from petcd.api.watch_service import CHUNK_ITEMS, STREAM_BUFFER, _Outbox
from petcd.mvcc.watchable_store import History, WatchableStore, WatchBatch, Watcher
from petcd.proto import kv_pb2, rpc_pb2


def _outbox() -> _Outbox:
    return _Outbox(WatchableStore(History()))


def _batch(out: _Outbox, n: int, rev: int, size: int = 100) -> WatchBatch:
    ws = [Watcher(id=i, key=b"k", end=b"", sink=out, next_rev=0) for i in range(n)]
    ev = kv_pb2.Event(type=kv_pb2.Event.PUT, kv=kv_pb2.KeyValue(key=b"k", mod_revision=rev))
    return WatchBatch(ws, [ev], rev, 0, size)


def test_a_batch_counts_once_per_watcher() -> None:
    out = _outbox()
    assert out.offer(_batch(out, STREAM_BUFFER - 10, 2))
    assert not out.offer(_batch(out, 11, 3))  # one response too many
    assert not out.has_room()
    first = asyncio.run(out.take())
    assert sum(len(b.watchers) for b in first if isinstance(b, WatchBatch)) == CHUNK_ITEMS


def test_an_empty_outbox_takes_a_batch_past_its_budgets() -> None:
    out = _outbox()
    assert out.offer(_batch(out, STREAM_BUFFER + 100, 2))  # any revision can be delivered
    assert not out.offer(_batch(out, 1, 3))


def test_take_splits_a_batch_for_more_watchers_than_a_chunk() -> None:
    out = _outbox()
    n = 2 * CHUNK_ITEMS + 5
    out.offer(_batch(out, n, 2))
    out.control(rpc_pb2.WatchResponse(watch_id=7, canceled=True))
    taken: list[list[int]] = []
    while out.items:
        for item in asyncio.run(out.take()):
            taken.append([w.id for w in item.watchers] if isinstance(item, WatchBatch) else [-item.watch_id])
    # in order, every watcher once, no take rendering more than a chunk
    assert [len(t) for t in taken] == [CHUNK_ITEMS, CHUNK_ITEMS, 5, 1]
    assert sum(taken[:3], []) == list(range(n)) and taken[3] == [-7]
    assert out.batches == 0 and out.bytes == 0 and out.controls == 0


def test_take_splits_by_bytes_too() -> None:
    out = _outbox()
    big = watch_service.CHUNK_BYTES // 4
    out.offer(_batch(out, 10, 2, size=big))
    sizes = []
    while out.items:
        sizes.append(sum(len(b.watchers) for b in asyncio.run(out.take()) if isinstance(b, WatchBatch)))
    assert sizes == [4, 4, 2]
    assert out.bytes == 0


def test_pending_events_count_each_watchers_copy_until_taken_or_discarded() -> None:
    """etcd_debugging_mvcc_pending_events_total: a batch's events once per
    watcher while queued; a split take takes off its part; what a closed
    stream still held is no longer pending; a refused batch never was."""
    from petcd import stats

    out = _outbox()
    start = stats.WATCHES.pending
    n = CHUNK_ITEMS + 3
    two = _batch(out, n, 2)
    two.events = two.events * 2
    assert out.offer(two)
    assert stats.WATCHES.pending == start + 2 * n
    asyncio.run(out.take())  # a chunk's worth of the watchers
    assert stats.WATCHES.pending == start + 2 * 3
    assert out.offer(_batch(out, 4, 3))
    assert not out.offer(_batch(out, STREAM_BUFFER, 4))  # refused: never pending
    assert stats.WATCHES.pending == start + 2 * 3 + 4
    out.discard()
    assert stats.WATCHES.pending == start
    assert not out.items and out.batches == 0
