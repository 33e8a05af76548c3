"""The client's one implementation, free of I/O: every operation and recipe
is a generator that yields what it needs done (a ``Call``, a ``Sleep``, a
``WaitDelete``) and receives the answer. ``Client`` runs these generators
with grpcio's blocking stubs, ``AsyncClient`` with grpc.aio, so the two
behave the same by construction and the blocking path costs no thread hop
(the put latency target is 1.2x a bare stub call).

Watches are a ``WatchState`` that both drivers feed with responses; it owns
the resume revision and the compaction check."""

from __future__ import annotations

import random
import time
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import urlsplit

import grpc

from petcd.client import errors
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
    txn_request,
    txn_result,
)
from petcd.proto import rpc_pb2

T = TypeVar("T")


@dataclass(slots=True)
class Call:
    """One RPC. ``method`` is "Service.Method"; ``safe`` says a retry cannot
    apply anything twice (reads, revokes, keep-alives); ``stream`` marks a
    bidirectional method used for one request and one response."""

    method: str
    request: Any
    safe: bool
    stream: bool = False
    timeout: float | None = None  # overrides the client's (a keep-alive must not outwait its lease)


@dataclass(slots=True)
class Sleep:
    seconds: float


@dataclass(slots=True)
class WaitDelete:
    """Block until key is deleted, watching from revision (etcd's waitDelete)."""

    key: bytes
    revision: int


Instr = Call | Sleep | WaitDelete
Steps = Generator[Instr, Any, T]

# Every RPC the client uses, by "Service.Method".
UNARY_METHODS: tuple[str, ...] = (
    "KV.Range", "KV.Put", "KV.DeleteRange", "KV.Txn", "KV.Compact",
    "Lease.LeaseGrant", "Lease.LeaseRevoke", "Lease.LeaseTimeToLive", "Lease.LeaseLeases",
    "Auth.Authenticate", "Maintenance.Status", "Cluster.MemberList",
)
STREAM_METHODS: tuple[str, ...] = ("Lease.LeaseKeepAlive", "Watch.Watch")

# Back-off between retries, and how long a retried request keeps trying when
# the client has no timeout of its own.
BACKOFF_BASE = 0.025
BACKOFF_MAX = 1.0
DEFAULT_RETRY_WINDOW = 30.0


def backoff(attempt: int) -> float:
    """Exponential back-off with jitter (so clients of a restarted member do
    not reconnect in lock step)."""
    base: float = min(BACKOFF_MAX, BACKOFF_BASE * (2 ** min(attempt, 10)))
    return base / 2 + random.random() * base / 2


@dataclass(frozen=True, slots=True)
class Endpoint:
    """A member's client address as grpc wants it, and whether it is TLS."""

    target: str
    tls: bool


def parse_endpoint(text: str) -> Endpoint:
    """"host:port", "http://host:port" or "https://host:port"."""
    if "://" not in text:
        return Endpoint(text, False)
    u = urlsplit(text)
    if u.scheme not in ("http", "https") or not u.hostname:
        raise ValueError(f"endpoint {text!r}: expected host:port, http://host:port or https://host:port")
    host = f"[{u.hostname}]" if ":" in u.hostname else u.hostname
    return Endpoint(f"{host}:{u.port or 2379}", u.scheme == "https")


def parse_endpoints(endpoints: str | Sequence[str]) -> list[Endpoint]:
    items = [e.strip() for e in endpoints.split(",")] if isinstance(endpoints, str) else list(endpoints)
    if not items or not all(items):
        raise ValueError("at least one endpoint is needed")
    return [parse_endpoint(e) for e in items]


def should_retry(err: errors.EtcdError, safe: bool) -> bool:
    """A failed call is retried (on the next endpoint) when the server may
    simply have been unreachable and a retry cannot apply a write twice."""
    if safe:
        return isinstance(err, errors.Unavailable | errors.NoLeader | errors.TooManyRequests)
    return errors.never_sent(err)


# ---------------------------------------------------------------- KV

