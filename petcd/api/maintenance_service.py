"""etcdserverpb.Maintenance over gRPC."""

from __future__ import annotations

import asyncio
import hashlib
import os
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator

import grpc

from petcd.api.errors import abort_with
from petcd.api.handler import unary
from petcd.proto import rpc_pb2, rpc_pb2_grpc
from petcd.server.errors import ErrNoLeader, ErrNotSupported
from petcd.server.etcd_server import ETCD_VERSION, EtcdServer
from petcd.storage.backend import BackendSnapshot
from petcd.storage.errors import BackendError

Ctx = grpc.aio.ServicerContext

# etcd streams snapshots in 32 KiB blobs, then one blob with the sha256 of all.
# petcd sends 1 MiB blobs: a Python stream pays per message, and every client
# accepts them (gRPC's default receive limit is 4 MiB).
SNAPSHOT_CHUNK = 1024 * 1024


async def to_bbolt(db_path: str, tmp_dir: str) -> BackendSnapshot:
    """The backend's committed state as etcd's bbolt file (an unlinked temp
    file in tmp_dir), built by a child process that reads the live db file in
    one LMDB read transaction: a consistent cut that never blocks this
    process's writes nor holds its interpreter lock. The child is killed if
    the caller gives up."""
    try:
        fd, tmp = tempfile.mkstemp(prefix="db.bbolt-", suffix=".tmp", dir=tmp_dir)
        os.unlink(tmp)
    except OSError as exc:
        raise BackendError(f"snapshot: cannot create the etcd-format copy in {tmp_dir}: {exc}") from exc
    try:
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p))
        # subprocess.Popen (fork_exec in C) from a worker thread, not the
        # loop's own spawn: uvloop's fork in this many-threaded process
        # sometimes crashed the child before its exec (SIGSEGV, no output).
        proc = await asyncio.to_thread(
            subprocess.Popen,
            [sys.executable, "-m", "petcd.storage.etcd_format", "export-live", db_path, str(fd)],
            pass_fds=(fd,), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env,
        )
        try:
            _, err = await asyncio.to_thread(proc.communicate)
        except BaseException:
            # SIGTERM: the child unwinds and ends its LMDB read transaction
            # (a killed reader's slot would pin old pages until the backend's
            # next open); the waiting thread returns once the child is gone.
            proc.terminate()
            raise
        if proc.returncode != 0:
            raise BackendError(f"snapshot: converting to etcd's file format failed (exit status {proc.returncode}): "
                               f"{err.decode(errors='replace')[-500:]}")
        return BackendSnapshot(fd, os.fstat(fd).st_size)
    except BaseException:
        os.close(fd)
        raise


class MaintenanceService(rpc_pb2_grpc.MaintenanceServicer):
    def __init__(self, server: EtcdServer) -> None:
        self.s = server

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
        self.s.backend.defrag()
        return rpc_pb2.DefragmentResponse()

    @unary
    async def Hash(self, request: rpc_pb2.HashRequest, context: Ctx) -> rpc_pb2.HashResponse:
        return rpc_pb2.HashResponse(hash=self.s.kv.hash())

    @unary
    async def HashKV(self, request: rpc_pb2.HashKVRequest, context: Ctx) -> rpc_pb2.HashKVResponse:
        h, rev, compact_rev = self.s.kv.hash_kv(request.revision)
        resp = rpc_pb2.HashKVResponse(hash=h, compact_revision=compact_rev, hash_revision=rev)
        resp.header.revision = rev
        return resp

    async def Snapshot(
        self, request: rpc_pb2.SnapshotRequest, context: Ctx
    ) -> AsyncIterator[rpc_pb2.SnapshotResponse]:
        try:
            self.s.backend.commit()  # the child's read transaction sees at least this
            snap = await to_bbolt(self.s.backend.path, os.path.dirname(self.s.backend.path))
        except Exception as exc:
            await abort_with(context, exc)
        digest = hashlib.sha256()

        def read_and_hash(n: int) -> bytes:
            # in the worker thread: hashing a blob releases the interpreter lock there, not on the loop
            blob = snap.read(n)
            digest.update(blob)
            return blob

        try:
            remaining = snap.size
            while remaining > 0:
                blob = await asyncio.to_thread(read_and_hash, min(SNAPSHOT_CHUNK, remaining))
                if not blob:
                    break
                remaining -= len(blob)
                yield rpc_pb2.SnapshotResponse(remaining_bytes=remaining, blob=blob)
            yield rpc_pb2.SnapshotResponse(remaining_bytes=0, blob=digest.digest())
        finally:
            snap.close()

    @unary
    async def MoveLeader(self, request: rpc_pb2.MoveLeaderRequest, context: Ctx) -> rpc_pb2.MoveLeaderResponse:
        await self.s.move_leader(request.targetID)
        return rpc_pb2.MoveLeaderResponse()

    @unary
    async def Downgrade(self, request: rpc_pb2.DowngradeRequest, context: Ctx) -> rpc_pb2.DowngradeResponse:
        raise ErrNotSupported("petcd: Downgrade is not supported yet")
