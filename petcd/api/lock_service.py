"""v3lockpb.Lock: etcd's distributed lock as a service. A lock on a name is
a key under ``name/`` held by a lease; the key with the lowest create
revision under the prefix owns the lock, the others wait, in order, for the
keys created before theirs to go."""

from __future__ import annotations

import asyncio
from typing import Any

from petcd.api.handler import auth_info
from petcd.api.recipes import Recipes, abort_unknown, first_created_request
from petcd.proto import rpc_pb2, v3lock_pb2
from petcd.server.etcd_server import EtcdServer


class LockService:
    def __init__(self, server: EtcdServer) -> None:
        self.s = server
        self.r = Recipes(server)

    async def Lock(self, request: v3lock_pb2.LockRequest, context: Any) -> v3lock_pb2.LockResponse:
        key = b""
        joining: asyncio.Future[Any] | None = None
        try:
            info = await auth_info(self.s, context)
            lease = await self.r.session(request.lease)
            owner = rpc_pb2.RequestOp(request_range=first_created_request(request.name + b"/"))
            prefix, key, txn = self.r.queue_entry(request.name, lease, b"", [owner])
            # shielded: the caller going away must not cut the txn short
            # (abandon waits for it, then deletes the key)
            joining = asyncio.ensure_future(self.s.txn(txn, info))
            resp = await asyncio.shield(joining)
            header = self.r.header(resp.header)
            my_rev = header.revision
            if not resp.succeeded:
                my_rev = resp.responses[0].response_range.kvs[0].create_revision
            owners = resp.responses[1].response_range.kvs
            if not owners or owners[0].create_revision != my_rev:
                header = await self.r.wait_deletes(prefix, my_rev - 1, info)
            return v3lock_pb2.LockResponse(header=header, key=key)
        except asyncio.CancelledError:
            if key:  # the caller went away while waiting: leave the queue
                self.r.abandon(key, joining)
            raise
        except Exception as exc:
            await abort_unknown(context, exc)

    async def Unlock(self, request: v3lock_pb2.UnlockRequest, context: Any) -> v3lock_pb2.UnlockResponse:
        try:
            resp = await self.r.delete(request.key, await auth_info(self.s, context))
        except Exception as exc:
            await abort_unknown(context, exc)
        return v3lock_pb2.UnlockResponse(header=self.r.header(resp.header))
