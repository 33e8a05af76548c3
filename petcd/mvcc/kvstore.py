"""The revisioned key-value store: etcd 3.4's KV semantics on the backend.

What it is for: the applier hands it every committed Range, Put,
DeleteRange, Txn and Compaction; it answers exactly as etcd 3.4 does, field
by field (revisions, versions, counts, ``more``, sort orders, txn
sub-response headers, errors), and tells ``on_events`` what each write
changed, for the watchable store and the lessor.

Storage (etcd's layout, so hashes agree with etcd's): the "key" bucket maps
a revision's 17 bytes (18 with the tombstone mark) to the serialized
KeyValue written at that revision (a tombstone stores only the key); the
"meta" bucket holds the scheduled and finished compaction revisions.
Values live only in the backend; the in-memory :class:`Index` says which
revision to read, so a read costs one backend lookup per key returned.

Guarantees:

- Every write op either happens whole or not at all: all checks (leases,
  ignore_value/ignore_lease, txn range revisions) run before the first
  write, so a failing request leaves no trace.
- A write op that changes something takes exactly one new revision; the
  changes inside it are numbered 0, 1, 2... (sub-revisions).
- After a restart the store rebuilds the same index, revision and compact
  revision from the backend alone, and finishes a compaction that was
  scheduled but not finished.
- A compaction marks its revision at once (reads below it fail at once) and
  removes old revisions in steps (:class:`Compaction`), so writes may run
  between steps; reads at or above the compact revision answer the same
  before, during and after it.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from petcd import stats
from petcd.mvcc import revision as revs
from petcd.mvcc.errors import ErrCompacted, ErrCorruptStore, ErrFutureRev, ErrKeyNotFound, ErrLeaseNotFound
from petcd.mvcc.key_index import Found, Index, KeyIndex
from petcd.mvcc.revision import SUB_BITS
from petcd.proto import kv_pb2, rpc_pb2
from petcd.storage.backend import Backend

KEY_BUCKET = "key"
META_BUCKET = "meta"
SCHEDULED_COMPACT_KEY = b"scheduledCompactRev"
FINISHED_COMPACT_KEY = b"finishedCompactRev"

KeyValue = kv_pb2.KeyValue
Event = kv_pb2.Event
PUT = kv_pb2.Event.PUT
DELETE = kv_pb2.Event.DELETE

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

EventsCallback = Callable[[list[kv_pb2.Event], int], None]


# ---- helpers ---------------------------------------------------------------


def _span(key: bytes, range_end: bytes) -> tuple[bool, bytes | None]:
    """etcd's reading of (key, range_end): (single key?, end) where end None
    means "every key from key on" (range_end b"\\0")."""
    if not range_end:
        return True, None
    if range_end == b"\0":
        return False, None
    return False, range_end


def _kv_key(raw: bytes) -> bytes:
    """The key of a serialized KeyValue, without parsing the rest (the key
    is field 1, serialized first)."""
    if raw[:1] == b"\x0a":
        n = 0
        shift = 0
        i = 1
        while True:
            b = raw[i]
            n |= (b & 0x7F) << shift
            i += 1
            if b < 0x80:
                break
            shift += 7
        return raw[i : i + n]
    return bytes(KeyValue.FromString(raw).key)


def _make_crc32c() -> Callable[[bytes, int], int]:
    """crc32 with the Castagnoli polynomial (etcd's hash), from an installed
    native module when there is one, else in pure Python."""
    try:
        import google_crc32c  # type: ignore[import-not-found]

        return lambda data, crc: int(google_crc32c.extend(crc, data))
    except ImportError:
        pass
    try:
        import crc32c  # type: ignore[import-not-found]

        return lambda data, crc: int(crc32c.crc32c(data, crc))
    except ImportError:
        pass
    # slicing-by-8: eight tables, one 8-byte word per step (about 1.4x a
    # byte at a time; a native module is ~100x faster still)
    poly = 0x82F63B78
    t0 = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ poly if c & 1 else c >> 1
        t0.append(c)
    tables = [t0]
    for _ in range(7):
        prev = tables[-1]
        tables.append([(prev[i] >> 8) ^ t0[prev[i] & 0xFF] for i in range(256)])
    t1, t2, t3, t4, t5, t6, t7 = tables[1:]

    def crc32c_py(data: bytes, crc: int) -> int:
        c = crc ^ 0xFFFFFFFF
        n = len(data)
        m = n - n % 8
        if m:
            for (w,) in struct.iter_unpack("<Q", memoryview(data)[:m]):
                w ^= c
                c = (
                    t7[w & 0xFF]
                    ^ t6[(w >> 8) & 0xFF]
                    ^ t5[(w >> 16) & 0xFF]
                    ^ t4[(w >> 24) & 0xFF]
                    ^ t3[(w >> 32) & 0xFF]
                    ^ t2[(w >> 40) & 0xFF]
                    ^ t1[(w >> 48) & 0xFF]
                    ^ t0[w >> 56]
                )
        for b in data[m:]:
            c = t0[(c ^ b) & 0xFF] ^ (c >> 8)
        return c ^ 0xFFFFFFFF

    return crc32c_py


crc32c: Callable[[bytes, int], int] = _make_crc32c()


def _has_writes(t: rpc_pb2.TxnRequest) -> bool:
    """Whether either branch of t (nested txns included) holds a put or a delete."""
    for op in (*t.success, *t.failure):
        which = op.WhichOneof("request")
        if which in ("request_put", "request_delete_range"):
            return True
        if which == "request_txn" and _has_writes(op.request_txn):
            return True
    return False


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


class _Write:
    """One write op in progress: the revision it started at and the events
    (one per change) it made so far."""

    __slots__ = ("begin", "events")

    def __init__(self, begin: int) -> None:
        self.begin = begin
        self.events: list[kv_pb2.Event] = []

    @property
    def rev(self) -> int:
        """The revision reads inside this op see."""
        return self.begin + 1 if self.events else self.begin


class _Overlay:
    """Which keys a txn's earlier ops put or deleted, to decide whether a
    later put with ignore_value/ignore_lease will find its key."""

    def __init__(self) -> None:
        self.puts: dict[bytes, bool] = {}
        self.deleted: list[tuple[bytes, bool, bytes | None]] = []

    def put(self, key: bytes) -> None:
        self.puts[key] = True

    def delete(self, key: bytes, single: bool, end: bytes | None) -> None:
        for k in self.puts:
            if _covers(key, single, end, k):
                self.puts[k] = False
        self.deleted.append((key, single, end))

    def exists(self, key: bytes, before: bool) -> bool:
        if key in self.puts:
            return self.puts[key]
        if any(_covers(k, s, e, key) for k, s, e in self.deleted):
            return False
        return before


def _covers(key: bytes, single: bool, end: bytes | None, k: bytes) -> bool:
    if single:
        return k == key
    return k >= key and (end is None or k < end)


# ---- the store -------------------------------------------------------------


class KVStore:
    """etcd's mvcc store (see the module docstring)."""

    def __init__(self, backend: Backend, *, lease_exists: Callable[[int], bool] | None = None) -> None:
        self.backend = backend
        self.lease_exists = lease_exists
        self.on_events: EventsCallback | None = None
        self.index = Index()
        self.rev = 1
        # etcd's compactMainRev: -1 until the first compaction (etcd accepts
        # a first compaction at revision 0 and reports -1 in HashKV before).
        self._compact_main = -1
        self._compaction: Compaction | None = None
        self._restore()

    @property
    def compact_rev(self) -> int:
        """The revision of the latest compaction; 0 when never compacted."""
        return max(self._compact_main, 0)

    # ---- restore -------------------------------------------------------

    def _meta_rev(self, name: bytes) -> int | None:
        raw = self.backend.get(META_BUCKET, name)
        return revs.from_bytes(raw)[0] if raw else None

    def _restore(self) -> None:
        finished = self._meta_rev(FINISHED_COMPACT_KEY)
        scheduled = self._meta_rev(SCHEDULED_COMPACT_KEY)
        if finished is not None:
            self._compact_main = finished
        kis: dict[bytes, KeyIndex] = {}
        last = 1
        for k, v in self.backend.range(KEY_BUCKET, revs.to_bytes(1, 0), None):
            main, sub = revs.from_bytes(k)
            rev = main << SUB_BITS | sub
            last = main
            key = _kv_key(v)
            ki = kis.get(key)
            if ki is not None:
                if revs.is_tombstone(k):
                    ki.tombstone(rev)
                else:
                    ki.put(rev)
            elif not revs.is_tombstone(k):
                kv = KeyValue.FromString(v)
                ki = kis[key] = KeyIndex()
                ki.restore(kv.create_revision << SUB_BITS, rev, kv.version)
            # a tombstone of a key with no put before it: its history was
            # compacted away; nothing to index
        self.index.load(kis)
        self.rev = max(last, self._compact_main)
        if scheduled is not None and scheduled > 0 and scheduled > self._compact_main:
            # an unfinished compaction may already have removed the newest
            # revisions it covers; the store was at least at its revision
            self.rev = max(self.rev, scheduled)
            job = self.compact(scheduled)
            while not job.step(10_000):
                pass

    # ---- reads -----------------------------------------------------------

    def _read(self, rev: int) -> kv_pb2.KeyValue:
        raw = self.backend.get(KEY_BUCKET, revs.encoded_to_bytes(rev))
        if raw is None:
            raise ErrCorruptStore(
                f"mvcc: revision {rev >> SUB_BITS}_{rev & revs.SUB_MASK} missing from the backend"
            )
        return KeyValue.FromString(raw)

    def _raw(self, rev: int) -> bytes:
        raw = self.backend.get(KEY_BUCKET, revs.encoded_to_bytes(rev))
        if raw is None:
            raise ErrCorruptStore(
                f"mvcc: revision {rev >> SUB_BITS}_{rev & revs.SUB_MASK} missing from the backend"
            )
        return raw

    def _find(
        self, key: bytes, range_end: bytes, at: int, latest: bool, limit: int = 0
    ) -> tuple[list[tuple[bytes, Found]], int]:
        """Keys of (key, range_end) that exist at main revision `at` (the
        latest state when `latest`), at most limit (0: all), and the total."""
        single, end = _span(key, range_end)
        if single:
            found = self.index.latest(key) if latest else self.index.get(key, at)
            return ([(key, found)], 1) if found is not None else ([], 0)
        if latest:
            return self.index.range_latest(key, end, limit)
        return self.index.range_at(key, end, at, limit)

    def range(self, req: rpc_pb2.RangeRequest) -> rpc_pb2.RangeResponse:
        """etcd's Range at the current revision (or req.revision)."""
        return self._range(req, self.rev)

    def _range(self, req: rpc_pb2.RangeRequest, cur: int) -> rpc_pb2.RangeResponse:
        stats.MVCC.range += 1
        rev = req.revision
        if rev > cur:
            raise ErrFutureRev()
        if rev <= 0:
            rev = cur
        if rev < self._compact_main:
            raise ErrCompacted()
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
        found, count = self._find(req.key, req.range_end, rev, rev == cur, 1 if req.count_only else fetch)
        resp = rpc_pb2.RangeResponse()
        resp.header.revision = cur
        resp.count = count
        if req.count_only or not found:
            return resp
        if not filtered and sort_order == _RR.NONE:
            # the common case: parse each stored value straight into the response
            n = len(found)
            if limit > 0 and n > limit:
                n = limit
                resp.more = True
            for _, f in found[:n]:
                kv = resp.kvs.add()
                kv.ParseFromString(self._raw(f[0]))
                if req.keys_only:
                    kv.ClearField("value")
            return resp
        kvs = [self._read(f[0]) for _, f in found]
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
            kvs = go_sort(kvs, sort_key, descending=sort_order == _RR.DESCEND)
        if limit > 0 and len(kvs) > limit:
            kvs = kvs[:limit]
            resp.more = True
        if req.keys_only:
            for kv in kvs:
                kv.ClearField("value")
        resp.kvs.extend(kvs)
        return resp

    # ---- writes ----------------------------------------------------------

    def _finish(self, w: _Write) -> None:
        if not w.events:
            return
        self.rev = w.begin + 1
        if self.on_events is not None:
            self.on_events(w.events, self.rev)

    def _write_put(
        self, w: _Write, key: bytes, value: bytes, lease: int, prev: kv_pb2.KeyValue | None
    ) -> None:
        main = w.begin + 1
        sub = len(w.events)
        kv = KeyValue(key=key, value=value, mod_revision=main, lease=lease)
        if prev is not None:
            kv.create_revision = prev.create_revision
            kv.version = prev.version + 1
        else:
            kv.create_revision = main
            kv.version = 1
        self.backend.put(KEY_BUCKET, revs.to_bytes(main, sub), kv.SerializeToString())
        self.index.put(key, main << SUB_BITS | sub)
        ev = Event(type=PUT, kv=kv)
        if kv.create_revision != main:  # like etcd's watch, a creation has no prev_kv
            before = self._before(w, key, prev)
            if before is not None:
                ev.prev_kv.CopyFrom(before)
        w.events.append(ev)

    def _before(self, w: _Write, key: bytes, prev: kv_pb2.KeyValue | None) -> kv_pb2.KeyValue | None:
        """The key as of the revision before this write op (what etcd's watch
        reports as an event's prev_kv), given its latest kv `prev`."""
        if prev is None or prev.mod_revision <= w.begin:
            return prev
        found = self.index.get(key, w.begin)  # written earlier in this txn
        return self._read(found[0]) if found is not None else None

    def _write_delete(self, w: _Write, key: bytes, prev: kv_pb2.KeyValue) -> None:
        main = w.begin + 1
        sub = len(w.events)
        # etcd stores a tombstone as a KeyValue holding only the key
        self.backend.put(KEY_BUCKET, revs.to_bytes(main, sub, True), KeyValue(key=key).SerializeToString())
        self.index.tombstone(key, main << SUB_BITS | sub)
        ev = Event(type=DELETE, kv=KeyValue(key=key, mod_revision=main))
        before = self._before(w, key, prev)
        if before is not None:
            ev.prev_kv.CopyFrom(before)
        w.events.append(ev)

    def put(self, req: rpc_pb2.PutRequest) -> rpc_pb2.PutResponse:
        """etcd's Put: a new revision holding req.key."""
        if req.lease != 0 and self.lease_exists is not None and not self.lease_exists(req.lease):
            raise ErrLeaseNotFound()
        w = _Write(self.rev)
        resp = self._put(w, req)
        self._finish(w)
        return resp

    def _put(self, w: _Write, req: rpc_pb2.PutRequest) -> rpc_pb2.PutResponse:
        stats.MVCC.put += 1
        cur = self.index.latest(req.key)
        prev = self._read(cur[0]) if cur is not None else None
        if (req.ignore_value or req.ignore_lease) and prev is None:
            raise ErrKeyNotFound()
        value = prev.value if req.ignore_value and prev is not None else req.value
        lease = prev.lease if req.ignore_lease and prev is not None else req.lease
        resp = rpc_pb2.PutResponse()
        if req.prev_kv and prev is not None:
            resp.prev_kv.CopyFrom(prev)
        self._write_put(w, req.key, value, lease, prev)
        resp.header.revision = w.begin + 1
        return resp

    def delete_range(self, req: rpc_pb2.DeleteRangeRequest) -> rpc_pb2.DeleteRangeResponse:
        """etcd's DeleteRange: one new revision for all deleted keys, none if
        nothing was deleted."""
        w = _Write(self.rev)
        resp = self._delete(w, req)
        self._finish(w)
        return resp

    def _delete(self, w: _Write, req: rpc_pb2.DeleteRangeRequest) -> rpc_pb2.DeleteRangeResponse:
        stats.MVCC.delete += 1
        found, _ = self._find(req.key, req.range_end, w.rev, True)
        resp = rpc_pb2.DeleteRangeResponse()
        prevs = [self._read(f[0]) for _, f in found]
        if req.prev_kv:
            resp.prev_kvs.extend(prevs)
        for (key, _), prev in zip(found, prevs, strict=True):
            self._write_delete(w, key, prev)
        resp.deleted = len(found)
        resp.header.revision = w.rev
        return resp

    # ---- txn -------------------------------------------------------------

    def txn(self, req: rpc_pb2.TxnRequest) -> rpc_pb2.TxnResponse:
        """etcd's Txn: compares (all against the state before the txn, nested
        ones included) choose the branches; then every check; then the ops
        in order, all writes sharing one new revision."""
        stats.MVCC.txn += 1
        plan = self._plan(req)
        if _has_writes(req):
            self._check_puts(plan)
        self._check_ranges(plan)
        w = _Write(self.rev)
        resp = rpc_pb2.TxnResponse()
        self._apply(w, plan, resp)
        resp.header.revision = w.rev
        self._finish(w)
        return resp

    def _plan(self, t: rpc_pb2.TxnRequest) -> _Plan:
        ok = all(self._compare(c) for c in t.compare)
        ops = t.success if ok else t.failure
        plan = _Plan(ok, ops)
        for i, op in enumerate(ops):
            if op.WhichOneof("request") == "request_txn":
                plan.nested[i] = self._plan(op.request_txn)
        return plan

    def _compare(self, c: rpc_pb2.Compare) -> bool:
        """etcd's compare: every key of the range must satisfy it; no key at
        all compares a zero KeyValue, except that a value compare fails."""
        target = c.target
        name = _COMPARE_FIELD.get(target)
        # the operand is read only from the oneof member matching the
        # target; anything else counts as zero (or empty bytes)
        operand: Any = b"" if target == _C.VALUE else 0
        if name is not None and c.WhichOneof("target_union") == name:
            operand = getattr(c, name)
        found, _ = self._find(c.key, c.range_end, self.rev, True)
        if not found:
            if target == _C.VALUE:
                return False  # a missing key has no value to compare, not b""
            return _compare_result(c, 0, operand) if name is not None else _compare_result(c, 0, 0)
        for _, (rev, created, ver) in found:
            if target == _C.VERSION:
                ok = _compare_result(c, ver, operand)
            elif target == _C.CREATE:
                ok = _compare_result(c, created >> SUB_BITS, operand)
            elif target == _C.MOD:
                ok = _compare_result(c, rev >> SUB_BITS, operand)
            elif target == _C.VALUE:
                ok = _compare_result(c, self._read(rev).value, operand)
            elif target == _C.LEASE:
                ok = _compare_result(c, self._read(rev).lease, operand)
            else:
                ok = _compare_result(c, 0, 0)
            if not ok:
                return False
        return True

    def _check_puts(self, plan: _Plan) -> None:
        """etcd's put checks for the chosen ops, in order, before any write."""
        overlay = _Overlay()
        for op in plan.walk():
            which = op.WhichOneof("request")
            if which == "request_put":
                p = op.request_put
                if p.ignore_value or p.ignore_lease:
                    before = self.index.latest(p.key) is not None
                    # etcd checks the state before the txn; a key that an
                    # earlier op of the txn deleted would only fail later
                    if not before or not overlay.exists(p.key, before):
                        raise ErrKeyNotFound()
                if p.lease != 0 and self.lease_exists is not None and not self.lease_exists(p.lease):
                    raise ErrLeaseNotFound()
                overlay.put(p.key)
            elif which == "request_delete_range":
                d = op.request_delete_range
                single, end = _span(d.key, d.range_end)
                overlay.delete(d.key, single, end)

    def _check_ranges(self, plan: _Plan) -> None:
        for op in plan.walk():
            if op.WhichOneof("request") == "request_range":
                rev = op.request_range.revision
                if rev == 0:
                    continue
                if rev > self.rev:
                    raise ErrFutureRev()
                if rev < self._compact_main:
                    raise ErrCompacted()

    def _apply(self, w: _Write, plan: _Plan, resp: rpc_pb2.TxnResponse) -> None:
        resp.succeeded = plan.succeeded
        for i, op in enumerate(plan.ops):
            out = resp.responses.add()
            which = op.WhichOneof("request")
            if which == "request_range":
                out.response_range.CopyFrom(self._range(op.request_range, w.rev))
            elif which == "request_put":
                out.response_put.CopyFrom(self._put(w, op.request_put))
            elif which == "request_delete_range":
                out.response_delete_range.CopyFrom(self._delete(w, op.request_delete_range))
            elif which == "request_txn":
                sub = out.response_txn
                sub.header.SetInParent()  # etcd leaves a nested txn's header empty
                self._apply(w, plan.nested[i], sub)

    # ---- compaction ------------------------------------------------------

    def compact(self, rev: int) -> Compaction:
        """Compact history at rev: reads below rev fail from now on; the
        returned job removes the old revisions, step by step."""
        if rev <= self._compact_main:
            raise ErrCompacted()
        if rev > self.rev:
            raise ErrFutureRev()
        self._compact_main = rev
        self.backend.put(META_BUCKET, SCHEDULED_COMPACT_KEY, revs.to_bytes(rev, 0))
        job = Compaction(self, rev)
        self._compaction = job
        return job

    # ---- hashes ----------------------------------------------------------

    def hash(self) -> int:
        """The backend's hash (every bucket)."""
        return self.backend.hash()

    def hash_kv(self, rev: int) -> tuple[int, int, int]:
        """etcd's HashKV: crc32c over the "key" bucket's revisions up to rev
        (0: current) that survive compaction, the revision hashed and the
        compact revision (-1 when never compacted, as etcd reports).
        The same store state gives the same hash whether or not a
        compaction is still removing revisions."""
        compact = self._compact_main
        cur = self.rev
        if rev > 0 and rev <= compact:
            raise ErrCompacted()
        if rev > 0 and rev > cur:
            raise ErrFutureRev()
        if rev == 0:
            rev = cur
        keep = self.index.keep(rev)
        h = crc32c(KEY_BUCKET.encode(), 0)
        if rev < 0:
            return h, rev, compact
        for k, v in self.backend.range(KEY_BUCKET, b"", revs.to_bytes(rev + 1, 0)):
            main, sub = revs.from_bytes(k)
            if main <= compact and keep and (main << SUB_BITS | sub) not in keep:
                continue  # removed (or about to be) by compaction
            h = crc32c(k, h)
            h = crc32c(v, h)
        return h, rev, compact

    # ---- history (for watchers) --------------------------------------------

    def events(
        self, start_rev: int, end_rev: int, key: bytes, end: bytes, prev_kv: bool
    ) -> list[kv_pb2.Event]:
        """The events of revisions [start_rev, end_rev) on keys in [key, end)
        (end b"": key alone; b"\\0": every key from key on), in revision
        order; with prev_kv, each carries the key's previous value when it
        existed."""
        return list(self.iter_events(start_rev, end_rev, key, end, prev_kv))

    def iter_events(
        self, start_rev: int, end_rev: int, key: bytes, end: bytes, prev_kv: bool
    ) -> Iterator[kv_pb2.Event]:
        """events(), read as they are taken: a caller may stop early (the
        watch store stops after a byte budget)."""
        if end_rev <= start_rev:
            return
        single, stop = _span(key, end)
        for k, v in self.backend.range(
            KEY_BUCKET, revs.to_bytes(max(start_rev, 0), 0), revs.to_bytes(end_rev, 0)
        ):
            kkey = _kv_key(v)
            if not _covers(key, single, stop, kkey):
                continue
            main = revs.from_bytes(k)[0]
            kv = KeyValue.FromString(v)
            if revs.is_tombstone(k):
                kv.mod_revision = main  # tombstones store only the key
                ev = Event(type=DELETE, kv=kv)
            else:
                ev = Event(type=PUT, kv=kv)
            if prev_kv and not (ev.type == PUT and kv.create_revision == main):
                found = self.index.get(kkey, main - 1)
                if found is not None:
                    ev.prev_kv.CopyFrom(self._read(found[0]))
            yield ev


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


def go_sort(items: list[Any], key: Callable[[Any], Any], descending: bool) -> list[Any]:
    """items sorted by key, in exactly the order etcd's Go sort.Sort
    (pattern-defeating quicksort, not stable) leaves them, so that equal
    sort keys come out in etcd's order too. With all keys distinct every
    sort agrees, and Python's sort is used."""
    keys = [key(it) for it in items]
    if len(set(keys)) == len(keys):
        return sorted(items, key=key, reverse=descending)
    order = _GoSorter(keys, descending).sort()
    return [items[i] for i in order]


class _GoSorter:
    """Go 1.19's sort.Sort over a list of sort keys (descending: through
    sort.Reverse), tracking where each original position ends up. The
    algorithm's every comparison and swap is reproduced, since with equal
    keys the outcome depends on them."""

    _MAX_INSERTION = 12

    def __init__(self, keys: list[Any], descending: bool) -> None:
        self.k = keys
        self.p = list(range(len(keys)))
        self.desc = descending

    def less(self, i: int, j: int) -> bool:
        k = self.k
        return bool(k[j] < k[i]) if self.desc else bool(k[i] < k[j])

    def swap(self, i: int, j: int) -> None:
        k, p = self.k, self.p
        k[i], k[j] = k[j], k[i]
        p[i], p[j] = p[j], p[i]

    def sort(self) -> list[int]:
        n = len(self.k)
        if n > 1:
            self._pdqsort(0, n, n.bit_length())
        return self.p

    def _insertion(self, a: int, b: int) -> None:
        for i in range(a + 1, b):
            j = i
            while j > a and self.less(j, j - 1):
                self.swap(j, j - 1)
                j -= 1

    def _sift_down(self, lo: int, hi: int, first: int) -> None:
        root = lo
        while True:
            child = 2 * root + 1
            if child >= hi:
                return
            if child + 1 < hi and self.less(first + child, first + child + 1):
                child += 1
            if not self.less(first + root, first + child):
                return
            self.swap(first + root, first + child)
            root = child

    def _heap(self, a: int, b: int) -> None:
        first, hi = a, b - a
        for i in range((hi - 1) // 2, -1, -1):
            self._sift_down(i, hi, first)
        for i in range(hi - 1, -1, -1):
            self.swap(first, first + i)
            self._sift_down(0, i, first)

    def _pdqsort(self, a: int, b: int, limit: int) -> None:
        was_balanced = True
        was_partitioned = True
        while True:
            length = b - a
            if length <= self._MAX_INSERTION:
                self._insertion(a, b)
                return
            if limit == 0:
                self._heap(a, b)
                return
            if not was_balanced:
                self._break_patterns(a, b)
                limit -= 1
            pivot, hint = self._choose_pivot(a, b)
            if hint == _DECREASING:
                self._reverse(a, b)
                pivot = (b - 1) - (pivot - a)
                hint = _INCREASING
            if was_balanced and was_partitioned and hint == _INCREASING:
                if self._partial_insertion(a, b):
                    return
            if a > 0 and not self.less(a - 1, pivot):
                a = self._partition_equal(a, b, pivot)
                continue
            mid, already = self._partition(a, b, pivot)
            was_partitioned = already
            left, right = mid - a, b - mid
            threshold = length // 8
            if left < right:
                was_balanced = left >= threshold
                self._pdqsort(a, mid, limit)
                a = mid + 1
            else:
                was_balanced = right >= threshold
                self._pdqsort(mid + 1, b, limit)
                b = mid

    def _partition(self, a: int, b: int, pivot: int) -> tuple[int, bool]:
        self.swap(a, pivot)
        i, j = a + 1, b - 1
        while i <= j and self.less(i, a):
            i += 1
        while i <= j and not self.less(j, a):
            j -= 1
        if i > j:
            self.swap(j, a)
            return j, True
        self.swap(i, j)
        i += 1
        j -= 1
        while True:
            while i <= j and self.less(i, a):
                i += 1
            while i <= j and not self.less(j, a):
                j -= 1
            if i > j:
                break
            self.swap(i, j)
            i += 1
            j -= 1
        self.swap(j, a)
        return j, False

    def _partition_equal(self, a: int, b: int, pivot: int) -> int:
        self.swap(a, pivot)
        i, j = a + 1, b - 1
        while True:
            while i <= j and not self.less(a, i):
                i += 1
            while i <= j and self.less(a, j):
                j -= 1
            if i > j:
                break
            self.swap(i, j)
            i += 1
            j -= 1
        return i

    def _partial_insertion(self, a: int, b: int) -> bool:
        max_steps, shortest_shifting = 5, 50
        i = a + 1
        for _ in range(max_steps):
            while i < b and not self.less(i, i - 1):
                i += 1
            if i == b:
                return True
            if b - a < shortest_shifting:
                return False
            self.swap(i, i - 1)
            if i - a >= 2:
                j = i - 1
                while j >= 1:
                    if not self.less(j, j - 1):
                        break
                    self.swap(j, j - 1)
                    j -= 1
            if b - i >= 2:
                j = i + 1
                while j < b:
                    if not self.less(j, j - 1):
                        break
                    self.swap(j, j - 1)
                    j += 1
        return False

    def _break_patterns(self, a: int, b: int) -> None:
        length = b - a
        if length >= 8:
            r = length
            modulus = 1 << length.bit_length()
            idx = a + (length // 4) * 2 - 1
            for i in range(3):
                r ^= (r << 13) & _U64  # Go 1.19's xorshift (later Go versions changed the shifts)
                r ^= r >> 17
                r ^= (r << 5) & _U64
                other = r & (modulus - 1)
                if other >= length:
                    other -= length
                self.swap(idx + i, a + other)

    def _choose_pivot(self, a: int, b: int) -> tuple[int, int]:
        n = b - a
        swaps = [0]
        i, j, k = a + n // 4 * 1, a + n // 4 * 2, a + n // 4 * 3
        if n >= 8:
            if n >= 50:
                i = self._median(i - 1, i, i + 1, swaps)
                j = self._median(j - 1, j, j + 1, swaps)
                k = self._median(k - 1, k, k + 1, swaps)
            j = self._median(i, j, k, swaps)
        if swaps[0] == 0:
            return j, _INCREASING
        if swaps[0] == 12:
            return j, _DECREASING
        return j, _UNKNOWN

    def _order2(self, a: int, b: int, swaps: list[int]) -> tuple[int, int]:
        if self.less(b, a):
            swaps[0] += 1
            return b, a
        return a, b

    def _median(self, a: int, b: int, c: int, swaps: list[int]) -> int:
        a, b = self._order2(a, b, swaps)
        b, c = self._order2(b, c, swaps)
        a, b = self._order2(a, b, swaps)
        return b

    def _reverse(self, a: int, b: int) -> None:
        i, j = a, b - 1
        while i < j:
            self.swap(i, j)
            i += 1
            j -= 1


_U64 = (1 << 64) - 1
_UNKNOWN, _INCREASING, _DECREASING = 0, 1, 2


class Compaction:
    """The physical part of a compaction: removes, a few keys at a time,
    the revisions <= rev that no read at or above rev needs, from the index
    and the backend; then records the compaction as finished.

    Safe to interleave with writes (they only add revisions above rev). A
    job overtaken by a later compaction stops: the later one visits every
    key."""

    def __init__(self, store: KVStore, rev: int) -> None:
        self.store = store
        self.rev = rev
        self.done = False
        self._after: bytes | None = None

    def step(self, n: int) -> bool:
        """Compact up to n keys; True once the compaction is finished."""
        if self.done:
            return True
        store = self.store
        if store._compaction is not self:
            self.done = True
            return True
        dropped, self._after, finished = store.index.compact_keys(self.rev, self._after, max(n, 1))
        backend = store.backend
        for rev, tomb in dropped:
            backend.delete(KEY_BUCKET, revs.encoded_to_bytes(rev, tomb))
        if finished:
            backend.put(META_BUCKET, FINISHED_COMPACT_KEY, revs.to_bytes(self.rev, 0))
            store._compaction = None
            self.done = True
        return self.done
