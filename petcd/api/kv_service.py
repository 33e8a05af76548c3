"""etcdserverpb.KV over gRPC: validate the request, then call the server."""

from __future__ import annotations

from petcd.api import validation
from petcd.api.handler import auth_info, check_revision, unary
from petcd.auth import checks as auth_checks
from petcd.http2.server import CallContext
from petcd.proto import rpc_pb2
from petcd.server import txn_ops
from petcd.server.etcd_server import EtcdServer

Ctx = CallContext


class KVService:
    def __init__(self, server: EtcdServer) -> None:
        self.s = server

    @unary
    async def Range(self, request: rpc_pb2.RangeRequest, context: Ctx) -> rpc_pb2.RangeResponse:
        validation.check_range(request)
        info = await auth_info(self.s, context)
        if self.s.auth.enabled:
            auth_checks.check_range(self.s.auth, info, request)
        resp = await self.s.range(request)
        check_revision(self.s, info)
        return resp

    @unary
    async def Put(self, request: rpc_pb2.PutRequest, context: Ctx) -> rpc_pb2.PutResponse:
        validation.check_put(request)
        return await self.s.put(request, await auth_info(self.s, context))

    @unary
    async def DeleteRange(self, request: rpc_pb2.DeleteRangeRequest, context: Ctx) -> rpc_pb2.DeleteRangeResponse:
        validation.check_delete(request)
        return await self.s.delete_range(request, await auth_info(self.s, context))

    @unary
    async def Txn(self, request: rpc_pb2.TxnRequest, context: Ctx) -> rpc_pb2.TxnResponse:
        validation.check_txn(request, self.s.cfg.max_txn_ops)
        info = await auth_info(self.s, context)
        if not txn_ops.is_read_only(request):
            return await self.s.txn(request, info)  # checked where it is applied
        if self.s.auth.enabled:
            auth_checks.check_txn(self.s.auth, info, request)
        resp = await self.s.txn(request, info)
        check_revision(self.s, info)
        return resp

    @unary
    async def Compact(self, request: rpc_pb2.CompactionRequest, context: Ctx) -> rpc_pb2.CompactionResponse:
        return await self.s.compact(request)