def put(key: Bytes, value: Bytes, lease: int, prev_kv: bool) -> Steps[Any]:
    r = yield Call("KV.Put", rpc_pb2.PutRequest(key=to_bytes(key), value=to_bytes(value),
                                                 lease=lease or 0, prev_kv=prev_kv), False)
    if prev_kv:
        return r.header.revision, (KeyValue.from_pb(r.prev_kv) if r.HasField("prev_kv") else None)
    return r.header.revision


def range_request(key: Bytes, range_end: bytes, *, revision: int = 0, limit: int = 0,
                  serializable: bool = False, keys_only: bool = False) -> rpc_pb2.RangeRequest:
    return rpc_pb2.RangeRequest(key=to_bytes(key), range_end=range_end, revision=revision, limit=limit,
                                serializable=serializable, keys_only=keys_only)


def get(key: Bytes, revision: int, serializable: bool) -> Steps[KeyValue | None]:
    r = yield Call("KV.Range", rpc_pb2.RangeRequest(key=to_bytes(key), revision=revision,
                                                    serializable=serializable), True)
    return KeyValue.from_pb(r.kvs[0]) if r.kvs else None


def get_range(key: Bytes, range_end: bytes, revision: int, limit: int, serializable: bool,
              keys_only: bool) -> Steps[list[KeyValue]]:
    r = yield Call("KV.Range", range_request(key, range_end, revision=revision, limit=limit,
                                             serializable=serializable, keys_only=keys_only), True)
    return [KeyValue.from_pb(kv) for kv in r.kvs]


@dataclass(slots=True)
class Pager:
    """Pages through [key, range_end) at one revision (the first page's), so
    the whole listing is one consistent snapshot however long it takes."""

    key: bytes
    range_end: bytes
    page_size: int
    revision: int = 0
    done: bool = False

    def next_page(self) -> Steps[list[KeyValue]]:
        if self.done:
            return []
        r = yield Call("KV.Range", rpc_pb2.RangeRequest(key=self.key, range_end=self.range_end,
                                                        limit=self.page_size, revision=self.revision), True)
        if self.revision == 0:
            self.revision = r.header.revision
        kvs = [KeyValue.from_pb(kv) for kv in r.kvs]
        if r.more and kvs:
            self.key = kvs[-1].key + b"\0"
        else:
            self.done = True
        return kvs


def delete(key: Bytes, range_end: bytes) -> Steps[int]:
    r = yield Call("KV.DeleteRange", rpc_pb2.DeleteRangeRequest(key=to_bytes(key), range_end=range_end), False)
    return int(r.deleted)


def txn(compare: Sequence[Compare], success: Sequence[Op], failure: Sequence[Op]) -> Steps[TxnResult]:
    r = yield Call("KV.Txn", txn_request(compare, success, failure), False)
    return txn_result(r)


def compact(revision: int, physical: bool) -> Steps[None]:
    yield Call("KV.Compact", rpc_pb2.CompactionRequest(revision=revision, physical=physical), False)


def status() -> Steps[rpc_pb2.StatusResponse]:
    r: rpc_pb2.StatusResponse = yield Call("Maintenance.Status", rpc_pb2.StatusRequest(), True)
    return r


# ---------------------------------------------------------------- leases

def lease_grant(ttl: int, lease_id: int) -> Steps[tuple[int, int]]:
    r = yield Call("Lease.LeaseGrant", rpc_pb2.LeaseGrantRequest(TTL=ttl, ID=lease_id), False)
    if r.error:
        raise errors.EtcdError(r.error)
    return int(r.ID), int(r.TTL)


def lease_revoke(lease_id: int) -> Steps[None]:
    yield Call("Lease.LeaseRevoke", rpc_pb2.LeaseRevokeRequest(ID=lease_id), True)


def lease_ttl(lease_id: int, keys: bool) -> Steps[rpc_pb2.LeaseTimeToLiveResponse]:
    r: rpc_pb2.LeaseTimeToLiveResponse = yield Call(
        "Lease.LeaseTimeToLive", rpc_pb2.LeaseTimeToLiveRequest(ID=lease_id, keys=keys), True)
    return r


