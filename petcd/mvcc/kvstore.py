"""The revisioned key-value store: etcd's mvcc layer on the backend.

What it is for: it keeps every key's history as revisions and answers what
the server asks in those terms: which keys of a :class:`KeyRange` exist at
a revision (with their stored values), and a write (:class:`TxnWrite`)
that puts and deletes keys under ONE new revision. What a Range, Put,
DeleteRange or Txn request means (sorting, filters, compares, lease and
ignore_value checks, response fields) is the server's business
(:mod:`petcd.server.txn`), as in etcd. Each write reports what it changed
to ``on_events``, for the watchable store and the lessor.

A put reads the key's previous value only when someone needs it: the put's
caller (``want_prev``), or ``needs_prev(key)``, which the server sets to say
whether an event's ``prev_kv`` may be used (a watcher asked for it, or a
lease may hold the key); without ``needs_prev`` it is always read. Version
and creation revision come from the index, as in etcd, so a put that needs
no previous value costs no backend read.

Storage (etcd's layout, so hashes agree with etcd's): the "key" bucket maps
a revision's 17 bytes (18 with the tombstone mark) to the serialized
KeyValue written at that revision (a tombstone stores only the key); the
"meta" bucket holds the scheduled and finished compaction revisions.
Values live only in the backend; the in-memory :class:`Index` says which
revision to read, so a read costs one backend lookup per key returned.

Guarantees:

- A write that changes something takes exactly one new revision; the
  changes inside it are numbered 0, 1, 2... (sub-revisions); reads inside
  the write see its changes so far.
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
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import NamedTuple

from petcd import stats
from petcd.mvcc import revision as revs
from petcd.mvcc.errors import ErrCompacted, ErrCorruptStore, ErrFutureRev
from petcd.mvcc.key_index import Found, Index, KeyIndex
from petcd.mvcc.key_range import KeyRange
from petcd.mvcc.revision import SUB_BITS
from petcd.proto import kv_pb2
from petcd.storage.backend import Backend

KEY_BUCKET = "key"
META_BUCKET = "meta"
SCHEDULED_COMPACT_KEY = b"scheduledCompactRev"
FINISHED_COMPACT_KEY = b"finishedCompactRev"

KeyValue = kv_pb2.KeyValue
Event = kv_pb2.Event
PUT = kv_pb2.Event.PUT
DELETE = kv_pb2.Event.DELETE

EventsCallback = Callable[[list[kv_pb2.Event], int], None]


@dataclass(slots=True)
class RangeResult:
    """What a range read found.

    ``values`` are the stored KeyValues, serialized (the wire form of
    mvccpb.KeyValue), in key order, so the caller can parse them straight
    into a response; ``kvs()`` parses them. ``count`` is how many keys the
    range holds at the revision read, however many were returned; ``rev``
    is the store's current revision as the read saw it (a response header's
    revision)."""

    values: list[bytes]
    count: int
    rev: int

    def kvs(self) -> list[kv_pb2.KeyValue]:
        return [KeyValue.FromString(v) for v in self.values]


class KeyRevision(NamedTuple):
    """A live key's revisions, from the index alone (no backend read)."""

    key: bytes
    mod_revision: int
    create_revision: int
    version: int


# ---- helpers ---------------------------------------------------------------


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


# ---- the store -------------------------------------------------------------


