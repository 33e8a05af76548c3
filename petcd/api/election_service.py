"""v3electionpb.Election: etcd's leader election as a service. Candidates
put a key under ``name/`` held by their lease; the key with the lowest
create revision is the leader, whose value is the proclaimed one; Observe
streams the leader as it changes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from petcd.api.handler import auth_info
from petcd.api.recipes import (
    ErrElectionNoLeader,
    ErrElectionNotLeader,
    ErrMissingLeaderKey,
    RecipeError,
    Recipes,
    abort_unknown,
    prefix_end,
)
from petcd.auth.errors import AuthError
from petcd.auth.tokens import AuthInfo
from petcd.proto import kv_pb2, rpc_pb2, v3election_pb2
from petcd.server.etcd_server import EtcdServer


class ElectionService:
    def __init__(self, server: EtcdServer) -> None:
        self.s = server
        self.r = Recipes(server)

    async def Campaign(self, request: v3election_pb2.CampaignRequest, context: Any) -> v3election_pb2.CampaignResponse:
        key = b""
        joining: asyncio.Future[Any] | None = None
        try:
            info = await auth_info(self.s, context)
            lease = await self.r.session(request.lease)
            prefix, key, txn = self.r.queue_entry(request.name, lease, request.value, [])
            # shielded: the caller going away must not cut the txn short
            # (abandon waits for it, then deletes the key)
            joining = asyncio.ensure_future(self.s.txn(txn, info))
            resp = await asyncio.shield(joining)
            header = self.r.header(resp.header)
            rev = header.revision
            if not resp.succeeded:
                kv = resp.responses[0].response_range.kvs[0]
                rev = kv.create_revision
                if kv.value != request.value:
                    await self._proclaim(key, rev, lease, request.value, info)
            await self.r.wait_deletes(prefix, rev - 1, info)
            leader = v3election_pb2.LeaderKey(name=request.name, key=key, rev=rev, lease=lease)
            return v3election_pb2.CampaignResponse(header=header, leader=leader)
        except asyncio.CancelledError:
            if key:  # the candidate went away while waiting: step out of line
                self.r.abandon(key, joining)
            raise
        except Exception as exc:
            await abort_unknown(context, exc)

    async def _proclaim(self, key: bytes, rev: int, lease: int, value: bytes,
                        info: AuthInfo | None) -> rpc_pb2.ResponseHeader:
        txn = rpc_pb2.TxnRequest(
            compare=[rpc_pb2.Compare(key=key, target=rpc_pb2.Compare.CREATE, result=rpc_pb2.Compare.EQUAL,
                                     create_revision=rev)],
            success=[rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=key, value=value, lease=lease))],
        )
        resp = await self.s.txn(txn, info)
        if not resp.succeeded:
            raise RecipeError(ErrElectionNotLeader)
        return self.r.header(resp.header)

    async def Proclaim(self, request: v3election_pb2.ProclaimRequest, context: Any) -> v3election_pb2.ProclaimResponse:
        try:
            if not request.HasField("leader"):
                raise RecipeError(ErrMissingLeaderKey)
            ld = request.leader
            header = await self._proclaim(ld.key, ld.rev, ld.lease, request.value, await auth_info(self.s, context))
        except Exception as exc:
            await abort_unknown(context, exc)
        return v3election_pb2.ProclaimResponse(header=header)

    async def Leader(self, request: v3election_pb2.LeaderRequest, context: Any) -> v3election_pb2.LeaderResponse:
        try:
            resp = await self.r.first_created(request.name + b"/", await auth_info(self.s, context))
            if not resp.kvs:
                raise RecipeError(ErrElectionNoLeader)
        except Exception as exc:
            await abort_unknown(context, exc)
        return v3election_pb2.LeaderResponse(header=self.r.header(resp.header), kv=resp.kvs[0])

    async def Resign(self, request: v3election_pb2.ResignRequest, context: Any) -> v3election_pb2.ResignResponse:
        try:
            if not request.HasField("leader"):
                raise RecipeError(ErrMissingLeaderKey)
            ld = request.leader
            txn = rpc_pb2.TxnRequest(
                compare=[rpc_pb2.Compare(key=ld.key, target=rpc_pb2.Compare.CREATE, result=rpc_pb2.Compare.EQUAL,
                                         create_revision=ld.rev)],
                success=[rpc_pb2.RequestOp(request_delete_range=rpc_pb2.DeleteRangeRequest(key=ld.key))],
            )
            resp = await self.s.txn(txn, await auth_info(self.s, context))
        except Exception as exc:
            await abort_unknown(context, exc)
        return v3election_pb2.ResignResponse(header=self.r.header(resp.header))

    async def Observe(self, request: v3election_pb2.LeaderRequest, context: Any) -> AsyncIterator[v3election_pb2.LeaderResponse]:
        """The leader now (once there is one), then every change of it: a
        new value, or the next leader once this one's key is gone."""
        prefix = request.name + b"/"
        try:
            info = await auth_info(self.s, context)
            self.r.check_read(info, prefix, prefix_end(prefix))
        except AuthError:
            # etcd's observer reads as the caller and, when that read fails,
            # ends the stream with no message and no error
            return
        try:
            while True:
                resp = await self.r.first_created(prefix, info)
                header = self.r.header(resp.header)
                if resp.kvs:
                    kv = resp.kvs[0]
                else:
                    kv, header = await self._first_put(prefix, header.revision + 1)
                yield v3election_pb2.LeaderResponse(header=header, kv=kv)
                async with self.r.watch(kv.key, b"", header.revision + 1) as w:
                    deleted = False
                    async for batch in w:
                        if batch.compact_revision:
                            break  # read the leader again
                        for ev in batch.events:
                            if ev.type == kv_pb2.Event.DELETE:
                                deleted = True
                                break
                            h = self.r.header(rpc_pb2.ResponseHeader(revision=batch.revision))
                            yield v3election_pb2.LeaderResponse(header=h, kv=ev.kv)
                        if deleted:
                            break
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            await abort_unknown(context, exc)

    async def _first_put(self, prefix: bytes, rev: int) -> tuple[kv_pb2.KeyValue, rpc_pb2.ResponseHeader]:
        async with self.r.watch(prefix, prefix_end(prefix), rev) as w:
            async for batch in w:
                for ev in batch.events:
                    if ev.type == kv_pb2.Event.PUT:
                        return ev.kv, self.r.header(rpc_pb2.ResponseHeader(revision=ev.kv.mod_revision))
        raise RecipeError("etcdserver: mvcc: required revision has been compacted")
