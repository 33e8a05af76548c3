"""etcdserverpb.Maintenance over gRPC."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator

from petcd.api.errors import abort_with
from petcd.api.handler import auth_info, unary
from petcd.auth.errors import AuthError
from petcd.http2.grpc import RpcError, StatusCode
from petcd.http2.server import CallContext
from petcd.proto import rpc_pb2
from petcd.server.errors import ErrNoLeader, ErrNotSupported
from petcd.server.etcd_server import EtcdServer
from petcd.version import ETCD_VERSION

Ctx = CallContext

# etcd streams snapshots in 32 KiB blobs, then one blob with the sha256 of all.
SNAPSHOT_CHUNK = 32 * 1024


class MaintenanceService:
    def __init__(self, server: EtcdServer) -> None:
        self.s = server

    async def _admin(self, context: Ctx) -> None:
        """Defragment, Hash, HashKV and Snapshot need the root role. etcd 3.4
        answers them with the auth package's error unmapped: UNKNOWN with
        its text ("auth: permission denied")."""
        try:
            self.s.auth.is_admin_permitted(await auth_info(self.s, context))
        except AuthError as exc:
            raise RpcError(StatusCode.UNKNOWN, str(exc)) from None

    @unary
    async def Alarm(self, request: rpc_pb2.AlarmRequest, context: Ctx) -> rpc_pb2.AlarmResponse:
        return await self.s.alarm(request)

    @unary
    async def Status(self, request: rpc_pb2.StatusRequest, context: Ctx) -> rpc_pb2.StatusResponse:
        s = self.s
        resp = rpc_pb2.StatusResponse(
            version=ETCD_VERSION,
            dbSize=s.backend.size(),
            dbSizeInUse=s.backend.size_in_use(),
            leader=s.leader,
            raftIndex=s.node.commit,
            raftTerm=s.term,
            raftAppliedIndex=s.applied_index,
            isLearner=s.membership.is_learner(),
        )
        if s.leader == 0:
            resp.errors.append(ErrNoLeader().args[0])
        for a in s.alarms.list():
            resp.errors.append(f"memberID:{a.memberID} alarm:{rpc_pb2.AlarmType.Name(a.alarm)} ")
        return resp

    @unary
    async def Defragment(self, request: rpc_pb2.DefragmentRequest, context: Ctx) -> rpc_pb2.DefragmentResponse:
        await self._admin(context)
        await self.s.defragment()
        return rpc_pb2.DefragmentResponse()

    @unary
    async def Hash(self, request: rpc_pb2.HashRequest, context: Ctx) -> rpc_pb2.HashResponse:
        await self._admin(context)
        return rpc_pb2.HashResponse(hash=self.s.kv.hash())

    @unary
    async def HashKV(self, request: rpc_pb2.HashKVRequest, context: Ctx) -> rpc_pb2.HashKVResponse:
        await self._admin(context)
        h, rev, compact_rev = self.s.kv.hash_kv(request.revision)
        resp = rpc_pb2.HashKVResponse(hash=h, compact_revision=compact_rev, hash_revision=rev)
        resp.header.revision = rev
        return resp

    async def Snapshot(
        self, request: rpc_pb2.SnapshotRequest, context: Ctx
    ) -> AsyncIterator[rpc_pb2.SnapshotResponse]:
        try:
            await self._admin(context)
            self.s.backend.commit()
            snap = await asyncio.to_thread(self.s.backend.snapshot)
        except Exception as exc:
            await abort_with(context, exc)
        try:
            digest = hashlib.sha256()
            remaining = snap.size
            while remaining > 0:
                blob = await asyncio.to_thread(snap.read, min(SNAPSHOT_CHUNK, remaining))
                if not blob:
                    break
                remaining -= len(blob)
                digest.update(blob)
                yield rpc_pb2.SnapshotResponse(remaining_bytes=remaining, blob=blob)
            yield rpc_pb2.SnapshotResponse(remaining_bytes=0, blob=digest.digest())
        finally:
            snap.close()

    @unary
    async def MoveLeader(self, request: rpc_pb2.MoveLeaderRequest, context: Ctx) -> rpc_pb2.MoveLeaderResponse:
        await self.s.cluster.move_leader(request.targetID)
        return rpc_pb2.MoveLeaderResponse()

    @unary
    async def Downgrade(self, request: rpc_pb2.DowngradeRequest, context: Ctx) -> rpc_pb2.DowngradeResponse:
        raise ErrNotSupported("petcd: Downgrade is not supported yet")