class KVStore:
    """etcd's mvcc store (see the module docstring)."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.on_events: EventsCallback | None = None
        # Whether a put's event must carry prev_kv for key (see the module
        # docstring); None: always.
        self.needs_prev: Callable[[bytes], bool] | None = None
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

    @property
    def first_rev(self) -> int:
        """etcd's FirstRev: the compaction revision, -1 when never
        compacted; a read at a revision below it fails as compacted."""
        return self._compact_main

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

    def _raw(self, rev: int) -> bytes:
        raw = self.backend.get(KEY_BUCKET, revs.encoded_to_bytes(rev))
        if raw is None:
            raise ErrCorruptStore(
                f"mvcc: revision {rev >> SUB_BITS}_{rev & revs.SUB_MASK} missing from the backend"
            )
        return raw

    def _read(self, rev: int) -> kv_pb2.KeyValue:
        return KeyValue.FromString(self._raw(rev))

    def _find(self, kr: KeyRange, at: int, latest: bool, limit: int = 0) -> tuple[list[tuple[bytes, Found]], int]:
        """Keys of kr that exist at main revision `at` (the latest state
        when `latest`), at most limit (0: all), and the total."""
        if kr.single:
            found = self.index.latest(kr.key) if latest else self.index.get(kr.key, at)
            return ([(kr.key, found)], 1) if found is not None else ([], 0)
        if latest:
            return self.index.range_latest(kr.key, kr.end, limit)
        return self.index.range_at(kr.key, kr.end, at, limit)

    def range(self, kr: KeyRange, *, rev: int = 0, limit: int = 0, count_only: bool = False) -> RangeResult:
        """The keys of kr as of revision rev (0 or less: the current one),
        at most limit of them (0: all); only their count with count_only.
        Raises ErrFutureRev above the current revision and ErrCompacted
        below the compaction."""
        return self._range(kr, self.rev, rev, limit, count_only)

    def _range(self, kr: KeyRange, cur: int, rev: int, limit: int, count_only: bool) -> RangeResult:
        stats.MVCC.range += 1
        if rev > cur:
            raise ErrFutureRev()
        if rev <= 0:
            rev = cur
        if rev < self._compact_main:
            raise ErrCompacted()
        found, count = self._find(kr, rev, rev == cur, 1 if count_only else limit)
        if count_only:
            return RangeResult([], count, cur)
        raw = self._raw
        return RangeResult([raw(f[0]) for _, f in found], count, cur)

    def get(self, key: bytes) -> kv_pb2.KeyValue | None:
        """The key's latest KeyValue, None when it does not exist now."""
        found = self.index.latest(key)
        return self._read(found[0]) if found is not None else None

    def exists(self, key: bytes) -> bool:
        """Whether the key exists at the current revision."""
        return self.index.latest(key) is not None

    def key_revisions(self, kr: KeyRange) -> list[KeyRevision]:
        """The live keys of kr with their revisions and versions, from the
        index alone (no value is read)."""
        found, _ = self._find(kr, self.rev, True)
        return [
            KeyRevision(key, rev >> SUB_BITS, created >> SUB_BITS, ver) for key, (rev, created, ver) in found
        ]

    # ---- writes ----------------------------------------------------------

    def write(self) -> TxnWrite:
        """A write: its puts and deletes share one new revision, taken when
        it ends (none if it changed nothing)."""
        return TxnWrite(self)

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
        """The backend's hash (every bucket); timed (etcd_mvcc_hash_duration_seconds)."""
        started = time.perf_counter()
        h = self.backend.hash()
        stats.HASH.observe(time.perf_counter() - started)
        return h

    def hash_kv(self, rev: int) -> tuple[int, int, int]:
        """etcd's HashKV: crc32c over the "key" bucket's revisions up to rev
        (0: current) that survive compaction, the revision hashed and the
        compact revision (-1 when never compacted, as etcd reports).
        The same store state gives the same hash whether or not a
        compaction is still removing revisions. A hash computed is timed
        (etcd_mvcc_hash_rev_duration_seconds); a refused revision is not."""
        started = time.perf_counter()
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
        if rev >= 0:
            for k, v in self.backend.range(KEY_BUCKET, b"", revs.to_bytes(rev + 1, 0)):
                main, sub = revs.from_bytes(k)
                if main <= compact and keep and (main << SUB_BITS | sub) not in keep:
                    continue  # removed (or about to be) by compaction
                h = crc32c(k, h)
                h = crc32c(v, h)
        stats.HASH_REV.observe(time.perf_counter() - started)
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
        kr = KeyRange(key, end)
        for k, v in self.backend.range(
            KEY_BUCKET, revs.to_bytes(max(start_rev, 0), 0), revs.to_bytes(end_rev, 0)
        ):
            kkey = _kv_key(v)
            if not kr.contains(kkey):
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


