"""AsyncClient: the asyncio client. It runs the same operations of
``_core`` as Client, with grpc.aio; lease keep-alives are tasks."""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from types import TracebackType
from typing import Any, Literal, TypeVar, overload

import grpc

from petcd.client import _core, errors
from petcd.client._base import CHANNEL_OPTIONS, PathOrPem, Settings
from petcd.client._core import Call, Sleep, Steps, WaitDelete
from petcd.client._sync import _multicallable
from petcd.client.types import (
    Bytes,
    Compare,
    Event,
    EventType,
    Filter,
    Isolation,
    KeyValue,
    Op,
    TxnResult,
    prefix_end,
    to_bytes,
)
from petcd.proto import rpc_pb2

log = logging.getLogger("petcd.client")
T = TypeVar("T")
Metadata = tuple[tuple[str, str], ...]


class AsyncClient:
    """The asyncio twin of Client: the same constructor and methods, as
    coroutines (watch, lease, lock and election objects are ``async with``
    context managers; watch and observe are async iterators)."""

    def __init__(self, endpoints: str | Sequence[str] = "127.0.0.1:2379", *, timeout: float | None = None,
                 username: str | None = None, password: str | None = None, ca_cert: PathOrPem | None = None,
                 cert: PathOrPem | None = None, key: PathOrPem | None = None) -> None:
        self._settings = Settings.build(endpoints, timeout, username, password, ca_cert, cert, key)
        self._timeout = timeout
        self._channels: list[grpc.aio.Channel] = [self._channel(e.target) for e in self._settings.endpoints]
        self._methods: list[dict[str, Any]] = [_methods(ch) for ch in self._channels]
        self._current = 0
        self._metadata: Metadata | None = None
        self._auth_lock = asyncio.Lock()
        self._closed = False

    def _channel(self, target: str) -> grpc.aio.Channel:
        if self._settings.credentials is not None:
            return grpc.aio.secure_channel(target, self._settings.credentials, options=CHANNEL_OPTIONS)
        return grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, et: type[BaseException] | None, ev: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    async def close(self) -> None:
        self._closed = True
        for ch in self._channels:
            await ch.close()

    @property
    def endpoint(self) -> str:
        return self._settings.endpoints[self._current].target

    def _rotate(self, failed: int) -> None:
        if self._current == failed:
            self._current = (failed + 1) % len(self._channels)

    async def _authenticate(self, idx: int) -> None:
        async with self._auth_lock:
            s = self._settings
            assert s.username is not None and s.password is not None
            try:
                r = await self._methods[idx]["Auth.Authenticate"](
                    rpc_pb2.AuthenticateRequest(name=s.username, password=s.password), timeout=self._timeout)
            except grpc.RpcError as exc:
                raise errors.from_rpc_error(exc) from None
            self._metadata = (("token", r.token),)

    async def _call(self, c: Call) -> Any:
        attempt = 0
        deadline = 0.0
        while True:
            idx = self._current
            try:
                if self._metadata is None and self._settings.username is not None:
                    await self._authenticate(idx)
                fn = self._methods[idx][c.method]
                if c.stream:
                    call = fn(timeout=c.timeout or self._timeout, metadata=self._metadata)
                    try:
                        await call.write(c.request)
                        r = await call.read()
                        if r is grpc.aio.EOF:
                            raise errors.Unavailable("stream closed before answering")
                        return r
                    finally:
                        call.cancel()
                return await fn(c.request, timeout=c.timeout or self._timeout, metadata=self._metadata)
            except grpc.RpcError as exc:
                err = errors.from_rpc_error(exc)
            except errors.EtcdError as exc:
                err = exc
            if isinstance(err, errors.InvalidAuthToken) and self._settings.username is not None and attempt == 0:
                self._metadata = None
                attempt += 1
                continue
            if self._closed or not _core.should_retry(err, c.safe):
                raise err
            now = time.monotonic()
            if deadline == 0.0:
                deadline = now + (c.timeout or self._timeout or _core.DEFAULT_RETRY_WINDOW)
            if now >= deadline:
                raise err
            self._rotate(idx)
            await asyncio.sleep(_core.backoff(attempt))
            attempt += 1

    async def _run(self, gen: Steps[T]) -> T:
        send: Any = None
        exc: BaseException | None = None
        while True:
            try:
                instr = gen.send(send) if exc is None else gen.throw(exc)
            except StopIteration as done:
                return done.value  # type: ignore[no-any-return]
            send = exc = None
            try:
                if type(instr) is Call:
                    send = await self._call(instr)
                elif type(instr) is Sleep:
                    await asyncio.sleep(instr.seconds)
                elif type(instr) is WaitDelete:
                    await self._wait_delete(instr)
            except errors.EtcdError as e:
                exc = e
            except asyncio.CancelledError as e:
                exc = e  # let the operation clean up (a lock deletes its key), then it re-raises

    async def _wait_delete(self, w: WaitDelete) -> None:
        async with self.watch(w.key, start_revision=w.revision) as events:
            async for ev in events:
                if ev.type is EventType.DELETE:
                    return

    # ------------------------------------------------------------ KV

    @overload
    async def put(self, key: Bytes, value: Bytes, *, lease: int | AsyncLease | None = None,
                  prev_kv: Literal[False] = False) -> int: ...

    @overload
    async def put(self, key: Bytes, value: Bytes, *, lease: int | AsyncLease | None = None,
                  prev_kv: Literal[True]) -> tuple[int, KeyValue | None]: ...

    async def put(self, key: Bytes, value: Bytes, *, lease: int | AsyncLease | None = None,
                  prev_kv: bool = False) -> int | tuple[int, KeyValue | None]:
        lid = lease.id if isinstance(lease, AsyncLease) else (lease or 0)
        return await self._run(_core.put(key, value, lid, prev_kv))

    async def get(self, key: Bytes, *, revision: int = 0, serializable: bool = False) -> KeyValue | None:
        return await self._run(_core.get(key, revision, serializable))

    async def get_prefix(self, prefix: Bytes, *, revision: int = 0, limit: int = 0, serializable: bool = False,
                         keys_only: bool = False) -> list[KeyValue]:
        return await self._run(_core.get_range(prefix, prefix_end(to_bytes(prefix)), revision, limit,
                                               serializable, keys_only))

    async def get_range(self, start: Bytes, end: Bytes, *, revision: int = 0, limit: int = 0,
                        serializable: bool = False, keys_only: bool = False) -> list[KeyValue]:
        return await self._run(_core.get_range(start, to_bytes(end), revision, limit, serializable, keys_only))

    def iter_prefix(self, prefix: Bytes, *, page_size: int = 1000) -> AsyncIterator[KeyValue]:
        p = to_bytes(prefix)
        return self._iter(_core.Pager(p, prefix_end(p), page_size))

    def iter_range(self, start: Bytes, end: Bytes, *, page_size: int = 1000) -> AsyncIterator[KeyValue]:
        return self._iter(_core.Pager(to_bytes(start), to_bytes(end), page_size))

    async def _iter(self, pager: _core.Pager) -> AsyncIterator[KeyValue]:
        while not pager.done:
            for kv in await self._run(pager.next_page()):
                yield kv

    async def delete(self, key: Bytes) -> int:
        return await self._run(_core.delete(key, b""))

    async def delete_prefix(self, prefix: Bytes) -> int:
        return await self._run(_core.delete(prefix, prefix_end(to_bytes(prefix))))

    async def delete_range(self, start: Bytes, end: Bytes) -> int:
        return await self._run(_core.delete(start, to_bytes(end)))

    async def txn(self, compare: Sequence[Compare] = (), success: Sequence[Op] = (),
                  failure: Sequence[Op] = ()) -> TxnResult:
        return await self._run(_core.txn(compare, success, failure))

    async def compact(self, revision: int, *, physical: bool = False) -> None:
        await self._run(_core.compact(revision, physical))

    async def status(self) -> rpc_pb2.StatusResponse:
        return await self._run(_core.status())

    # ------------------------------------------------------------ watch, leases, recipes

    def watch(self, key: Bytes, *, prefix: bool = False, range_end: Bytes | None = None,
              start_revision: int | None = None, prev_kv: bool = False, filters: Sequence[Filter] = (),
              progress_notify: bool = False) -> AsyncWatch:
        """An async iterator of events; registered on the server when its
        ``async with`` block is entered (or at the first iteration)."""
        st = _core.watch_state(key, prefix, range_end, start_revision, prev_kv, filters, progress_notify)
        return AsyncWatch(self, st)

    def lease(self, ttl: int, *, lease_id: int = 0) -> AsyncLease:
        """A lease granted when its ``async with`` block is entered (or by
        ``await lease.grant()``), kept alive by a task until revoked."""
        return AsyncLease(self, ttl, lease_id)

    async def revoke_lease(self, lease_id: int) -> None:
        await self._run(_core.lease_revoke(lease_id))

    def lock(self, name: Bytes, *, ttl: int = 60) -> AsyncLock:
        return AsyncLock(self, to_bytes(name), ttl)

    def election(self, name: Bytes, *, ttl: int = 60) -> AsyncElection:
        return AsyncElection(self, to_bytes(name), ttl)

    async def stm(self, fn: Callable[[AsyncSTM], Awaitable[T]], *, isolation: Isolation = Isolation.SERIALIZABLE,
                  max_attempts: int | None = None) -> T:
        state = _core.STMState(isolation)
        s = AsyncSTM(self, state)
        attempt = 0
        while True:
            state.reset()
            result = await fn(s)
            if await self._run(state.commit()):
                return result
            attempt += 1
            if max_attempts is not None and attempt >= max_attempts:
                raise errors.STMConflictLimit(f"STM still conflicting after {attempt} attempts")
            await asyncio.sleep(_core.backoff(min(attempt, 3)) / 5)


