"""etcdserverpb.Lease over gRPC."""

from __future__ import annotations

from collections.abc import AsyncIterator

from petcd.api.errors import abort_with
from petcd.api.handler import auth_info, fill_header, unary
from petcd.auth.tokens import AuthInfo
from petcd.http2.server import CallContext
from petcd.lease.lessor import ErrLeaseNotFound
from petcd.proto import rpc_pb2
from petcd.server.etcd_server import EtcdServer

Ctx = CallContext


class LeaseService:
    def __init__(self, server: EtcdServer) -> None:
        self.s = server

    @unary
    async def LeaseGrant(self, request: rpc_pb2.LeaseGrantRequest, context: Ctx) -> rpc_pb2.LeaseGrantResponse:
        return await self.s.lease_front.grant(request)

    @unary
    async def LeaseRevoke(self, request: rpc_pb2.LeaseRevokeRequest, context: Ctx) -> rpc_pb2.LeaseRevokeResponse:
        # no token is no user (not the server's own None, which is root)
        return await self.s.lease_front.revoke(request, await auth_info(self.s, context) or AuthInfo("", 0))

    @unary
    async def LeaseTimeToLive(
        self, request: rpc_pb2.LeaseTimeToLiveRequest, context: Ctx
    ) -> rpc_pb2.LeaseTimeToLiveResponse:
        try:
            return await self.s.lease_front.time_to_live(request)
        except ErrLeaseNotFound:  # etcd answers an unknown lease with TTL -1, not an error
            return rpc_pb2.LeaseTimeToLiveResponse(ID=request.ID, TTL=-1)

    @unary
    async def LeaseLeases(self, request: rpc_pb2.LeaseLeasesRequest, context: Ctx) -> rpc_pb2.LeaseLeasesResponse:
        return await self.s.lease_front.leases()

    async def LeaseKeepAlive(
        self, request_iterator: AsyncIterator[rpc_pb2.LeaseKeepAliveRequest], context: Ctx
    ) -> AsyncIterator[rpc_pb2.LeaseKeepAliveResponse]:
        try:
            async for req in request_iterator:
                try:
                    ttl = await self.s.lease_front.renew(req.ID)
                except ErrLeaseNotFound:  # the client learns of expiry from TTL 0
                    ttl = 0
                resp = rpc_pb2.LeaseKeepAliveResponse(ID=req.ID, TTL=ttl)
                fill_header(self.s, resp.header)
                yield resp
        except Exception as exc:
            await abort_with(context, exc)
