"""What the lock and election services share: etcd's concurrency recipes
(clientv3/concurrency) run inside the server, against its own KV, lease and
watch machinery rather than through a client.

- a *session* is a lease: the caller's, or a new 60-second one when the
  caller gives none (etcd's v3lock and v3election do the same);
- ``wait_deletes`` waits until every key under a prefix created before a
  revision is gone (the queue ahead of a lock or a candidate);
- ``KeyWatch`` delivers the store's events on a key or range from a
  revision on, as an async iterator.

Errors from the underlying calls reach the client as gRPC UNKNOWN with the
error's message, as etcd's services (clients of their own server) return
them.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import inspect
from collections.abc import AsyncIterator
from typing import Any, NoReturn

from petcd.api import validation
from petcd.auth.tokens import AuthInfo
from petcd.mvcc.watchable_store import WatchBatch, Watcher, WatchSink
from petcd.proto import kv_pb2, rpc_pb2
from petcd.server.etcd_server import EtcdServer

# etcd's concurrency.NewSession default TTL (seconds)
SESSION_TTL = 60

ErrElectionNotLeader = "election: not leader"
ErrElectionNoLeader = "election: no leader"
ErrMissingLeaderKey = '"leader" field must be provided'


class RecipeError(Exception):
    """A recipe's own refusal (str() is etcd's message)."""


def prefix_end(prefix: bytes) -> bytes:
    """The range end covering every key that starts with prefix."""
    b = bytearray(prefix)
    for i in range(len(b) - 1, -1, -1):
        if b[i] < 0xFF:
            b[i] += 1
            return bytes(b[: i + 1])
    return b"\0"


def first_created_request(prefix: bytes) -> rpc_pb2.RangeRequest:
    """A Range for the key under prefix with the lowest create revision: the
    owner of a lock, the leader of an election."""
    return rpc_pb2.RangeRequest(key=prefix, range_end=prefix_end(prefix), limit=1,
                                sort_order=rpc_pb2.RangeRequest.ASCEND, sort_target=rpc_pb2.RangeRequest.CREATE)


async def abort_unknown(context: Any, exc: BaseException) -> NoReturn:
    """End the call with UNKNOWN and the error's message (etcd's services
    get their server's errors as a client does and pass them on)."""
    from petcd.api.errors import status_of

    message = str(exc) if isinstance(exc, RecipeError) else status_of(exc)[1]
    r = context.abort(_unknown_code(context), message)
    if inspect.isawaitable(r):
        await r
    raise AssertionError("unreachable")  # abort raises


def _unknown_code(context: Any) -> Any:
    """UNKNOWN as the context's front end spells it."""
    if type(context).__module__.startswith("grpc"):  # grpcio's server (not imported otherwise)
        import grpc

        return grpc.StatusCode.UNKNOWN
    try:
        from petcd.http2.grpc import StatusCode
    except ImportError:  # the gateway's context takes the number
        return 2
    return StatusCode.UNKNOWN


