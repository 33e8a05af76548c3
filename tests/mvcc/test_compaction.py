"""Compaction: what is kept, what goes, errors, steps interleaved with writes."""

from __future__ import annotations

import random

import pytest

from petcd.mvcc.errors import ErrCompacted, ErrFutureRev
from petcd.mvcc.kvstore import FINISHED_COMPACT_KEY, KEY_BUCKET, META_BUCKET, SCHEDULED_COMPACT_KEY
from petcd.mvcc.revision import from_bytes, is_tombstone, to_bytes
from petcd.proto import rpc_pb2
from tests.mvcc.conftest import Harness, populate


def stored_revs(h: Harness) -> list[tuple[int, int, bool]]:
    return [(*from_bytes(k), is_tombstone(k)) for k, _ in h.backend.items(KEY_BUCKET)]


def snapshot(h: Harness, rev: int) -> list[rpc_pb2.RangeResponse]:
    return [h.get(b"\0", b"\0", revision=rev), h.get(b"a", b"b", revision=rev, sort_target=1, sort_order=2)]


def finish(job: object, n: int = 1000) -> None:
    while not job.step(n):  # type: ignore[attr-defined]
        pass


def test_compaction_keeps_exactly_what_reads_at_or_above_need(h: Harness) -> None:
    populate(h)  # revs: a2 b3 c4 a5 d6 d7(tomb) ab8 b9
    finish(h.kv.compact(7))
    # a keeps 5 (latest <= 7), b keeps 3 (its 9 is newer), c keeps 4;
    # d's generation ended at 7 <= 7: put and tombstone both go
    assert stored_revs(h) == [(3, 0, False), (4, 0, False), (5, 0, False), (8, 0, False), (9, 0, False)]
    assert h.kv.index.key_index(b"d") is None
    assert h.kv.compact_rev == 7


def test_tombstone_newer_than_compaction_is_kept(h: Harness) -> None:
    populate(h)
    finish(h.kv.compact(6))
    assert (6, 0, False) in stored_revs(h) and (7, 0, True) in stored_revs(h)
    assert h.keys(revision=6) == [b"a", b"b", b"c", b"d"]
    assert h.keys(revision=7) == [b"a", b"b", b"c"]


def test_reads_below_compaction_fail_at_once(h: Harness) -> None:
    populate(h)
    job = h.kv.compact(5)  # not stepped yet
    with pytest.raises(ErrCompacted):
        h.get(b"a", revision=4)
    with pytest.raises(ErrCompacted):
        h.kv.hash_kv(5)  # HashKV refuses the compact revision itself, as etcd does
    assert h.get(b"a", revision=5).kvs[0].value == b"4"
    raw = h.backend.get(META_BUCKET, SCHEDULED_COMPACT_KEY)
    assert raw is not None and from_bytes(raw) == (5, 0) and len(raw) == 17
    assert h.backend.get(META_BUCKET, FINISHED_COMPACT_KEY) is None
    finish(job)
    raw = h.backend.get(META_BUCKET, FINISHED_COMPACT_KEY)
    assert raw is not None and from_bytes(raw) == (5, 0)


def test_compact_errors(h: Harness) -> None:
    populate(h)
    with pytest.raises(ErrFutureRev):
        h.kv.compact(10)
    finish(h.kv.compact(4))
    with pytest.raises(ErrCompacted):
        h.kv.compact(4)
    with pytest.raises(ErrCompacted):
        h.kv.compact(3)
    finish(h.kv.compact(9))  # the current revision is allowed
    assert h.kv.compact_rev == 9


def test_first_compaction_at_zero_is_accepted_like_etcd(h: Harness) -> None:
    assert h.kv.hash_kv(0)[2] == -1  # etcd reports -1 before any compaction
    finish(h.kv.compact(0))
    assert h.kv.compact_rev == 0 and h.kv.hash_kv(0)[2] == 0
    with pytest.raises(ErrCompacted):
        h.kv.compact(0)


def test_version_and_create_revision_survive_compaction(h: Harness) -> None:
    populate(h)
    finish(h.kv.compact(9))
    a = h.get(b"a").kvs[0]
    assert (a.create_revision, a.version) == (2, 2)
    h.put(b"a", b"again")
    a = h.get(b"a").kvs[0]
    assert (a.create_revision, a.version, a.mod_revision) == (2, 3, 10)


def test_stepwise_compaction_with_interleaved_writes(h: Harness) -> None:
    rnd = random.Random(7)
    keys = [b"k%02d" % i for i in range(30)]
    for _ in range(300):
        k = rnd.choice(keys)
        if rnd.random() < 0.2:
            h.delete(k)
        else:
            h.put(k, b"%d" % rnd.randrange(100))
    compact_at = h.kv.rev - 50
    views = {rev: snapshot(h, rev) for rev in range(compact_at, h.kv.rev + 1)}
    job = h.kv.compact(compact_at)
    # HashKV skips what the compaction removes, however far it got
    hashes = {rev: h.kv.hash_kv(rev) for rev in range(compact_at + 1, h.kv.rev + 1)}
    steps = 0
    while not job.step(2):
        steps += 1
        # writes between steps: on compacted keys, on keys not yet visited, new keys
        k = rnd.choice(keys + [b"new%d" % steps])
        if rnd.random() < 0.3:
            h.delete(k)
        else:
            h.put(k, b"x%d" % steps)
        rev = h.kv.rev
        views[rev] = snapshot(h, rev)
        hashes[rev] = h.kv.hash_kv(rev)
    assert steps >= 10
    for rev, view in views.items():
        got = snapshot(h, rev)
        for a, b in zip(got, view, strict=True):
            a.header.revision = b.header.revision = 0
        assert got == view, rev
    for rev, hv in hashes.items():
        assert h.kv.hash_kv(rev) == hv
    # nothing at or below the compact revision is left but one revision per live key
    old = [(m, s) for m, s, _ in stored_revs(h) if m <= compact_at]
    assert len(old) == len({kv.key for kv in views[compact_at][0].kvs} & set(h.kv.index.keys()))


def test_later_compaction_overtakes_an_unfinished_one(h: Harness) -> None:
    populate(h)
    first = h.kv.compact(5)
    assert not first.step(1)
    second = h.kv.compact(8)
    assert first.step(1)  # gives way: the later job visits every key
    finish(second)
    assert from_bytes(h.backend.get(META_BUCKET, FINISHED_COMPACT_KEY) or b"")[0] == 8
    assert stored_revs(h) == [(3, 0, False), (4, 0, False), (5, 0, False), (8, 0, False), (9, 0, False)]


def test_compaction_of_everything_deleted(h: Harness) -> None:
    populate(h)
    h.delete(b"\0", b"\0")
    finish(h.kv.compact(10))
    assert stored_revs(h) == [] and len(h.kv.index) == 0
    assert h.kv.rev == 10 and h.get(b"\0", b"\0").count == 0
    h.put(b"a", b"1")
    assert h.get(b"a").kvs[0].create_revision == 11
    assert h.backend.get(KEY_BUCKET, to_bytes(11, 0)) is not None
