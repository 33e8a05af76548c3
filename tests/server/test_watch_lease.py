"""Watches and leases against one member over real gRPC streams."""

from __future__ import annotations

import asyncio
import gc
import logging
import queue
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from petcd.proto import rpc_pb2 as pb
from petcd.proto import rpc_pb2_grpc
from petcd.testing.harness import wait_for

from .conftest import Member, member_config, start_member


class WatchClient:
    """A Watch stream driven from a thread: requests in, responses queued."""

    def __init__(self, channel: grpc.Channel) -> None:
        self.requests: queue.Queue[pb.WatchRequest | None] = queue.Queue()
        self.responses: queue.Queue[pb.WatchResponse] = queue.Queue()
        stub = rpc_pb2_grpc.WatchStub(channel)
        self.call = stub.Watch(self._iter())
        self.thread = threading.Thread(target=self._pump, daemon=True)
        self.thread.start()

    def _iter(self) -> Iterator[pb.WatchRequest]:
        while True:
            r = self.requests.get()
            if r is None:
                return
            yield r

    def _pump(self) -> None:
        try:
            for resp in self.call:
                self.responses.put(resp)
        except grpc.RpcError:
            pass

    def create(self, **kw: object) -> pb.WatchResponse:
        self.requests.put(pb.WatchRequest(create_request=pb.WatchCreateRequest(**kw)))  # type: ignore[arg-type]
        resp = self.next()
        assert resp.created
        return resp

    def next(self, timeout: float = 30.0) -> pb.WatchResponse:
        return self.responses.get(timeout=timeout)

    def events(self, n: int, timeout: float = 60.0) -> list[tuple[int, bytes, bytes, int]]:
        out: list[tuple[int, bytes, bytes, int]] = []
        deadline = time.monotonic() + timeout
        while len(out) < n:
            resp = self.next(max(0.1, deadline - time.monotonic()))
            out.extend((e.type, e.kv.key, e.kv.value, e.kv.mod_revision) for e in resp.events)
        return out

    def close(self) -> None:
        self.requests.put(None)
        self.call.cancel()


def test_watch_sees_puts_and_deletes_in_order(member: Member) -> None:
    w = WatchClient(member.channel)
    try:
        created = w.create(key=b"p/", range_end=b"p0")
        assert created.header.revision == 1
        member.kv.Put(pb.PutRequest(key=b"p/a", value=b"1"))
        member.kv.Put(pb.PutRequest(key=b"q", value=b"x"))
        member.kv.Put(pb.PutRequest(key=b"p/b", value=b"2"))
        member.kv.DeleteRange(pb.DeleteRangeRequest(key=b"p/a"))
        assert w.events(3) == [(0, b"p/a", b"1", 2), (0, b"p/b", b"2", 4), (1, b"p/a", b"", 5)]
    finally:
        w.close()


def test_watch_replays_history_and_reports_compaction(member: Member) -> None:
    for i in range(5):
        member.kv.Put(pb.PutRequest(key=b"k", value=b"%d" % i))
    w = WatchClient(member.channel)
    try:
        w.create(key=b"k", start_revision=3, prev_kv=True)
        got = w.events(4)
        assert [(v, rev) for _, _, v, rev in got] == [(b"1", 3), (b"2", 4), (b"3", 5), (b"4", 6)]
    finally:
        w.close()
    member.kv.Compact(pb.CompactionRequest(revision=5, physical=True))
    w = WatchClient(member.channel)
    try:
        w.create(key=b"k", start_revision=2)
        resp = w.next()
        assert resp.canceled and resp.compact_revision == 5
    finally:
        w.close()


def test_lease_grant_keepalive_and_expiry_deletes_keys(member: Member) -> None:
    lease = rpc_pb2_grpc.LeaseStub(member.channel)
    g = lease.LeaseGrant(pb.LeaseGrantRequest(TTL=2))
    assert g.ID != 0 and g.TTL == 2
    member.kv.Put(pb.PutRequest(key=b"eph", value=b"v", lease=g.ID))
    ttl = lease.LeaseTimeToLive(pb.LeaseTimeToLiveRequest(ID=g.ID, keys=True))
    assert ttl.grantedTTL == 2 and list(ttl.keys) == [b"eph"]
    ka = list(lease.LeaseKeepAlive(iter([pb.LeaseKeepAliveRequest(ID=g.ID)])))
    assert ka[0].ID == g.ID and ka[0].TTL == 2
    deadline = time.monotonic() + 30
    while member.kv.Range(pb.RangeRequest(key=b"eph")).count:
        assert time.monotonic() < deadline, "the leased key outlived its lease"
        time.sleep(0.1)
    assert lease.LeaseTimeToLive(pb.LeaseTimeToLiveRequest(ID=g.ID)).TTL == -1
    try:
        member.kv.Put(pb.PutRequest(key=b"x", value=b"v", lease=g.ID))
        raise AssertionError("a put with a revoked lease succeeded")
    except grpc.RpcError as e:
        assert e.code() == grpc.StatusCode.NOT_FOUND
        assert e.details() == "etcdserver: requested lease not found"


def test_lease_revoke_deletes_all_keys_in_one_revision(member: Member) -> None:
    lease = rpc_pb2_grpc.LeaseStub(member.channel)
    g = lease.LeaseGrant(pb.LeaseGrantRequest(TTL=60, ID=77))
    assert g.ID == 77
    for k in (b"a", b"b", b"c"):
        member.kv.Put(pb.PutRequest(key=k, value=b"v", lease=77))
    rev = lease.LeaseRevoke(pb.LeaseRevokeRequest(ID=77)).header.revision
    assert rev == 5
    assert member.kv.Range(pb.RangeRequest(key=b"a", range_end=b"d")).count == 0
    assert [x.ID for x in lease.LeaseLeases(pb.LeaseLeasesRequest()).leases] == []


def test_a_watch_on_an_empty_range_is_refused_as_etcd_does(member: Member) -> None:
    w = WatchClient(member.channel)
    try:
        for key, end in [(b"b", b"a"), (b"a", b"a")]:
            refused = w.create(key=key, range_end=end)
            assert refused.canceled and refused.cancel_reason == "mvcc: watcher range is empty"
        for key, end in [(b"a", b"\0"), (b"a", b""), (b"a", b"b")]:
            ok = w.create(key=key, range_end=end)
            assert not ok.canceled, (key, end)
    finally:
        w.close()


def _pending_takes(m: Member) -> int:
    """Tasks on the member's loop still waiting on a watch stream's outbox (_Outbox.take)."""

    async def count() -> int:
        return sum(1 for t in asyncio.all_tasks() if t.get_coro().__qualname__.endswith("_Outbox.take"))

    return asyncio.run_coroutine_threadsafe(count(), m.loop).result(30)


def test_watch_streams_that_end_leave_no_pending_task_behind(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A client that goes away ends its stream; nothing of the stream is left
    pending to be destroyed (asyncio logs that as an error)."""
    m = start_member(member_config(tmp_path / "m"))
    try:
        with caplog.at_level(logging.ERROR, logger="asyncio"):
            for _ in range(3):
                w = WatchClient(m.channel)
                w.create(key=b"a")
                m.kv.Put(pb.PutRequest(key=b"a", value=b"1"))
                w.next()
                w.close()
            # the streams end on the member's loop: their outbox takes are cancelled and done
            wait_for(lambda: _pending_takes(m) == 0, 60, "the ended streams' pending takes to finish")
            gc.collect()
    finally:
        m.stop()
    gc.collect()
    assert not [r for r in caplog.records if "Task was destroyed" in r.getMessage()]
