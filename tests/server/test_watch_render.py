"""A watch stream's rendering on a real member: one revision's batch for
several watchers becomes a response per watcher, a backlog for the same
watchers merges into one response each, and control responses keep their
place between them."""

from __future__ import annotations

import asyncio

from petcd.api.watch_service import _Stream
from petcd.mvcc.watchable_store import WatchBatch, Watcher
from petcd.proto import kv_pb2, rpc_pb2
from petcd.server.etcd_server import EtcdServer

from .conftest import Member


async def _render_backlog(server: EtcdServer) -> list[rpc_pb2.WatchResponse]:
    stream = _Stream(server)
    try:
        for prev_kv in (False, False, True):
            stream.create(rpc_pb2.WatchCreateRequest(key=b"r/", range_end=b"r0", prev_kv=prev_kv))
        for i in range(5):
            await server.put(rpc_pb2.PutRequest(key=b"r/%d" % i, value=b"v"))
        stream.cancel(1)
        await server.put(rpc_pb2.PutRequest(key=b"r/last", value=b"v"))
        out: list[rpc_pb2.WatchResponse] = []
        while stream.out.items:
            for m in stream.render_all(await stream.out.take()):
                out.append(rpc_pb2.WatchResponse.FromString(m) if isinstance(m, bytes) else m)
        return out
    finally:
        stream.close()


def test_a_backlog_renders_one_response_per_watcher_in_order(member: Member) -> None:
    server = member.etcd.server
    got = asyncio.run_coroutine_threadsafe(_render_backlog(server), member.loop).result(60)
    shape = [(r.watch_id, r.created, r.canceled, [e.kv.key for e in r.events]) for r in got]
    keys = [b"r/%d" % i for i in range(5)]
    assert shape == [
        (0, True, False, []), (1, True, False, []), (2, True, False, []),
        (0, False, False, keys), (1, False, False, keys),  # the two alike: one batch per revision, merged
        (2, False, False, keys),  # prev_kv: a batch of its own
        (1, False, True, []),  # the cancel, after watcher 1's events
        (0, False, False, [b"r/last"]), (2, False, False, [b"r/last"]),
    ]
    last = got[7].events[0].kv.mod_revision
    assert got[3].header.revision == got[4].header.revision == last - 1  # a merged response: its last revision
    assert got[7].header.revision == last
    assert got[3].header.cluster_id == server.cluster_id and got[3].header.member_id == server.member_id
    assert [e.kv.mod_revision for e in got[3].events] == list(range(last - 5, last))


async def _render_overlapping(server: EtcdServer) -> list[rpc_pb2.WatchResponse]:
    stream = _Stream(server)
    try:
        for _ in range(2):
            stream.create(rpc_pb2.WatchCreateRequest(key=b"o/", range_end=b"o0"))
        w0, w1 = stream.watchers[0], stream.watchers[1]
        stream.out.items.clear()  # the created responses: not what this test looks at

        def batch(rev: int, *ws: Watcher) -> WatchBatch:
            ev = kv_pb2.Event(type=kv_pb2.Event.PUT, kv=kv_pb2.KeyValue(key=b"o/%d" % rev, mod_revision=rev))
            return WatchBatch(list(ws), [ev], rev, 0, 10)

        # watcher 1 misses revision 3 (parked, say): its batches must not
        # merge across watcher 0's batch of revision 3
        items: list[rpc_pb2.WatchResponse | WatchBatch] = [
            batch(2, w0, w1), batch(3, w0), batch(4, w0, w1), batch(5, w0, w1), batch(6, w1)]
        return [rpc_pb2.WatchResponse.FromString(m) for m in stream.render_all(items)]
    finally:
        stream.close()


def test_merged_responses_never_pass_a_later_batch_of_their_watchers(member: Member) -> None:
    got = asyncio.run_coroutine_threadsafe(_render_overlapping(member.etcd.server), member.loop).result(60)
    assert [(r.watch_id, [e.kv.mod_revision for e in r.events]) for r in got] == [
        (0, [2]), (1, [2]), (0, [3]), (0, [4, 5]), (1, [4, 5]), (1, [6])]
    for wid in (0, 1):
        revs = [e.kv.mod_revision for r in got if r.watch_id == wid for e in r.events]
        assert revs == sorted(revs)
