"""Bursts of concurrent calls are served, not refused (issue 9, defect 6):
etcd serves 5,000 concurrent unary calls and 5,000 concurrent Watch stream
opens on one connection; so must petcd. Plain grpcio clients against a real
petcd process, so the test holds for any front end that serves the port."""

from __future__ import annotations

import asyncio
import collections

import grpc
import pytest

from petcd.proto import rpc_pb2, rpc_pb2_grpc
from petcd.testing.harness import Server

pytestmark = pytest.mark.timeout(300)

BURST = 5000  # what etcd 3.4 serves whole on this machine


def _outcome(exc: grpc.RpcError) -> str:
    return f"{exc.code().name}: {exc.details()}"


def test_unary_burst_is_served(petcd: Server) -> None:
    ch = petcd.channel()
    grpc.channel_ready_future(ch).result(timeout=30)
    kv = rpc_pb2_grpc.KVStub(ch)
    kv.Put(rpc_pb2.PutRequest(key=b"burst", value=b"v"), timeout=30)
    futures = [kv.Range.future(rpc_pb2.RangeRequest(key=b"burst", serializable=i % 2 == 0), timeout=120)
               for i in range(BURST)]
    outcomes: collections.Counter[str] = collections.Counter()
    for f in futures:
        try:
            outcomes["ok" if f.result().kvs[0].value == b"v" else "wrong value"] += 1
        except grpc.RpcError as exc:
            outcomes[_outcome(exc)] += 1
    assert outcomes == {"ok": BURST}


def test_watch_open_burst_is_served(petcd: Server) -> None:
    async def burst() -> collections.Counter[str]:
        outcomes: collections.Counter[str] = collections.Counter()
        async with grpc.aio.insecure_channel(petcd.endpoint) as ch:
            stub = rpc_pb2_grpc.WatchStub(ch)

            async def open_one(i: int) -> grpc.aio.StreamStreamCall:
                call = stub.Watch(timeout=120)
                try:
                    await call.write(rpc_pb2.WatchRequest(
                        create_request=rpc_pb2.WatchCreateRequest(key=b"burst/%d" % i)))
                    resp = await call.read()
                    outcomes["created" if resp is not grpc.aio.EOF and resp.created else "no created"] += 1
                except grpc.RpcError as exc:
                    outcomes[_outcome(exc)] += 1
                return call

            calls = await asyncio.gather(*(open_one(i) for i in range(BURST)))
            # every stream is live: one put reaches the watcher of its key
            await rpc_pb2_grpc.KVStub(ch).Put(rpc_pb2.PutRequest(key=b"burst/7", value=b"x"), timeout=30)
            resp = await asyncio.wait_for(calls[7].read(), 60)
            assert resp is not grpc.aio.EOF and [e.kv.key for e in resp.events] == [b"burst/7"]
            for c in calls:
                c.cancel()
        return outcomes

    assert asyncio.run(burst()) == {"created": BURST}
