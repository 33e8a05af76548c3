"""Client: the blocking client. It runs the operations of ``_core`` with
grpcio's blocking stubs in the caller's thread (no helper thread on the
request path); lease keep-alives run in one daemon thread per lease."""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from types import TracebackType
from typing import Any, Literal, TypeVar, overload

import grpc

from petcd.client import _core, errors
from petcd.client._base import CHANNEL_OPTIONS, PathOrPem, Settings
from petcd.client._core import Call, Sleep, Steps, WaitDelete
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


class Client:
    """A blocking etcd v3 client for petcd or etcd.

    ``endpoints`` is "host:port", an http(s) URL, a comma-separated list or a
    sequence of them; a request that fails because a member is unreachable
    moves to the next one (reads are retried, writes only when they cannot
    have been applied). ``timeout`` (seconds) bounds each request.
    ``username``/``password`` log in (the token is renewed when it expires);
    ``ca_cert``/``cert``/``key`` (paths or PEM bytes) select TLS."""

    def __init__(self, endpoints: str | Sequence[str] = "127.0.0.1:2379", *, timeout: float | None = None,
                 username: str | None = None, password: str | None = None, ca_cert: PathOrPem | None = None,
                 cert: PathOrPem | None = None, key: PathOrPem | None = None) -> None:
        self._settings = Settings.build(endpoints, timeout, username, password, ca_cert, cert, key)
        self._timeout = timeout
        self._channels: list[grpc.Channel] = [self._channel(e.target) for e in self._settings.endpoints]
        self._methods: list[dict[str, Any]] = [_methods(ch) for ch in self._channels]
        self._current = 0
        self._metadata: Metadata | None = None
        self._auth_lock = threading.Lock()
        self._closed = False

    def _channel(self, target: str) -> grpc.Channel:
        if self._settings.credentials is not None:
            return grpc.secure_channel(target, self._settings.credentials, options=CHANNEL_OPTIONS)
        return grpc.insecure_channel(target, options=CHANNEL_OPTIONS)

    # ------------------------------------------------------------ plumbing

    def __enter__(self) -> Client:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        """Close every channel; the client cannot be used afterwards."""
        self._closed = True
        for ch in self._channels:
            ch.close()

    @property
    def endpoint(self) -> str:
        """The endpoint requests currently go to."""
        return self._settings.endpoints[self._current].target

    def _rotate(self, failed: int) -> None:
        if self._current == failed:
            self._current = (failed + 1) % len(self._channels)

    def _authenticate(self, idx: int) -> None:
        with self._auth_lock:
            s = self._settings
            assert s.username is not None and s.password is not None
            try:
                r = self._methods[idx]["Auth.Authenticate"](
                    rpc_pb2.AuthenticateRequest(name=s.username, password=s.password), timeout=self._timeout)
            except grpc.RpcError as exc:
                raise errors.from_rpc_error(exc) from None
            self._metadata = (("token", r.token),)

    def _call(self, c: Call) -> Any:
        attempt = 0
        deadline = 0.0
        while True:
            idx = self._current
            try:
                if self._metadata is None and self._settings.username is not None:
                    self._authenticate(idx)
                fn = self._methods[idx][c.method]
                if c.stream:
                    it = fn(iter((c.request,)), timeout=c.timeout or self._timeout, metadata=self._metadata)
                    try:
                        return next(it)
                    finally:
                        it.cancel()
                return fn(c.request, timeout=c.timeout or self._timeout, metadata=self._metadata)
            except grpc.RpcError as exc:
                err = errors.from_rpc_error(exc)
            except errors.EtcdError as exc:
                err = exc
            if isinstance(err, errors.InvalidAuthToken) and self._settings.username is not None and attempt == 0:
                self._metadata = None  # the token expired: log in again; the request was refused, so retry
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
            time.sleep(_core.backoff(attempt))
            attempt += 1

    def _run(self, gen: Steps[T], stop: threading.Event | None = None) -> T:
        """Drive an operation of _core: answer each instruction it yields."""
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
                    send = self._call(instr)
                elif type(instr) is Sleep:
                    if stop is None:
                        time.sleep(instr.seconds)
                    elif stop.wait(instr.seconds):
                        gen.close()
                        return None  # type: ignore[return-value]
                elif type(instr) is WaitDelete:
                    self._wait_delete(instr)
            except errors.EtcdError as e:
                exc = e

    def _wait_delete(self, w: WaitDelete) -> None:
        with self.watch(w.key, start_revision=w.revision) as events:
            for ev in events:
                if ev.type is EventType.DELETE:
                    return

    # ------------------------------------------------------------ KV

    @overload
    def put(self, key: Bytes, value: Bytes, *, lease: int | Lease | None = None,
            prev_kv: Literal[False] = False) -> int: ...

    @overload
    def put(self, key: Bytes, value: Bytes, *, lease: int | Lease | None = None,
            prev_kv: Literal[True]) -> tuple[int, KeyValue | None]: ...

    def put(self, key: Bytes, value: Bytes, *, lease: int | Lease | None = None,
            prev_kv: bool = False) -> int | tuple[int, KeyValue | None]:
        """Set key to value; the revision of the write (and, with
        prev_kv=True, the pair it replaced or None)."""
        lid = lease.id if isinstance(lease, Lease) else (lease or 0)
        return self._run(_core.put(key, value, lid, prev_kv))  # type: ignore[no-any-return]

    def get(self, key: Bytes, *, revision: int = 0, serializable: bool = False) -> KeyValue | None:
        """The key's current pair (or at ``revision``), None when absent."""
        return self._run(_core.get(key, revision, serializable))

    def get_prefix(self, prefix: Bytes, *, revision: int = 0, limit: int = 0, serializable: bool = False,
                   keys_only: bool = False) -> list[KeyValue]:
        """Every pair whose key starts with prefix, in key order."""
        return self._run(_core.get_range(prefix, prefix_end(to_bytes(prefix)), revision, limit,
                                         serializable, keys_only))

    def get_range(self, start: Bytes, end: Bytes, *, revision: int = 0, limit: int = 0,
                  serializable: bool = False, keys_only: bool = False) -> list[KeyValue]:
        """Every pair with start <= key < end (end b"\\0": to the end of the keyspace)."""
        return self._run(_core.get_range(start, to_bytes(end), revision, limit, serializable, keys_only))

    def iter_prefix(self, prefix: Bytes, *, page_size: int = 1000) -> Iterator[KeyValue]:
        """get_prefix a page at a time, all pages at one revision."""
        p = to_bytes(prefix)
        return self._iter(_core.Pager(p, prefix_end(p), page_size))

    def iter_range(self, start: Bytes, end: Bytes, *, page_size: int = 1000) -> Iterator[KeyValue]:
        """get_range a page at a time, all pages at one revision."""
        return self._iter(_core.Pager(to_bytes(start), to_bytes(end), page_size))

    def _iter(self, pager: _core.Pager) -> Iterator[KeyValue]:
        while not pager.done:
            yield from self._run(pager.next_page())

    def delete(self, key: Bytes) -> int:
        """Delete key; how many were deleted (0 or 1)."""
        return self._run(_core.delete(key, b""))

    def delete_prefix(self, prefix: Bytes) -> int:
        """Delete every key starting with prefix; how many were deleted."""
        return self._run(_core.delete(prefix, prefix_end(to_bytes(prefix))))

    def delete_range(self, start: Bytes, end: Bytes) -> int:
        """Delete start <= key < end; how many were deleted."""
        return self._run(_core.delete(start, to_bytes(end)))

    def txn(self, compare: Sequence[Compare] = (), success: Sequence[Op] = (),
            failure: Sequence[Op] = ()) -> TxnResult:
        """If every comparison holds run success, else failure, atomically."""
        return self._run(_core.txn(compare, success, failure))

    def compact(self, revision: int, *, physical: bool = False) -> None:
        """Discard history before revision."""
        self._run(_core.compact(revision, physical))

    def status(self) -> rpc_pb2.StatusResponse:
        """The current endpoint's Maintenance.Status."""
        return self._run(_core.status())

    # ------------------------------------------------------------ watch

    def watch(self, key: Bytes, *, prefix: bool = False, range_end: Bytes | None = None,
              start_revision: int | None = None, prev_kv: bool = False, filters: Sequence[Filter] = (),
              progress_notify: bool = False) -> Watch:
        """Events on key (or the prefix, or [key, range_end)) from
        start_revision, or from now: every change after watch() returns is
        delivered. Iterate it; leave the ``with`` block (or cancel()) to stop."""
        st = _core.watch_state(key, prefix, range_end, start_revision, prev_kv, filters, progress_notify)
        return Watch(self, st)

    # ------------------------------------------------------------ leases and recipes

    def lease(self, ttl: int, *, lease_id: int = 0) -> Lease:
        """Grant a lease of ttl seconds, kept alive in the background until
        revoke() or the end of its ``with`` block."""
        return Lease(self, ttl, lease_id)

    def revoke_lease(self, lease_id: int) -> None:
        self._run(_core.lease_revoke(lease_id))

    def lock(self, name: Bytes, *, ttl: int = 60) -> Lock:
        """etcd's lock recipe on name (the keys etcdctl lock uses), as a
        context manager; ``fencing_token`` orders the holders."""
        return Lock(self, to_bytes(name), ttl)

    def election(self, name: Bytes, *, ttl: int = 60) -> Election:
        """etcd's election recipe on name (compatible with etcdctl elect)."""
        return Election(self, to_bytes(name), ttl)

    def stm(self, fn: Callable[[STM], T], *, isolation: Isolation = Isolation.SERIALIZABLE,
            max_attempts: int | None = None) -> T:
        """Run fn(stm) as etcd's software transactional memory: its reads
        and writes commit atomically or fn runs again (at most max_attempts
        times, unbounded by default). fn's result is returned."""
        state = _core.STMState(isolation)
        s = STM(self, state)
        attempt = 0
        while True:
            state.reset()
            result = fn(s)
            if self._run(state.commit()):
                return result
            attempt += 1
            if max_attempts is not None and attempt >= max_attempts:
                raise errors.STMConflictLimit(f"STM still conflicting after {attempt} attempts")
            time.sleep(_core.backoff(min(attempt, 3)) / 5)


