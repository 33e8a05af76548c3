"""etcdserverpb.Cluster over gRPC: the member list and membership changes."""

from __future__ import annotations

from petcd.api import validation
from petcd.api.handler import auth_info, unary_no_revision
from petcd.http2.server import CallContext
from petcd.proto import rpc_pb2
from petcd.server.etcd_server import EtcdServer

Ctx = CallContext


class ClusterService:
    def __init__(self, server: EtcdServer) -> None:
        self.s = server

    @unary_no_revision
    async def MemberList(self, request: rpc_pb2.MemberListRequest, context: Ctx) -> rpc_pb2.MemberListResponse:
        if request.linearizable:
            await self.s.linearizable_read()
        return rpc_pb2.MemberListResponse(members=self.s.membership.to_pb_list())

    @unary_no_revision
    async def MemberAdd(self, request: rpc_pb2.MemberAddRequest, context: Ctx) -> rpc_pb2.MemberAddResponse:
        validation.check_peer_urls(request.peerURLs)
        self.s.auth.is_admin_permitted(await auth_info(self.s, context))
        m = await self.s.cluster.member_add(list(request.peerURLs), request.isLearner)
        return rpc_pb2.MemberAddResponse(member=m.to_pb(), members=self.s.membership.to_pb_list())

    @unary_no_revision
    async def MemberRemove(self, request: rpc_pb2.MemberRemoveRequest, context: Ctx) -> rpc_pb2.MemberRemoveResponse:
        self.s.auth.is_admin_permitted(await auth_info(self.s, context))
        await self.s.cluster.member_remove(request.ID)
        return rpc_pb2.MemberRemoveResponse(members=self.s.membership.to_pb_list())

    @unary_no_revision
    async def MemberUpdate(self, request: rpc_pb2.MemberUpdateRequest, context: Ctx) -> rpc_pb2.MemberUpdateResponse:
        validation.check_peer_urls(request.peerURLs)
        self.s.auth.is_admin_permitted(await auth_info(self.s, context))
        await self.s.cluster.member_update(request.ID, list(request.peerURLs))
        return rpc_pb2.MemberUpdateResponse(members=self.s.membership.to_pb_list())

    @unary_no_revision
    async def MemberPromote(
        self, request: rpc_pb2.MemberPromoteRequest, context: Ctx
    ) -> rpc_pb2.MemberPromoteResponse:
        self.s.auth.is_admin_permitted(await auth_info(self.s, context))
        await self.s.cluster.member_promote(request.ID)
        return rpc_pb2.MemberPromoteResponse(members=self.s.membership.to_pb_list())