def lease_keepalive_once(lease_id: int, timeout: float | None = None) -> Steps[int]:
    """One keep-alive; the TTL granted (<= 0 when the lease is gone)."""
    r = yield Call("Lease.LeaseKeepAlive", rpc_pb2.LeaseKeepAliveRequest(ID=lease_id), True, stream=True,
                   timeout=timeout)
    return int(r.TTL)


@dataclass(slots=True)
class LeaseState:
    """What the keep-alive loop knows about one lease."""

    id: int
    granted_ttl: int
    expires: float  # monotonic time the lease expires at unless renewed
    lost: bool = False
    lost_reason: str = ""


def keepalive_loop(state: LeaseState) -> Steps[None]:
    """Renew the lease every third of its TTL until told to stop or the
    lease is gone; a lease that could not be renewed before its TTL ran out
    is reported lost (``state.lost``), never silently dropped."""
    while True:
        try:
            ttl = yield from lease_keepalive_once(state.id, max(1.0, state.granted_ttl / 3))
        except errors.EtcdError as exc:
            if time.monotonic() >= state.expires:
                state.lost, state.lost_reason = True, f"lease {state.id:x} could not be renewed: {exc}"
                return
            yield Sleep(min(0.5, max(0.05, (state.expires - time.monotonic()) / 4)))
            continue
        if ttl <= 0:
            state.lost, state.lost_reason = True, f"lease {state.id:x} expired or was revoked"
            return
        state.expires = time.monotonic() + ttl
        yield Sleep(max(ttl / 3.0, 0.1))


# ---------------------------------------------------------------- watch

@dataclass(slots=True)
class WatchState:
    """One watch's request and progress: ``next_revision`` is where a
    re-created watch starts (one past the last revision delivered), so a
    reconnect delivers every event exactly once."""

    key: bytes
    range_end: bytes
    prev_kv: bool
    filters: list[int]
    progress_notify: bool
    next_revision: int  # 0 until the server told us the revision at creation
    created: bool = False
    watch_id: int = -1

    def create_request(self) -> rpc_pb2.WatchRequest:
        return rpc_pb2.WatchRequest(create_request=rpc_pb2.WatchCreateRequest(
            key=self.key, range_end=self.range_end, start_revision=self.next_revision,
            prev_kv=self.prev_kv, progress_notify=self.progress_notify,
            filters=self.filters))  # type: ignore[arg-type]

    def cancel_request(self) -> rpc_pb2.WatchRequest:
        return rpc_pb2.WatchRequest(cancel_request=rpc_pb2.WatchCancelRequest(watch_id=self.watch_id))

    def on_response(self, r: rpc_pb2.WatchResponse) -> list[Event]:
        """The events to deliver from one response; raises Compacted when
        the start revision is gone, EtcdError when the server cancelled."""
        if r.created:
            self.created = True
            self.watch_id = r.watch_id
            if self.next_revision == 0:
                self.next_revision = r.header.revision + 1
        if r.compact_revision:
            raise errors.Compacted(
                f"etcdserver: mvcc: required revision has been compacted (watch from revision "
                f"{self.next_revision}, compacted at {r.compact_revision})",
                compact_revision=r.compact_revision)
        if r.canceled:
            # etcd puts a refused watch's status in the reason: "rpc error: code = X desc = <message>"
            reason = r.cancel_reason or "no reason given"
            message = reason.split("desc = ", 1)[1] if "desc = " in reason else reason
            err = errors.from_status(grpc.StatusCode.UNKNOWN, message)
            if type(err) is errors.EtcdError:
                err = errors.EtcdError(f"watch cancelled by the server: {reason}")
            raise err
        if not r.events:
            return []
        # the hot loop of a busy watch: build the objects inline
        kv_cls, ev_cls, put, delete = KeyValue, Event, EventType.PUT, EventType.DELETE
        nxt = self.next_revision
        want_prev = self.prev_kv
        out = []
        for e in r.events:
            p = e.kv
            rev = p.mod_revision
            if rev >= nxt:  # never deliver a revision twice across a resume
                prev = kv_cls.from_pb(e.prev_kv) if want_prev and e.HasField("prev_kv") else None
                out.append(ev_cls(delete if e.type else put,
                                  kv_cls(p.key, p.value, p.create_revision, rev, p.version, p.lease), prev))
        if out:
            self.next_revision = out[-1].kv.mod_revision + 1
        return out


