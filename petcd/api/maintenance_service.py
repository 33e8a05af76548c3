"""etcdserverpb.Maintenance over gRPC."""

from __future__ import annotations

import asyncio
import hashlib
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator

from petcd import stats
from petcd.api.errors import abort_with
from petcd.api.handler import auth_info, unary, unary_no_header
from petcd.auth.errors import AuthError
from petcd.http2.grpc import RpcError, StatusCode
from petcd.http2.server import CallContext
from petcd.proto import rpc_pb2
from petcd.server.errors import ErrNoLeader, ErrNotSupported
from petcd.server.etcd_server import EtcdServer
from petcd.storage.errors import BackendError
from petcd.storage.etcd_format import SIZE_HEADER
from petcd.version import ETCD_VERSION

Ctx = CallContext

# etcd streams snapshots in 32 KiB blobs, then one blob with the sha256 of all;
# petcd sends the same blobs (a client that caps its message size takes them as
# it takes etcd's), read from the export child a MiB at a time (one
# worker-thread hop per MiB).
SNAPSHOT_CHUNK = 32 * 1024
READ_CHUNK = 1024 * 1024


def spawn_export(db_path: str) -> subprocess.Popen[bytes]:
    """Start the child that writes the backend's committed state as etcd's
    bbolt file down its stdout (8-byte size, then the file; see
    petcd.storage.etcd_format.export_stream). It reads the live db file in
    one LMDB read transaction: a consistent cut that never blocks this
    process's writes nor holds its interpreter lock.

    Called in a worker thread: subprocess.Popen's fork_exec in C, not the
    event loop's own spawn (uvloop's fork in this many-threaded process
    sometimes crashed the child before its exec: SIGSEGV, no output)."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p))
    return subprocess.Popen(
        [sys.executable, "-m", "petcd.storage.etcd_format", "export-stream", db_path],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, bufsize=1 << 20,
    )


def _end_spawned(spawn: asyncio.Future[subprocess.Popen[bytes]]) -> None:
    if spawn.cancelled() or spawn.exception() is not None:
        return
    proc = spawn.result()
    proc.terminate()
    asyncio.get_running_loop().run_in_executor(None, _reap, proc)


def _reap(proc: subprocess.Popen[bytes]) -> None:
    proc.wait()
    for pipe in (proc.stdout, proc.stderr):
        if pipe is not None:
            pipe.close()


def export_failure(proc: subprocess.Popen[bytes]) -> BackendError:
    """Why the export child stopped short (blocking: call in a thread)."""
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    err = proc.stderr.read() if proc.stderr is not None else b""
    return BackendError(f"snapshot: building etcd's file format failed (exit status {proc.returncode}): "
                        f"{err.decode(errors='replace')[-500:]}")


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

    @unary_no_header
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

    @unary_no_header
    async def Defragment(self, request: rpc_pb2.DefragmentRequest, context: Ctx) -> rpc_pb2.DefragmentResponse:
        await self._admin(context)
        await self.s.backend_upkeep.defragment()
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
        """etcd's bbolt file of this member's committed state, streamed while
        a child process builds it, then its sha256 (etcdctl checks it).
        Timed, whatever the outcome, from the commit to the end of the
        stream (etcd_disk_backend_snapshot_duration_seconds: etcd times a
        backend snapshot's whole transfer)."""
        try:
            await self._admin(context)
            started = time.perf_counter()
            self.s.backend.commit()  # the child's read transaction sees at least this
            spawn = asyncio.ensure_future(asyncio.to_thread(spawn_export, self.s.backend.path))
            try:
                proc = await asyncio.shield(spawn)
            except asyncio.CancelledError:
                # the client gave up while the child was being started: the
                # thread still starts it, so end it as soon as it exists
                spawn.add_done_callback(_end_spawned)
                raise
        except Exception as exc:
            await abort_with(context, exc)
        assert proc.stdout is not None
        out = proc.stdout
        digest = hashlib.sha256()

        def read_and_hash(n: int) -> bytes:
            # in a worker thread: the wait and the hashing stay off the loop
            blob = out.read(n)
            digest.update(blob)
            return blob

        try:
            try:
                head = await asyncio.to_thread(out.read, SIZE_HEADER.size)
                if len(head) != SIZE_HEADER.size:
                    raise await asyncio.to_thread(export_failure, proc)
            except Exception as exc:
                await abort_with(context, exc)
            remaining = SIZE_HEADER.unpack(head)[0]
            while remaining > 0:
                want = min(READ_CHUNK, remaining)
                data = await asyncio.to_thread(read_and_hash, want)
                if len(data) != want:
                    await abort_with(context, await asyncio.to_thread(export_failure, proc))
                for pos in range(0, want, SNAPSHOT_CHUNK):
                    blob = data[pos : pos + SNAPSHOT_CHUNK]
                    remaining -= len(blob)
                    yield rpc_pb2.SnapshotResponse(remaining_bytes=remaining, blob=blob)
            # the child checks at its end that the file matches its layout
            # (the meta pages already sent): only then the hash
            if await asyncio.to_thread(proc.wait) != 0:
                await abort_with(context, await asyncio.to_thread(export_failure, proc))
            yield rpc_pb2.SnapshotResponse(remaining_bytes=0, blob=digest.digest())
        finally:
            if proc.poll() is None:
                # SIGTERM: the child unwinds and ends its LMDB read transaction
                # (a killed reader's slot would pin old pages until the
                # backend's next open)
                proc.terminate()
            # reaped, and its pipes closed, off the loop: a worker thread may
            # still be inside a read until the child is gone
            asyncio.get_running_loop().run_in_executor(None, _reap, proc)
            stats.BACKEND_SNAPSHOT.observe(time.perf_counter() - started)

    @unary_no_header
    async def MoveLeader(self, request: rpc_pb2.MoveLeaderRequest, context: Ctx) -> rpc_pb2.MoveLeaderResponse:
        await self.s.cluster.move_leader(request.targetID)
        return rpc_pb2.MoveLeaderResponse()

    @unary
    async def Downgrade(self, request: rpc_pb2.DowngradeRequest, context: Ctx) -> rpc_pb2.DowngradeResponse:
        raise ErrNotSupported("petcd: Downgrade is not supported yet")
