"""Restart: the store rebuilt from the backend alone is the same store."""

from __future__ import annotations

import random

from petcd.mvcc.kvstore import FINISHED_COMPACT_KEY, KEY_BUCKET, META_BUCKET
from petcd.mvcc.revision import from_bytes
from petcd.proto import rpc_pb2
from tests.mvcc.conftest import Harness, populate

R = rpc_pb2


def state(h: Harness) -> dict[str, object]:
    kv = h.kv
    lo = max(kv.compact_rev + 1, 1)
    return {
        "rev": kv.rev,
        "compact": kv.compact_rev,
        "hashes": {rev: kv.hash_kv(rev) for rev in range(lo, kv.rev + 1)},
        "views": {
            rev: list(h.get(b"\0", b"\0", revision=rev).kvs)
            for rev in range(max(kv.compact_rev, 1), kv.rev + 1)
        },
        "events": kv.events(lo, kv.rev + 1, b"\0", b"\0", True),
    }


def random_writes(h: Harness, rnd: random.Random, n: int) -> None:
    keys = [b"k%d" % i for i in range(12)]
    for _ in range(n):
        x = rnd.random()
        k = rnd.choice(keys)
        if x < 0.55:
            h.put(k, b"%d" % rnd.randrange(1000), lease=7 if rnd.random() < 0.2 else 0)
        elif x < 0.75:
            h.delete(k, rnd.choice([b"", b"\0", k + b"5"]))
        else:
            ops = [
                R.RequestOp(request_put=R.PutRequest(key=k, value=b"t")),
                R.RequestOp(request_delete_range=R.DeleteRangeRequest(key=rnd.choice(keys) + b"x")),
            ]
            h.txn(R.TxnRequest(success=ops))


def test_empty_store_reopens_empty(h: Harness) -> None:
    h.reopen()
    assert (h.kv.rev, h.kv.compact_rev, len(h.kv.index)) == (1, 0, 0)


def test_reopen_rebuilds_identical_state(h: Harness) -> None:
    rnd = random.Random(3)
    random_writes(h, rnd, 200)
    job = h.kv.compact(h.kv.rev - 60)
    while not job.step(5):
        pass
    random_writes(h, rnd, 40)
    before = state(h)
    h.reopen()
    assert state(h) == before
    # and it keeps working the same way after the restart
    h.put(b"k1", b"after")
    assert h.get(b"k1").kvs[0].mod_revision == before["rev"] + 1  # type: ignore[operator]


def test_reopen_without_compaction(h: Harness) -> None:
    populate(h)
    before = state(h)
    h.reopen()
    assert state(h) == before
    assert h.get(b"a").kvs[0].version == 2


def test_unfinished_compaction_is_finished_on_reopen(h: Harness) -> None:
    rnd = random.Random(5)
    random_writes(h, rnd, 150)
    compact_at = h.kv.rev - 20
    job = h.kv.compact(compact_at)
    assert not job.step(3)  # a few keys done, then "crash" (close commits the batch)
    h.put(b"late", b"1")
    expected = {rev: list(h.get(b"\0", b"\0", revision=rev).kvs) for rev in range(compact_at, h.kv.rev + 1)}
    rev = h.kv.rev
    h.reopen()
    assert h.kv.compact_rev == compact_at and h.kv.rev == rev
    raw = h.backend.get(META_BUCKET, FINISHED_COMPACT_KEY)
    assert raw is not None and from_bytes(raw)[0] == compact_at
    assert {r: list(h.get(b"\0", b"\0", revision=r).kvs) for r in expected} == expected
    old = [k for k, _ in h.backend.items(KEY_BUCKET) if from_bytes(k)[0] <= compact_at]
    assert len(old) == h.get(b"\0", b"\0", revision=compact_at).count


def test_revision_after_compacting_away_the_newest_revisions(h: Harness) -> None:
    populate(h)
    h.delete(b"\0", b"\0")  # rev 10
    job = h.kv.compact(10)
    while not job.step(100):
        pass
    h.reopen()
    assert (h.kv.rev, h.kv.compact_rev) == (10, 10)
    assert h.put(b"n").header.revision == 11


def test_reopen_keeps_versions_of_compacted_keys(h: Harness) -> None:
    for i in range(5):
        h.put(b"k", b"%d" % i)  # revs 2..6, version 5
    job = h.kv.compact(5)
    while not job.step(100):
        pass
    h.reopen()
    kv = h.get(b"k").kvs[0]
    assert (kv.version, kv.create_revision, kv.mod_revision) == (5, 2, 6)
    assert h.get(b"k", revision=5).kvs[0].version == 4
    h.put(b"k", b"x")
    assert h.get(b"k").kvs[0].version == 6