def _methods(ch: grpc.aio.Channel) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in _core.UNARY_METHODS + _core.STREAM_METHODS:
        service, method = name.split(".")
        out[name] = _multicallable(ch, service, method, name in _core.STREAM_METHODS)
    return out


class AsyncWatch:
    """Client's Watch for asyncio: resumes after reconnects from the last
    revision delivered; raises Compacted when that revision is gone."""

    def __init__(self, client: AsyncClient, state: _core.WatchState) -> None:
        self._client = client
        self._state = state
        self._pending: collections.deque[Event] = collections.deque()
        self._cancelled = False
        self._call: Any = None  # the live stream, once connected

    @property
    def revision(self) -> int:
        return self._state.next_revision - 1

    async def _connect(self, initial: bool) -> None:
        c = self._client
        attempt = 0
        deadline = time.monotonic() + (c._timeout or _core.DEFAULT_RETRY_WINDOW)
        while True:
            idx = c._current
            if c._metadata is None and c._settings.username is not None:
                await c._authenticate(idx)
            call = c._methods[idx]["Watch.Watch"](metadata=c._metadata)
            self._call = call
            self._state.created = False
            try:
                await call.write(self._state.create_request())
                while True:
                    r = await call.read()
                    if r is grpc.aio.EOF:
                        raise errors.Unavailable("watch stream ended before the watch was created")
                    self._pending.extend(self._state.on_response(r))
                    if self._state.created:
                        return
            except grpc.RpcError as exc:
                err: errors.EtcdError = errors.from_rpc_error(exc)
            except errors.EtcdError as exc:  # Unavailable, or a refusal carried in a cancel (expired token)
                err = exc
            except BaseException:
                call.cancel()
                raise
            call.cancel()
            if isinstance(err, errors.InvalidAuthToken) and c._settings.username is not None and attempt == 0:
                c._metadata = None  # the token expired: log in again and re-create the watch
                attempt += 1
                continue
            if self._cancelled or not isinstance(err, errors.Unavailable | errors.NoLeader):
                raise err
            if initial and time.monotonic() >= deadline:
                raise err
            c._rotate(idx)
            await asyncio.sleep(_core.backoff(attempt))
            attempt += 1

    def __aiter__(self) -> AsyncWatch:
        return self

    async def __anext__(self) -> Event:
        if self._call is None:
            await self._connect(initial=True)
        while not self._pending:
            if self._cancelled:
                raise StopAsyncIteration
            try:
                r = await self._call.read()
            except grpc.RpcError as exc:
                err: errors.EtcdError = errors.from_rpc_error(exc)
            else:
                if r is not grpc.aio.EOF:
                    self._pending.extend(self._state.on_response(r))
                    continue
                err = errors.Unavailable("watch stream closed by the server")
            if self._cancelled:
                raise StopAsyncIteration
            if not isinstance(err, errors.Unavailable | errors.NoLeader):
                raise err
            log.info("watch on %r: stream broken (%s); resuming from revision %d",
                     self._state.key, err, self._state.next_revision)
            self._call.cancel()
            self._client._rotate(self._client._current)
            await self._connect(initial=False)
        return self._pending.popleft()

    def cancel(self) -> None:
        self._cancelled = True
        if self._call is not None:
            self._call.cancel()

    async def __aenter__(self) -> AsyncWatch:
        if self._call is None:
            await self._connect(initial=True)
        return self

    async def __aexit__(self, et: type[BaseException] | None, ev: BaseException | None,
                        tb: TracebackType | None) -> None:
        self.cancel()