def watch_state(key: Bytes, prefix: bool, range_end: Bytes | None, start_revision: int | None,
                prev_kv: bool, filters: Sequence[Filter], progress_notify: bool) -> WatchState:
    k = to_bytes(key)
    end = prefix_end(k) if prefix else (to_bytes(range_end) if range_end is not None else b"")
    return WatchState(k, end, prev_kv, [int(f) for f in filters], progress_notify, start_revision or 0)


# ---------------------------------------------------------------- lock (etcd's concurrency.Mutex)

@dataclass(slots=True)
class LockState:
    prefix: bytes  # name + "/"
    key: bytes  # prefix + lease id in hex
    revision: int = 0  # create revision of our key: the fencing token


def lock_acquire(state: LockState, lease_id: int) -> Steps[int]:
    """Acquire as etcd's Mutex.Lock does (so etcdctl lock and Go clients
    are excluded too): create our key under the prefix if absent, then wait
    until every key created before it is gone. Returns the fencing token."""
    cmp = Compare.create_revision(state.key) == 0
    put_op = Op.put(state.key, b"", lease=lease_id)
    get_op = Op.get(state.key)
    owner = rpc_pb2.RequestOp(request_range=rpc_pb2.RangeRequest(
        key=state.prefix, range_end=prefix_end(state.prefix), limit=1,
        sort_order=rpc_pb2.RangeRequest.ASCEND, sort_target=rpc_pb2.RangeRequest.CREATE))
    req = txn_request([cmp], [put_op], [get_op])
    req.success.append(owner)
    req.failure.append(owner)
    r = yield Call("KV.Txn", req, False)
    my_rev = r.header.revision
    if not r.succeeded:
        my_rev = r.responses[0].response_range.kvs[0].create_revision
    state.revision = my_rev
    owners = r.responses[1].response_range.kvs
    if owners and owners[0].create_revision == my_rev:
        return int(my_rev)
    try:
        yield from wait_deletes(state.prefix, my_rev - 1)
    except BaseException:
        yield from _delete_quietly(state.key)
        raise
    # our key may have expired with its lease while we waited
    r2 = yield Call("KV.Range", rpc_pb2.RangeRequest(key=state.key), True)
    if not r2.kvs or r2.kvs[0].create_revision != my_rev:
        raise errors.LockNotHeld(f"lock key {state.key!r} vanished while waiting (its lease expired)")
    return int(my_rev)


def _delete_quietly(key: bytes) -> Steps[None]:
    try:
        yield Call("KV.DeleteRange", rpc_pb2.DeleteRangeRequest(key=key), True)
    except errors.EtcdError:
        pass  # the lease will take the key with it


def wait_deletes(prefix: bytes, max_create_rev: int) -> Steps[None]:
    """Wait until no key under prefix was created at or before max_create_rev."""
    while True:
        r = yield Call("KV.Range", rpc_pb2.RangeRequest(
            key=prefix, range_end=prefix_end(prefix), limit=1, max_create_revision=max_create_rev,
            sort_order=rpc_pb2.RangeRequest.DESCEND, sort_target=rpc_pb2.RangeRequest.CREATE), True)
        if not r.kvs:
            return
        yield WaitDelete(r.kvs[0].key, r.header.revision)


def lock_release(state: LockState) -> Steps[None]:
    yield Call("KV.DeleteRange", rpc_pb2.DeleteRangeRequest(key=state.key), True)


# ---------------------------------------------------------------- election (etcd's concurrency.Election)

@dataclass(slots=True)
class ElectionState:
    prefix: bytes
    key: bytes = b""
    revision: int = 0  # create revision of our key while we campaign/lead


