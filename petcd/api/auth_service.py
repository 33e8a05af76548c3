"""etcdserverpb.Auth over gRPC: every auth request goes through raft and is
applied by the member's auth store (petcd/auth), which also checks the
caller's rights; Authenticate, UserAdd and UserChangePassword do their
bcrypt work first, off the event loop (petcd/auth/front.py)."""

from __future__ import annotations

from typing import Any

from petcd.api.handler import auth_info, unary
from petcd.http2.server import CallContext
from petcd.proto import raft_internal_pb2, rpc_pb2
from petcd.server.etcd_server import EtcdServer

Ctx = CallContext


class AuthService:
    def __init__(self, server: EtcdServer) -> None:
        self.s = server

    async def _propose(self, field: str, request: Any, context: Ctx) -> Any:
        return await self.s.auth_request(field, request, await auth_info(self.s, context))

    @unary
    async def AuthEnable(self, request: rpc_pb2.AuthEnableRequest, context: Ctx) -> rpc_pb2.AuthEnableResponse:
        return await self._propose("auth_enable", request, context)

    @unary
    async def AuthDisable(self, request: rpc_pb2.AuthDisableRequest, context: Ctx) -> rpc_pb2.AuthDisableResponse:
        return await self._propose("auth_disable", request, context)

    @unary
    async def AuthStatus(self, request: rpc_pb2.AuthStatusRequest, context: Ctx) -> rpc_pb2.AuthStatusResponse:
        # etcd 3.5's call (3.4 has none): read through raft like the others
        return await self._propose("auth_status", request, context)

    @unary
    async def Authenticate(self, request: rpc_pb2.AuthenticateRequest, context: Ctx) -> rpc_pb2.AuthenticateResponse:
        await self.s.linearizable_read()  # the password is checked against a current store

        async def propose(internal: raft_internal_pb2.InternalAuthenticateRequest) -> rpc_pb2.AuthenticateResponse:
            resp: rpc_pb2.AuthenticateResponse = await self.s.auth_request("authenticate", internal, None)
            return resp

        return await self.s.auth_front.authenticate(request, propose)

    @unary
    async def UserAdd(self, request: rpc_pb2.AuthUserAddRequest, context: Ctx) -> rpc_pb2.AuthUserAddResponse:
        info = await auth_info(self.s, context)
        prepared = await self.s.auth_front.prepare_user_add(request)
        return await self.s.auth_request("auth_user_add", prepared, info)

    @unary
    async def UserGet(self, request: rpc_pb2.AuthUserGetRequest, context: Ctx) -> rpc_pb2.AuthUserGetResponse:
        return await self._propose("auth_user_get", request, context)

    @unary
    async def UserList(self, request: rpc_pb2.AuthUserListRequest, context: Ctx) -> rpc_pb2.AuthUserListResponse:
        return await self._propose("auth_user_list", request, context)

    @unary
    async def UserDelete(self, request: rpc_pb2.AuthUserDeleteRequest, context: Ctx) -> rpc_pb2.AuthUserDeleteResponse:
        return await self._propose("auth_user_delete", request, context)

    @unary
    async def UserChangePassword(
        self, request: rpc_pb2.AuthUserChangePasswordRequest, context: Ctx
    ) -> rpc_pb2.AuthUserChangePasswordResponse:
        info = await auth_info(self.s, context)
        prepared = await self.s.auth_front.prepare_change_password(request)
        return await self.s.auth_request("auth_user_change_password", prepared, info)

    @unary
    async def UserGrantRole(
        self, request: rpc_pb2.AuthUserGrantRoleRequest, context: Ctx
    ) -> rpc_pb2.AuthUserGrantRoleResponse:
        return await self._propose("auth_user_grant_role", request, context)

    @unary
    async def UserRevokeRole(
        self, request: rpc_pb2.AuthUserRevokeRoleRequest, context: Ctx
    ) -> rpc_pb2.AuthUserRevokeRoleResponse:
        return await self._propose("auth_user_revoke_role", request, context)

    @unary
    async def RoleAdd(self, request: rpc_pb2.AuthRoleAddRequest, context: Ctx) -> rpc_pb2.AuthRoleAddResponse:
        return await self._propose("auth_role_add", request, context)

    @unary
    async def RoleGet(self, request: rpc_pb2.AuthRoleGetRequest, context: Ctx) -> rpc_pb2.AuthRoleGetResponse:
        return await self._propose("auth_role_get", request, context)

    @unary
    async def RoleList(self, request: rpc_pb2.AuthRoleListRequest, context: Ctx) -> rpc_pb2.AuthRoleListResponse:
        return await self._propose("auth_role_list", request, context)

    @unary
    async def RoleDelete(self, request: rpc_pb2.AuthRoleDeleteRequest, context: Ctx) -> rpc_pb2.AuthRoleDeleteResponse:
        return await self._propose("auth_role_delete", request, context)

    @unary
    async def RoleGrantPermission(
        self, request: rpc_pb2.AuthRoleGrantPermissionRequest, context: Ctx
    ) -> rpc_pb2.AuthRoleGrantPermissionResponse:
        return await self._propose("auth_role_grant_permission", request, context)

    @unary
    async def RoleRevokePermission(
        self, request: rpc_pb2.AuthRoleRevokePermissionRequest, context: Ctx
    ) -> rpc_pb2.AuthRoleRevokePermissionResponse:
        return await self._propose("auth_role_revoke_permission", request, context)
