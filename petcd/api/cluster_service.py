"""etcdserverpb.Cluster over gRPC (membership changes come with clustering)."""

from __future__ import annotations

import grpc

from petcd.api.handler import unary
from petcd.proto import rpc_pb2, rpc_pb2_grpc
from petcd.server.errors import ErrNotSupported
from petcd.server.etcd_server import EtcdServer

Ctx = grpc.aio.ServicerContext


class ClusterService(rpc_pb2_grpc.ClusterServicer):
    def __init__(self, server: EtcdServer) -> None:
        self.s = server

    @unary
    async def MemberList(self, request: rpc_pb2.MemberListRequest, context: Ctx) -> rpc_pb2.MemberListResponse:
        if request.linearizable:
            await self.s.linearizable_read()
        return rpc_pb2.MemberListResponse(members=self.s.membership.to_pb_list())

    @unary
    async def MemberAdd(self, request: rpc_pb2.MemberAddRequest, context: Ctx) -> rpc_pb2.MemberAddResponse:
        raise ErrNotSupported("petcd: MemberAdd is not supported yet")

    @unary
    async def MemberRemove(self, request: rpc_pb2.MemberRemoveRequest, context: Ctx) -> rpc_pb2.MemberRemoveResponse:
        raise ErrNotSupported("petcd: MemberRemove is not supported yet")

    @unary
    async def MemberUpdate(self, request: rpc_pb2.MemberUpdateRequest, context: Ctx) -> rpc_pb2.MemberUpdateResponse:
        raise ErrNotSupported("petcd: MemberUpdate is not supported yet")

    @unary
    async def MemberPromote(
        self, request: rpc_pb2.MemberPromoteRequest, context: Ctx
    ) -> rpc_pb2.MemberPromoteResponse:
        raise ErrNotSupported("petcd: MemberPromote is not supported yet")
