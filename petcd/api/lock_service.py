"""v3lockpb.Lock: etcd's distributed lock as a service. A lock on a name is
a key under ``name/`` held by a lease; the key with the lowest create
revision under the prefix owns the lock, the others wait, in order, for the
keys created before theirs to go."""

from __future__ import annotations

import asyncio
from typing import Any

from petcd.api.recipes import Recipes, abort_unknown
from petcd.proto import rpc_pb2, v3lock_pb2
from petcd.server.etcd_server import EtcdServer


class LockService:
    def __init__(self, server: EtcdServer) -> None:
        self.s = server
        self.r = Recipes(server)

    async def Lock(self, request: v3lock_pb2.LockRequest, context: Any) -> v3lock_pb2.LockResponse:
        key = b""
        try:
            lease = await self.r.session(request.lease)
            prefix = request.name + b"/"
            key = prefix + format(lease, "x").encode()
            owner = rpc_pb2.RequestOp(request_range=rpc_pb2.RangeRequest(
                key=prefix, range_end=_end(prefix), limit=1,
                sort_order=rpc_pb2.RangeRequest.ASCEND, sort_target=rpc_pb2.RangeRequest.CREATE,
            ))
            txn = rpc_pb2.TxnRequest(
                compare=[rpc_pb2.Compare(key=key, target=rpc_pb2.Compare.CREATE, result=rpc_pb2.Compare.EQUAL,
                                         create_revision=0)],
                success=[rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=key, lease=lease)), owner],
                failure=[rpc_pb2.RequestOp(request_range=rpc_pb2.RangeRequest(key=key)), owner],
            )
            resp = await self.s.txn(txn)
            header = self.r.header(resp.header)
            my_rev = header.revision
            if not resp.succeeded:
                my_rev = resp.responses[0].response_range.kvs[0].create_revision
            owners = resp.responses[1].response_range.kvs
            if not owners or owners[0].create_revision != my_rev:
                header = await self.r.wait_deletes(prefix, my_rev - 1)
            return v3lock_pb2.LockResponse(header=header, key=key)
        except asyncio.CancelledError:
            if key:  # the caller went away while waiting: leave the queue
                asyncio.get_running_loop().create_task(_quiet(self.r.delete(key)))
            raise
        except Exception as exc:
            await abort_unknown(context, exc)

    async def Unlock(self, request: v3lock_pb2.UnlockRequest, context: Any) -> v3lock_pb2.UnlockResponse:
        try:
            resp = await self.r.delete(request.key)
        except Exception as exc:
            await abort_unknown(context, exc)
        return v3lock_pb2.UnlockResponse(header=self.r.header(resp.header))


def _end(prefix: bytes) -> bytes:
    from petcd.api.recipes import prefix_end

    return prefix_end(prefix)


async def _quiet(coro: Any) -> None:
    try:
        await coro
    except Exception:
        pass