def _methods(ch: grpc.Channel) -> dict[str, Any]:
    """The multi-callables for every RPC the client uses on one channel."""
    out: dict[str, Any] = {}
    for name in _core.UNARY_METHODS + _core.STREAM_METHODS:
        service, method = name.split(".")
        out[name] = _multicallable(ch, service, method, name in _core.STREAM_METHODS)
    return out


def _multicallable(ch: Any, service: str, method: str, stream: bool) -> Any:
    desc = rpc_pb2.DESCRIPTOR.services_by_name[service].methods_by_name[method]
    from google.protobuf.message_factory import GetMessageClass

    req = GetMessageClass(desc.input_type)
    resp = GetMessageClass(desc.output_type)
    path = f"/etcdserverpb.{service}/{method}"
    make = ch.stream_stream if stream else ch.unary_unary
    return make(path, request_serializer=req.SerializeToString, response_deserializer=resp.FromString)


class Watch:
    """An iterator of Events that survives reconnects: when the stream
    breaks it is re-created (on the next endpoint, with back-off) from one
    past the last revision delivered, so each event comes exactly once, in
    order. Iteration raises Compacted when that revision has been compacted."""

    def __init__(self, client: Client, state: _core.WatchState) -> None:
        self._client = client
        self._state = state
        self._pending: collections.deque[Event] = collections.deque()
        self._cancelled = False
        self._lock = threading.Lock()
        self._call, self._stream_done = self._connect(initial=True)

    @property
    def revision(self) -> int:
        """The last revision delivered (or the one the watch started after)."""
        return self._state.next_revision - 1

    def _requests(self, first: rpc_pb2.WatchRequest, done: threading.Event) -> Iterator[rpc_pb2.WatchRequest]:
        yield first
        done.wait()  # keep the stream open until cancelled or replaced

    def _connect(self, initial: bool) -> tuple[Any, threading.Event]:
        c = self._client
        attempt = 0
        deadline = time.monotonic() + (c._timeout or _core.DEFAULT_RETRY_WINDOW)
        while True:
            idx = c._current
            if c._metadata is None and c._settings.username is not None:
                c._authenticate(idx)
            done = threading.Event()
            call = c._methods[idx]["Watch.Watch"](self._requests(self._state.create_request(), done),
                                                  metadata=c._metadata)
            self._state.created = False
            try:
                for r in call:
                    self._pending.extend(self._state.on_response(r))
                    if self._state.created:
                        return call, done
                raise errors.Unavailable("watch stream ended before the watch was created")
            except grpc.RpcError as exc:
                err: errors.EtcdError = errors.from_rpc_error(exc)
            except errors.EtcdError as exc:  # Unavailable, or a refusal carried in a cancel (expired token)
                err = exc
            except BaseException:
                done.set()
                call.cancel()
                raise
            done.set()
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
            time.sleep(_core.backoff(attempt))
            attempt += 1

    def __iter__(self) -> Watch:
        return self

    def __next__(self) -> Event:
        while not self._pending:
            if self._cancelled:
                raise StopIteration
            try:
                r = next(self._call)
            except StopIteration:
                err: errors.EtcdError = errors.Unavailable("watch stream closed by the server")
            except grpc.RpcError as exc:
                err = errors.from_rpc_error(exc)
            else:
                self._pending.extend(self._state.on_response(r))
                continue
            if self._cancelled:
                raise StopIteration
            if not isinstance(err, errors.Unavailable | errors.NoLeader):
                raise err
            log.info("watch on %r: stream broken (%s); resuming from revision %d",
                     self._state.key, err, self._state.next_revision)
            self._stream_done.set()
            self._client._rotate(self._client._current)
            try:
                self._call, self._stream_done = self._connect(initial=False)
            except errors.Cancelled:
                raise StopIteration from None
        return self._pending.popleft()

    def cancel(self) -> None:
        """Stop the watch; iteration ends."""
        self._cancelled = True
        self._stream_done.set()
        self._call.cancel()

    def __enter__(self) -> Watch:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.cancel()