class AsyncLease:
    """Client's Lease for asyncio; the keep-alive is a task."""

    def __init__(self, client: AsyncClient, ttl: int, lease_id: int = 0) -> None:
        self._client = client
        self._ttl = ttl
        self._state = _core.LeaseState(lease_id, 0, 0.0)
        self._task: asyncio.Task[None] | None = None  # the keep-alive, once granted

    @property
    def id(self) -> int:
        return self._state.id

    @property
    def granted_ttl(self) -> int:
        return self._state.granted_ttl

    @property
    def lost(self) -> bool:
        return self._state.lost

    def check(self) -> None:
        if self._state.lost:
            raise errors.LeaseLost(self._state.lost_reason)

    async def grant(self) -> AsyncLease:
        lid, granted = await self._client._run(_core.lease_grant(self._ttl, self._state.id))
        self._state = _core.LeaseState(lid, granted, time.monotonic() + granted)
        self._task = asyncio.create_task(self._keepalive(), name=f"petcd-lease-{lid:x}")
        return self

    async def _keepalive(self) -> None:
        try:
            await self._client._run(_core.keepalive_loop(self._state))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._state.lost, self._state.lost_reason = True, f"keep-alive failed: {exc!r}"
        if self._state.lost:
            log.warning("%s", self._state.lost_reason)

    async def ttl(self) -> int:
        return int((await self._client._run(_core.lease_ttl(self.id, False))).TTL)

    async def keys(self) -> list[bytes]:
        return list((await self._client._run(_core.lease_ttl(self.id, True))).keys)

    async def revoke(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        try:
            await self._client._run(_core.lease_revoke(self.id))
        except errors.LeaseNotFound:
            pass

    async def __aenter__(self) -> AsyncLease:
        return await self.grant()

    async def __aexit__(self, et: type[BaseException] | None, ev: BaseException | None,
                        tb: TracebackType | None) -> None:
        lost = self._state.lost
        await self.revoke()
        if lost and et is None:
            raise errors.LeaseLost(self._state.lost_reason)


class AsyncLock:
    """Client's Lock for asyncio."""

    def __init__(self, client: AsyncClient, name: bytes, ttl: int) -> None:
        self._client = client
        self._ttl = ttl
        self._lease: AsyncLease | None = None
        self._state = _core.LockState(name + b"/", b"")

    @property
    def fencing_token(self) -> int:
        return self._state.revision

    @property
    def key(self) -> bytes:
        return self._state.key

    async def acquire(self) -> int:
        lease = await AsyncLease(self._client, self._ttl).grant()
        self._lease = lease
        self._state.key = self._state.prefix + f"{lease.id:x}".encode()
        try:
            return await self._client._run(_core.lock_acquire(self._state, lease.id))
        except BaseException:
            await self._release_lease()
            raise

    async def release(self) -> None:
        try:
            await self._client._run(_core.lock_release(self._state))
        finally:
            await self._release_lease()

    async def _release_lease(self) -> None:
        if self._lease is not None:
            try:
                await self._lease.revoke()
            except errors.EtcdError as exc:
                log.warning("revoking the lock's lease failed (it will expire): %s", exc)
            self._lease = None

    async def __aenter__(self) -> AsyncLock:
        await self.acquire()
        return self

    async def __aexit__(self, et: type[BaseException] | None, ev: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.release()


class AsyncElection:
    """Client's Election for asyncio."""

    def __init__(self, client: AsyncClient, name: bytes, ttl: int) -> None:
        self._client = client
        self._ttl = ttl
        self._lease: AsyncLease | None = None
        self._state = _core.ElectionState(name + b"/")

    @property
    def key(self) -> bytes:
        return self._state.key

    async def campaign(self, value: Bytes) -> None:
        if self._lease is None or self._lease.lost:
            self._lease = await AsyncLease(self._client, self._ttl).grant()
        await self._client._run(_core.campaign(self._state, self._lease.id, to_bytes(value)))

    async def proclaim(self, value: Bytes) -> None:
        lid = self._lease.id if self._lease is not None else 0
        await self._client._run(_core.proclaim(self._state, lid, to_bytes(value)))

    async def resign(self) -> None:
        try:
            await self._client._run(_core.resign(self._state))
        finally:
            if self._lease is not None:
                await self._lease.revoke()
                self._lease = None

    async def leader(self) -> KeyValue:
        return await self._client._run(_core.election_leader(self._state.prefix))

    async def observe(self) -> AsyncIterator[KeyValue]:
        c = self._client
        pfx = self._state.prefix
        while True:
            leader, rev = await c._run(_core.election_leader_at(pfx))
            if leader is None:
                async with c.watch(pfx, prefix=True, start_revision=rev + 1, filters=[Filter.NODELETE]) as w:
                    await w.__anext__()
                continue
            yield leader
            async with c.watch(leader.key, start_revision=leader.mod_revision + 1) as w:
                async for ev in w:
                    if ev.type is EventType.DELETE:
                        break
                    yield ev.kv

    async def __aenter__(self) -> AsyncElection:
        return self

    async def __aexit__(self, et: type[BaseException] | None, ev: BaseException | None,
                        tb: TracebackType | None) -> None:
        if self._lease is not None:
            await self.resign()


class AsyncSTM:
    """The view fn gets inside AsyncClient.stm."""

    def __init__(self, client: AsyncClient, state: _core.STMState) -> None:
        self._client = client
        self._state = state

    async def get(self, key: Bytes) -> bytes | None:
        return await self._client._run(self._state.get(key))

    def put(self, key: Bytes, value: Bytes) -> None:
        self._state.put(key, value)

    def delete(self, key: Bytes) -> None:
        self._state.delete(key)