class Recipes:
    """The recipes over one server."""

    def __init__(self, server: EtcdServer) -> None:
        self.s = server
        self._ids = 1 << 62  # watcher ids of our own, apart from the client streams'
        self._abandoning: set[asyncio.Task[None]] = set()  # strong references until done

    def queue_entry(self, name: bytes, lease: int, value: bytes,
                    also: list[rpc_pb2.RequestOp]) -> tuple[bytes, bytes, rpc_pb2.TxnRequest]:
        """The prefix, the key and the txn that join the queue on name (a lock's
        or an election's): the key is the lease's under ``name/``, created if it
        does not exist yet, else read back; ``also`` runs in both branches."""
        prefix = name + b"/"
        key = prefix + format(lease, "x").encode()
        txn = rpc_pb2.TxnRequest(
            compare=[rpc_pb2.Compare(key=key, target=rpc_pb2.Compare.CREATE, result=rpc_pb2.Compare.EQUAL,
                                     create_revision=0)],
            success=[rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=key, value=value, lease=lease)), *also],
            failure=[rpc_pb2.RequestOp(request_range=rpc_pb2.RangeRequest(key=key)), *also],
        )
        return prefix, key, txn

    def abandon(self, key: bytes, joining: asyncio.Future[Any] | None = None) -> None:
        """Leave a queue whose caller went away: delete its key in the
        background (a failure leaves it to its lease), once the txn that
        joined the queue (joining, if it may still be under way) has ended,
        so that the delete cannot come before the put."""
        async def quietly() -> None:
            if joining is not None:
                with contextlib.suppress(BaseException):
                    await joining
            with contextlib.suppress(Exception):
                await self.delete(key)

        task = asyncio.get_running_loop().create_task(quietly())
        self._abandoning.add(task)
        task.add_done_callback(self._abandoning.discard)

    async def session(self, lease: int) -> int:
        if lease:
            return lease
        resp = await self.s.lease_front.grant(rpc_pb2.LeaseGrantRequest(TTL=SESSION_TTL))
        return int(resp.ID)

    def header(self, h: rpc_pb2.ResponseHeader) -> rpc_pb2.ResponseHeader:
        from petcd.api.handler import fill_header

        out = rpc_pb2.ResponseHeader()
        out.CopyFrom(h)
        fill_header(self.s, out)
        return out

    def check_read(self, auth: AuthInfo | None, key: bytes, end: bytes) -> None:
        """The caller's read permission on [key, end), when auth is on (etcd's
        recipes read and watch as the caller, through its KV and Watch)."""
        if self.s.auth.enabled:
            self.s.auth.is_range_permitted(auth, key, end)

    async def first_created(self, prefix: bytes, auth: AuthInfo | None = None) -> rpc_pb2.RangeResponse:
        """The key under prefix with the lowest create revision (read as auth's user)."""
        self.check_read(auth, prefix, prefix_end(prefix))
        return await self.s.range(first_created_request(prefix))

    async def delete(self, key: bytes, auth: AuthInfo | None = None) -> rpc_pb2.DeleteRangeResponse:
        """Delete key as auth's user (None: the server itself)."""
        req = rpc_pb2.DeleteRangeRequest(key=key)
        validation.check_delete(req)
        return await self.s.delete_range(req, auth)

    async def wait_deletes(self, prefix: bytes, max_create_rev: int,
                           auth: AuthInfo | None = None) -> rpc_pb2.ResponseHeader:
        """Wait until no key under prefix has a create revision at or below
        max_create_rev (read and watched as auth's user); the header of the last read."""
        self.check_read(auth, prefix, prefix_end(prefix))
        while True:
            resp = await self.s.range(rpc_pb2.RangeRequest(
                key=prefix, range_end=prefix_end(prefix), limit=1,
                sort_order=rpc_pb2.RangeRequest.DESCEND, sort_target=rpc_pb2.RangeRequest.CREATE,
                max_create_revision=max_create_rev,
            ))
            if not resp.kvs:
                return self.header(resp.header)
            await self.wait_delete(resp.kvs[0].key, self.header(resp.header).revision)

    async def wait_delete(self, key: bytes, rev: int) -> None:
        """Wait for key's deletion after revision rev."""
        async with self.watch(key, b"", rev + 1) as w:
            async for batch in w:
                if batch.compact_revision:
                    return  # history gone: the caller reads again
                if any(ev.type == kv_pb2.Event.DELETE for ev in batch.events):
                    return

    def watch(self, key: bytes, end: bytes, start_rev: int) -> KeyWatch:
        self._ids += 1
        return KeyWatch(self.s, self._ids, key, end, start_rev)


class KeyWatch(WatchSink):
    """A watcher of the server's store, as an async iterator of batches;
    use with ``async with`` so that it is cancelled at the end."""

    def __init__(self, server: EtcdServer, wid: int, key: bytes, end: bytes, start_rev: int) -> None:
        self.store = server.watchable
        self.start_rev = start_rev
        self.watcher = Watcher(id=wid, key=key, end=end, sink=self, next_rev=0)
        self.queue: collections.deque[WatchBatch] = collections.deque()
        self.ready = asyncio.Event()
        self.refused = False

    def offer(self, batch: WatchBatch) -> bool:
        if len(self.queue) >= 1024:
            self.refused = True
            return False  # the store parks the watcher and resends from the backend
        self.queue.append(batch)
        self.ready.set()
        return True

    async def __aenter__(self) -> KeyWatch:
        self.store.watch(self.watcher, self.start_rev)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.store.cancel(self.watcher)

    def __aiter__(self) -> AsyncIterator[WatchBatch]:
        return self._iter()

    async def _iter(self) -> AsyncIterator[WatchBatch]:
        while True:
            while not self.queue:
                self.ready.clear()
                await self.ready.wait()
            batch = self.queue.popleft()
            if not self.queue and self.refused:
                self.refused = False
                self.store.resume()
            yield batch
            if batch.compact_revision:
                return