def campaign(state: ElectionState, lease_id: int, value: bytes) -> Steps[None]:
    key = state.prefix + f"{lease_id:x}".encode()
    r = yield Call("KV.Txn", txn_request(
        [Compare.create_revision(key) == 0], [Op.put(key, value, lease=lease_id)], [Op.get(key)]), False)
    state.key, state.revision = key, r.header.revision
    if not r.succeeded:
        kv = r.responses[0].response_range.kvs[0]
        state.revision = kv.create_revision
        if kv.value != value:
            try:
                yield from proclaim(state, lease_id, value)
            except BaseException:
                yield from resign(state)
                raise
    try:
        yield from wait_deletes(state.prefix, state.revision - 1)
    except BaseException:
        yield from resign(state)
        raise


def proclaim(state: ElectionState, lease_id: int, value: bytes) -> Steps[None]:
    if not state.key:
        raise errors.ElectionNotLeader("election: not leader")
    r = yield Call("KV.Txn", txn_request(
        [Compare.create_revision(state.key) == state.revision],
        [Op.put(state.key, value, lease=lease_id)], []), False)
    if not r.succeeded:
        state.key = b""
        raise errors.ElectionNotLeader("election: not leader")


def resign(state: ElectionState) -> Steps[None]:
    if not state.key:
        return
    yield Call("KV.Txn", txn_request(
        [Compare.create_revision(state.key) == state.revision], [Op.delete(state.key)], []), True)
    state.key, state.revision = b"", 0


def election_leader_at(prefix: bytes) -> Steps[tuple[KeyValue | None, int]]:
    """The leader's key (the oldest under prefix) or None, and the revision read at."""
    r = yield Call("KV.Range", rpc_pb2.RangeRequest(
        key=prefix, range_end=prefix_end(prefix), limit=1,
        sort_order=rpc_pb2.RangeRequest.ASCEND, sort_target=rpc_pb2.RangeRequest.CREATE), True)
    return (KeyValue.from_pb(r.kvs[0]) if r.kvs else None), int(r.header.revision)


def election_leader(prefix: bytes) -> Steps[KeyValue]:
    kv, _ = yield from election_leader_at(prefix)
    if kv is None:
        raise errors.NoElectionLeader("election: no leader")
    return kv


# ---------------------------------------------------------------- STM (etcd's concurrency.STM)

@dataclass(slots=True)
class STMState:
    """The read and write sets of one STM attempt and the commit they make."""

    isolation: Isolation
    reads: dict[bytes, KeyValue | None] = field(default_factory=dict)
    writes: dict[bytes, bytes | None] = field(default_factory=dict)  # None: delete
    first_revision: int = 0  # the revision serializable reads are pinned at

    def reset(self) -> None:
        self.reads.clear()
        self.writes.clear()
        self.first_revision = 0

    def get(self, key: Bytes) -> Steps[bytes | None]:
        k = to_bytes(key)
        if k in self.writes:
            return self.writes[k]
        if k in self.reads and self.isolation is not Isolation.READ_COMMITTED:
            kv = self.reads[k]
            return kv.value if kv is not None else None
        rev = self.first_revision if self.isolation is Isolation.SERIALIZABLE else 0
        r = yield Call("KV.Range", rpc_pb2.RangeRequest(
            key=k, revision=rev, serializable=rev != 0), True)
        if self.first_revision == 0:
            self.first_revision = r.header.revision
        kv = KeyValue.from_pb(r.kvs[0]) if r.kvs else None
        self.reads[k] = kv
        return kv.value if kv is not None else None

    def put(self, key: Bytes, value: Bytes) -> None:
        self.writes[to_bytes(key)] = to_bytes(value)

    def delete(self, key: Bytes) -> None:
        self.writes[to_bytes(key)] = None

    def commit(self) -> Steps[bool]:
        cmps: list[Compare] = []
        if self.isolation is not Isolation.READ_COMMITTED:
            for k, kv in self.reads.items():
                cmps.append(Compare.mod_revision(k) == (kv.mod_revision if kv is not None else 0))
        if self.isolation is Isolation.SERIALIZABLE and self.first_revision:
            for k in self.writes:
                if k not in self.reads:
                    cmps.append(Compare.mod_revision(k) < self.first_revision + 1)
        ops = [Op.delete(k) if v is None else Op.put(k, v) for k, v in self.writes.items()]
        r = yield Call("KV.Txn", txn_request(cmps, ops, []), False)
        return bool(r.succeeded)
