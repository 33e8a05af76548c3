"""What etcd's KV requests mean, carried out on the mvcc store (etcd keeps
this in etcdserver/txn): Range with its sort orders, filters, limit and
``more``; Put with its lease check and ignore_value/ignore_lease; DeleteRange;
Txn with its compares, branches, nested txns and sub-responses. mvcc below
knows only keys, key ranges and revisions.

Every function answers exactly as etcd 3.4 does, field by field, and every
write request either happens whole or not at all: all checks (leases,
ignore_value/ignore_lease, txn range revisions) run before the first write,
so a failing request leaves no trace.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from petcd import stats
from petcd.gosort import go_sorted
from petcd.lease.lessor import ErrLeaseNotFound
from petcd.mvcc.errors import ErrCompacted, ErrFutureRev
from petcd.mvcc.key_range import KeyRange
from petcd.mvcc.kvstore import KVStore, RangeResult, TxnWrite
from petcd.proto import rpc_pb2
from petcd.server import txn_ops
from petcd.server.errors import ErrKeyNotFound

LeaseExists = Callable[[int], bool]

_RR = rpc_pb2.RangeRequest
_C = rpc_pb2.Compare
_SORT_KEYS: dict[int, Callable[[Any], Any]] = {
    _RR.KEY: lambda kv: kv.key,
    _RR.VERSION: lambda kv: kv.version,
    _RR.CREATE: lambda kv: kv.create_revision,
    _RR.MOD: lambda kv: kv.mod_revision,
    _RR.VALUE: lambda kv: kv.value,
}
# Which oneof member a compare target reads its operand from.
_COMPARE_FIELD = {
    _C.VERSION: "version",
    _C.CREATE: "create_revision",
    _C.MOD: "mod_revision",
    _C.VALUE: "value",
    _C.LEASE: "lease",
}


class _Reader(Protocol):
    """A store read as of some state: the store itself, or a write in progress."""

    def range(self, kr: KeyRange, *, rev: int = 0, limit: int = 0, count_only: bool = False) -> RangeResult: ...


# ---- Range -----------------------------------------------------------------


def range_(kv: KVStore, req: rpc_pb2.RangeRequest) -> rpc_pb2.RangeResponse:
    """etcd's Range at the store's current revision (or req.revision)."""
    return _range(kv, req)


def _range(reader: _Reader, req: rpc_pb2.RangeRequest) -> rpc_pb2.RangeResponse:
    sort_order = req.sort_order
    if req.sort_target != _RR.KEY and sort_order == _RR.NONE:
        sort_order = _RR.ASCEND  # a target without an order means ascending
    filtered = (
        req.min_mod_revision != 0
        or req.max_mod_revision != 0
        or req.min_create_revision != 0
        or req.max_create_revision != 0
    )
    limit = req.limit
    # etcd fetches everything when it must sort or filter, else one more
    # than the limit to learn `more`
    fetch = 0 if (req.sort_order != _RR.NONE or filtered) else (limit + 1 if limit > 0 else 0)
    found = reader.range(KeyRange(req.key, req.range_end), rev=req.revision, limit=fetch, count_only=req.count_only)
    resp = rpc_pb2.RangeResponse()
    resp.header.revision = found.rev
    resp.count = found.count
    values = found.values
    if req.count_only or not values:
        return resp
    if not filtered and sort_order == _RR.NONE:
        # the common case: parse each stored value straight into the response
        n = len(values)
        if limit > 0 and n > limit:
            n = limit
            resp.more = True
        for raw in values[:n]:
            out = resp.kvs.add()
            out.ParseFromString(raw)
            if req.keys_only:
                out.ClearField("value")
        return resp
    kvs = found.kvs()
    if req.max_mod_revision != 0:
        kvs = [kv for kv in kvs if kv.mod_revision <= req.max_mod_revision]
    if req.min_mod_revision != 0:
        kvs = [kv for kv in kvs if kv.mod_revision >= req.min_mod_revision]
    if req.max_create_revision != 0:
        kvs = [kv for kv in kvs if kv.create_revision <= req.max_create_revision]
    if req.min_create_revision != 0:
        kvs = [kv for kv in kvs if kv.create_revision >= req.min_create_revision]
    if sort_order != _RR.NONE:
        sort_key = _SORT_KEYS.get(req.sort_target, _SORT_KEYS[_RR.KEY])
        kvs = go_sorted(kvs, sort_key, descending=sort_order == _RR.DESCEND)
    if limit > 0 and len(kvs) > limit:
        kvs = kvs[:limit]
        resp.more = True
    if req.keys_only:
        for kv in kvs:
            kv.ClearField("value")
    resp.kvs.extend(kvs)
    return resp


# ---- Put and DeleteRange -----------------------------------------------------


def put(kv: KVStore, req: rpc_pb2.PutRequest, lease_exists: LeaseExists | None) -> rpc_pb2.PutResponse:
    """etcd's Put: a new revision holding req.key. The lease must exist
    (checked first); with ignore_value/ignore_lease the key must too."""
    _check_lease(req, lease_exists)
    w = kv.write()
    resp = _put(w, req)
    w.end()
    return resp


def _check_lease(req: rpc_pb2.PutRequest, lease_exists: LeaseExists | None) -> None:
    if req.lease != 0 and lease_exists is not None and not lease_exists(req.lease):
        raise ErrLeaseNotFound()


def _put(w: TxnWrite, req: rpc_pb2.PutRequest) -> rpc_pb2.PutResponse:
    value, lease = req.value, req.lease
    if req.ignore_value or req.ignore_lease:
        cur = w.get(req.key)
        if cur is None:
            raise ErrKeyNotFound()
        if req.ignore_value:
            value = cur.value
        if req.ignore_lease:
            lease = cur.lease
    prev = w.put(req.key, value, lease, want_prev=req.prev_kv)
    resp = rpc_pb2.PutResponse()
    if req.prev_kv and prev is not None:
        resp.prev_kv.CopyFrom(prev)
    resp.header.revision = w.rev
    return resp


def delete_range(kv: KVStore, req: rpc_pb2.DeleteRangeRequest) -> rpc_pb2.DeleteRangeResponse:
    """etcd's DeleteRange: one new revision for all deleted keys, none if
    nothing was deleted."""
    w = kv.write()
    resp = _delete(w, req)
    w.end()
    return resp


def _delete(w: TxnWrite, req: rpc_pb2.DeleteRangeRequest) -> rpc_pb2.DeleteRangeResponse:
    prevs = w.delete_range(KeyRange(req.key, req.range_end))
    resp = rpc_pb2.DeleteRangeResponse()
    if req.prev_kv:
        resp.prev_kvs.extend(prevs)
    resp.deleted = len(prevs)
    resp.header.revision = w.rev
    return resp


def delete_keys(kv: KVStore, keys: Iterable[bytes]) -> int:
    """Delete the given keys in one revision (a revoked lease's keys);
    returns the store's revision after."""
    w = kv.write()
    for key in keys:
        w.delete_range(KeyRange(key))
    return w.end()


# ---- Txn ---------------------------------------------------------------------


@dataclass(slots=True)
class _Plan:
    """A txn's branch, chosen by its compares against the state before the
    txn (nested txns' branches too, all decided before anything is written)."""

    succeeded: bool
    ops: Sequence[rpc_pb2.RequestOp]
    nested: dict[int, _Plan] = field(default_factory=dict)

    def walk(self) -> Iterable[rpc_pb2.RequestOp]:
        """The chosen non-txn ops, in execution order."""
        for i, op in enumerate(self.ops):
            sub = self.nested.get(i)
            if sub is not None:
                yield from sub.walk()
            else:
                yield op


class _Overlay:
    """Which keys a txn's earlier ops put or deleted, to decide whether a
    later put with ignore_value/ignore_lease will find its key."""

    def __init__(self) -> None:
        self.puts: dict[bytes, bool] = {}
        self.deleted: list[KeyRange] = []

    def put(self, key: bytes) -> None:
        self.puts[key] = True

    def delete(self, kr: KeyRange) -> None:
        for k in self.puts:
            if kr.contains(k):
                self.puts[k] = False
        self.deleted.append(kr)

    def exists(self, key: bytes, before: bool) -> bool:
        if key in self.puts:
            return self.puts[key]
        if any(kr.contains(key) for kr in self.deleted):
            return False
        return before


def txn(kv: KVStore, req: rpc_pb2.TxnRequest, lease_exists: LeaseExists | None) -> rpc_pb2.TxnResponse:
    """etcd's Txn: compares (all against the state before the txn, nested
    ones included) choose the branches; then every check; then the ops in
    order, all writes sharing one new revision."""
    stats.MVCC.txn += 1
    plan = _plan(kv, req)
    if not txn_ops.is_read_only(req):
        _check_puts(kv, plan, lease_exists)
    _check_ranges(kv, plan)
    w = kv.write()
    resp = rpc_pb2.TxnResponse()
    _apply(w, plan, resp)
    resp.header.revision = w.rev
    w.end()
    return resp


def _plan(kv: KVStore, t: rpc_pb2.TxnRequest) -> _Plan:
    ok = all(_compare(kv, c) for c in t.compare)
    ops = t.success if ok else t.failure
    plan = _Plan(ok, ops)
    for i, op in enumerate(ops):
        if op.WhichOneof("request") == "request_txn":
            plan.nested[i] = _plan(kv, op.request_txn)
    return plan


def _compare(kv: KVStore, c: rpc_pb2.Compare) -> bool:
    """etcd's compare: every key of the range must satisfy it; no key at
    all compares a zero KeyValue, except that a value compare fails."""
    target = c.target
    name = _COMPARE_FIELD.get(target)
    # the operand is read only from the oneof member matching the target;
    # anything else counts as zero (or empty bytes)
    operand: Any = b"" if target == _C.VALUE else 0
    if name is not None and c.WhichOneof("target_union") == name:
        operand = getattr(c, name)
    kr = KeyRange(c.key, c.range_end)
    if target in (_C.VALUE, _C.LEASE):
        # these need the stored values; the others the index alone
        have: list[Any] = [getattr(x, name or "value") for x in kv.range(kr).kvs()]
    else:
        revisions = kv.key_revisions(kr)
        if target == _C.VERSION:
            have = [r.version for r in revisions]
        elif target == _C.CREATE:
            have = [r.create_revision for r in revisions]
        elif target == _C.MOD:
            have = [r.mod_revision for r in revisions]
        else:
            have = [0 for _ in revisions]
            operand = 0
    if not have:
        if target == _C.VALUE:
            return False  # a missing key has no value to compare, not b""
        return _compare_result(c, 0, operand if name is not None else 0)
    return all(_compare_result(c, x, operand) for x in have)


def _compare_result(c: rpc_pb2.Compare, have: Any, want: Any) -> bool:
    r = (have > want) - (have < want)
    result = c.result
    if result == _C.EQUAL:
        return r == 0
    if result == _C.NOT_EQUAL:
        return r != 0
    if result == _C.GREATER:
        return r > 0
    if result == _C.LESS:
        return r < 0
    return True


def _check_puts(kv: KVStore, plan: _Plan, lease_exists: LeaseExists | None) -> None:
    """etcd's put checks for the chosen ops, in order, before any write."""
    overlay = _Overlay()
    for op in plan.walk():
        which = op.WhichOneof("request")
        if which == "request_put":
            p = op.request_put
            if p.ignore_value or p.ignore_lease:
                before = kv.exists(p.key)
                # etcd checks the state before the txn; a key that an
                # earlier op of the txn deleted would only fail later
                if not before or not overlay.exists(p.key, before):
                    raise ErrKeyNotFound()
            _check_lease(p, lease_exists)
            overlay.put(p.key)
        elif which == "request_delete_range":
            d = op.request_delete_range
            overlay.delete(KeyRange(d.key, d.range_end))


def _check_ranges(kv: KVStore, plan: _Plan) -> None:
    """etcd's checkRequestRange: a range at a revision the store cannot
    read fails the whole txn before anything is written."""
    for op in plan.walk():
        if op.WhichOneof("request") == "request_range":
            rev = op.request_range.revision
            if rev == 0:
                continue
            if rev > kv.rev:
                raise ErrFutureRev()
            if rev < kv.first_rev:
                raise ErrCompacted()


def _apply(w: TxnWrite, plan: _Plan, resp: rpc_pb2.TxnResponse) -> None:
    resp.succeeded = plan.succeeded
    for i, op in enumerate(plan.ops):
        out = resp.responses.add()
        which = op.WhichOneof("request")
        if which == "request_range":
            out.response_range.CopyFrom(_range(w, op.request_range))
        elif which == "request_put":
            out.response_put.CopyFrom(_put(w, op.request_put))
        elif which == "request_delete_range":
            out.response_delete_range.CopyFrom(_delete(w, op.request_delete_range))
        elif which == "request_txn":
            sub = out.response_txn
            sub.header.SetInParent()  # etcd leaves a nested txn's header empty
            _apply(w, plan.nested[i], sub)