class Lease:
    """A granted lease kept alive by a background thread. Losing it (expired
    or revoked by someone else, or unrenewable past its TTL) is reported:
    ``lost`` turns True, ``check()`` raises LeaseLost, and so does the end of
    its ``with`` block."""

    def __init__(self, client: Client, ttl: int, lease_id: int = 0) -> None:
        self._client = client
        lid, granted = client._run(_core.lease_grant(ttl, lease_id))
        self._state = _core.LeaseState(lid, granted, time.monotonic() + granted)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._keepalive, name=f"petcd-lease-{lid:x}", daemon=True)
        self._thread.start()

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
        """Raise LeaseLost if the lease is gone."""
        if self._state.lost:
            raise errors.LeaseLost(self._state.lost_reason)

    def _keepalive(self) -> None:
        try:
            self._client._run(_core.keepalive_loop(self._state), stop=self._stop)
        except Exception as exc:  # the loop reports through state; anything else is a bug worth logging
            self._state.lost, self._state.lost_reason = True, f"keep-alive failed: {exc!r}"
        if self._state.lost and not self._stop.is_set():
            log.warning("%s", self._state.lost_reason)

    def ttl(self) -> int:
        """Seconds left (-1 when the lease is gone)."""
        return int(self._client._run(_core.lease_ttl(self.id, False)).TTL)

    def keys(self) -> list[bytes]:
        """The keys attached to the lease."""
        return list(self._client._run(_core.lease_ttl(self.id, True)).keys)

    def revoke(self) -> None:
        """Stop renewing and revoke (its keys are deleted)."""
        self._stop.set()
        self._thread.join()
        try:
            self._client._run(_core.lease_revoke(self.id))
        except errors.LeaseNotFound:
            pass  # already gone: lost is already reported

    def __enter__(self) -> Lease:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        lost = self._state.lost
        self.revoke()
        if lost and et is None:
            raise errors.LeaseLost(self._state.lost_reason)