class TxnWrite:
    """One write in progress (etcd's TxnWrite): the revision it started at
    and the events (one per change) it made so far. ``end`` publishes it.

    Reads through it see its own changes; all of them carry its revision."""

    __slots__ = ("store", "begin", "events")

    def __init__(self, store: KVStore) -> None:
        self.store = store
        self.begin = store.rev
        self.events: list[kv_pb2.Event] = []

    @property
    def rev(self) -> int:
        """The revision reads inside this write see: its own once it changed something."""
        return self.begin + 1 if self.events else self.begin

    def range(self, kr: KeyRange, *, rev: int = 0, limit: int = 0, count_only: bool = False) -> RangeResult:
        """KVStore.range, as of this write's changes so far."""
        return self.store._range(kr, self.rev, rev, limit, count_only)

    def get(self, key: bytes) -> kv_pb2.KeyValue | None:
        """The key's latest KeyValue, this write's changes included."""
        return self.store.get(key)

    def put(self, key: bytes, value: bytes, lease: int, want_prev: bool = True) -> kv_pb2.KeyValue | None:
        """Write key=value (attached to lease, 0 for none) at this write's
        revision; returns the key's KeyValue before the put, None if it did
        not exist. Without want_prev the previous KeyValue is read only when
        the store's needs_prev asks for it (for the event's prev_kv), and
        None may be returned for a key that existed."""
        stats.MVCC.put += 1
        store = self.store
        cur = store.index.latest(key)
        main = self.begin + 1
        sub = len(self.events)
        kv = KeyValue(key=key, value=value, mod_revision=main, lease=lease)
        prev = None
        if cur is not None:
            # (revision, created, version) of the live key: what etcd takes
            # from its key index too
            kv.create_revision = cur[1] >> SUB_BITS
            kv.version = cur[2] + 1
            needs = store.needs_prev
            if want_prev or needs is None or needs(key):
                prev = store._read(cur[0])
        else:
            kv.create_revision = main
            kv.version = 1
        store.backend.put(KEY_BUCKET, revs.to_bytes(main, sub), kv.SerializeToString())
        store.index.put(key, main << SUB_BITS | sub)
        ev = Event(type=PUT, kv=kv)
        if kv.create_revision != main:  # like etcd's watch, a creation has no prev_kv
            before = self._before(key, prev)
            if before is not None:
                ev.prev_kv.CopyFrom(before)
        self.events.append(ev)
        return prev

    def delete_range(self, kr: KeyRange) -> list[kv_pb2.KeyValue]:
        """Delete every live key of kr at this write's revision; returns
        their KeyValues before the delete, in key order."""
        stats.MVCC.delete += 1
        store = self.store
        found, _ = store._find(kr, self.rev, True)
        prevs = [store._read(f[0]) for _, f in found]
        for (key, _), prev in zip(found, prevs, strict=True):
            self._delete(key, prev)
        return prevs

    def _delete(self, key: bytes, prev: kv_pb2.KeyValue) -> None:
        store = self.store
        main = self.begin + 1
        sub = len(self.events)
        # etcd stores a tombstone as a KeyValue holding only the key
        store.backend.put(KEY_BUCKET, revs.to_bytes(main, sub, True), KeyValue(key=key).SerializeToString())
        store.index.tombstone(key, main << SUB_BITS | sub)
        ev = Event(type=DELETE, kv=KeyValue(key=key, mod_revision=main))
        before = self._before(key, prev)
        if before is not None:
            ev.prev_kv.CopyFrom(before)
        self.events.append(ev)

    def _before(self, key: bytes, prev: kv_pb2.KeyValue | None) -> kv_pb2.KeyValue | None:
        """The key as of the revision before this write (what etcd's watch
        reports as an event's prev_kv), given its latest kv `prev`."""
        if prev is None or prev.mod_revision <= self.begin:
            return prev
        found = self.store.index.get(key, self.begin)  # written earlier in this write
        return self.store._read(found[0]) if found is not None else None

    def end(self) -> int:
        """Publish the write: the store's revision moves to this write's
        (when it changed something) and its events are reported. Returns
        the store's revision."""
        store = self.store
        if self.events:
            store.rev = self.begin + 1
            if store.on_events is not None:
                store.on_events(self.events, store.rev)
        return store.rev


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