class Lock:
    """etcd's Mutex recipe. Entering blocks until the lock is held;
    ``fencing_token`` (the create revision of this holder's key) grows with
    every new holder: pass it to the protected resource and have it refuse
    smaller ones."""

    def __init__(self, client: Client, name: bytes, ttl: int) -> None:
        self._client = client
        self._name = name
        self._ttl = ttl
        self._lease: Lease | None = None
        self._state = _core.LockState(name + b"/", b"")

    @property
    def fencing_token(self) -> int:
        return self._state.revision

    @property
    def key(self) -> bytes:
        return self._state.key

    @property
    def lease(self) -> Lease | None:
        return self._lease

    def acquire(self) -> int:
        lease = Lease(self._client, self._ttl)
        self._lease = lease
        self._state.key = self._state.prefix + f"{lease.id:x}".encode()
        try:
            return self._client._run(_core.lock_acquire(self._state, lease.id))
        except BaseException:
            self._release_lease()
            raise

    def release(self) -> None:
        try:
            self._client._run(_core.lock_release(self._state))
        finally:
            self._release_lease()

    def _release_lease(self) -> None:
        if self._lease is not None:
            try:
                self._lease.revoke()
            except errors.EtcdError as exc:
                log.warning("revoking the lock's lease failed (it will expire): %s", exc)
            self._lease = None

    def __enter__(self) -> Lock:
        self.acquire()
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.release()


class Election:
    """etcd's election recipe: campaign() blocks until this client leads,
    proclaim() changes the leader's value, resign() steps down, leader()
    reads the current leader, observe() follows the leader's values."""

    def __init__(self, client: Client, name: bytes, ttl: int) -> None:
        self._client = client
        self._ttl = ttl
        self._lease: Lease | None = None
        self._state = _core.ElectionState(name + b"/")

    @property
    def key(self) -> bytes:
        """Our key while campaigning or leading (b"" otherwise)."""
        return self._state.key

    @property
    def revision(self) -> int:
        return self._state.revision

    def campaign(self, value: Bytes) -> None:
        if self._lease is None or self._lease.lost:
            self._lease = Lease(self._client, self._ttl)
        self._client._run(_core.campaign(self._state, self._lease.id, to_bytes(value)))

    def proclaim(self, value: Bytes) -> None:
        lid = self._lease.id if self._lease is not None else 0
        self._client._run(_core.proclaim(self._state, lid, to_bytes(value)))

    def resign(self) -> None:
        try:
            self._client._run(_core.resign(self._state))
        finally:
            if self._lease is not None:
                self._lease.revoke()
                self._lease = None

    def leader(self) -> KeyValue:
        return self._client._run(_core.election_leader(self._state.prefix))

    def observe(self) -> Iterator[KeyValue]:
        """The leader's pair now and after every change of leader or value."""
        c = self._client
        pfx = self._state.prefix
        while True:
            leader, rev = c._run(_core.election_leader_at(pfx))
            if leader is None:
                with c.watch(pfx, prefix=True, start_revision=rev + 1, filters=[Filter.NODELETE]) as w:
                    next(w)
                continue
            yield leader
            with c.watch(leader.key, start_revision=leader.mod_revision + 1) as w:
                for ev in w:
                    if ev.type is EventType.DELETE:
                        break
                    yield ev.kv

    def __enter__(self) -> Election:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        if self._lease is not None:
            self.resign()


class STM:
    """The view fn gets inside Client.stm: get/put/delete on the transaction."""

    def __init__(self, client: Client, state: _core.STMState) -> None:
        self._client = client
        self._state = state

    def get(self, key: Bytes) -> bytes | None:
        return self._client._run(self._state.get(key))

    def put(self, key: Bytes, value: Bytes) -> None:
        self._state.put(key, value)

    def delete(self, key: Bytes) -> None:
        self._state.delete(key)
