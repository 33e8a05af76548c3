"""KeyIndex and Index: generations, reads at a revision, compaction choices."""

from __future__ import annotations

import pytest

from petcd.mvcc import revision as revs
from petcd.mvcc.key_index import ErrRevisionNotFound, Index, KeyIndex
from petcd.mvcc.revision import encode


def ki_of(*ops: tuple[str, int, int]) -> KeyIndex:
    ki = KeyIndex()
    for op, main, sub in ops:
        (ki.put if op == "p" else ki.tombstone)(encode(main, sub))
    return ki


def test_revision_bytes_round_trip_and_order() -> None:
    b = revs.to_bytes(5, 3)
    assert len(b) == revs.REV_BYTES_LEN and b[8:9] == b"_"
    assert revs.from_bytes(b) == (5, 3)
    t = revs.to_bytes(5, 3, tombstone=True)
    assert len(t) == revs.MARKED_REV_BYTES_LEN and revs.is_tombstone(t) and not revs.is_tombstone(b)
    assert revs.from_bytes(t) == (5, 3)
    assert revs.to_bytes(5, 3) < revs.to_bytes(5, 4) < revs.to_bytes(6, 0)
    assert revs.main_of(encode(7, 2)) == 7 and revs.sub_of(encode(7, 2)) == 2


def test_get_walks_generations() -> None:
    # put 2, put 4, del 6, put 8, put 10
    ki = ki_of(("p", 2, 0), ("p", 4, 0), ("t", 6, 0), ("p", 8, 0), ("p", 10, 1))
    assert ki.get(1) is None
    assert ki.get(2) == (encode(2), encode(2), 1)
    assert ki.get(5) == (encode(4), encode(2), 2)
    assert ki.get(6) is None and ki.get(7) is None
    assert ki.get(8) == (encode(8), encode(8), 1)
    assert ki.get(9) == (encode(8), encode(8), 1)
    assert ki.get(10) == (encode(10, 1), encode(8), 2)
    assert ki.alive() and ki.modified() == encode(10, 1)


def test_tombstone_requires_live_key_and_puts_must_advance() -> None:
    ki = ki_of(("p", 2, 0), ("t", 3, 0))
    assert not ki.alive() and ki.modified() == encode(3)
    with pytest.raises(ErrRevisionNotFound):
        ki.tombstone(encode(4))
    with pytest.raises(ErrRevisionNotFound):
        ki.put(encode(3))


@pytest.mark.parametrize(
    "at, kept, gens_after",
    [
        # nothing at or below 1
        (
            1,
            None,
            [
                (3, encode(2), [encode(2), encode(4), encode(6)]),
                (3, encode(8), [encode(8), encode(10), encode(11)]),
                (0, 0, []),
            ],
        ),
        # keep 4 (latest <= 5 of the first generation, deleted at 6 > 5);
        # a generation's version count includes its tombstone, as in etcd
        (
            5,
            encode(4),
            [
                (3, encode(2), [encode(4), encode(6)]),
                (3, encode(8), [encode(8), encode(10), encode(11)]),
                (0, 0, []),
            ],
        ),
        # the first generation ended at 6 <= 6: dropped whole
        (6, None, [(3, encode(8), [encode(8), encode(10), encode(11)]), (0, 0, [])]),
        (9, encode(8), [(3, encode(8), [encode(8), encode(10), encode(11)]), (0, 0, [])]),
        # the second generation is deleted at 11 > 10
        (10, encode(10), [(3, encode(8), [encode(10), encode(11)]), (0, 0, [])]),
    ],
)
def test_compact_keeps_latest_needed_revision(at: int, kept: int | None, gens_after: list[object]) -> None:
    ki = ki_of(("p", 2, 0), ("p", 4, 0), ("t", 6, 0), ("p", 8, 0), ("p", 10, 0), ("t", 11, 0))
    before = {r for _, _, rs in ki.generations() for r in rs}
    assert ki.keep(at) == kept
    dropped = ki.compact(at)
    assert ki.generations() == gens_after
    after = {r for _, _, rs in ki.generations() for r in rs}
    assert {r for r, _ in dropped} == before - after
    assert all(revs.main_of(r) <= at for r, _ in dropped)
    # tombstone flags: 6 and 11 are the tombstones
    assert {r for r, tomb in dropped if tomb} == {r for r, _ in dropped} & {encode(6), encode(11)}


def test_compact_past_final_tombstone_empties_key() -> None:
    ki = ki_of(("p", 2, 0), ("t", 3, 0))
    assert ki.compact(3) == [(encode(2), False), (encode(3), True)]
    assert ki.is_empty()


def test_compacted_generation_keeps_version_and_create() -> None:
    ki = ki_of(("p", 2, 0), ("p", 3, 0), ("p", 5, 0))
    ki.compact(4)
    assert ki.get(4) == (encode(3), encode(2), 2)
    assert ki.get(5) == (encode(5), encode(2), 3)
    ki.put(encode(9))
    assert ki.get(9) == (encode(9), encode(2), 4)


def test_restore_starts_mid_generation() -> None:
    ki = KeyIndex()
    ki.restore(encode(2), encode(7), 4)
    ki.put(encode(9))
    assert ki.get(7) == (encode(7), encode(2), 4)
    assert ki.get(9) == (encode(9), encode(2), 5)


def test_index_ranges_latest_and_past() -> None:
    idx = Index()
    idx.put(b"a", encode(2))
    idx.put(b"b", encode(3))
    idx.put(b"c", encode(4))
    idx.tombstone(b"b", encode(5))
    out, count = idx.range_latest(b"a", None)
    assert [k for k, _ in out] == [b"a", b"c"] and count == 2
    out, count = idx.range_latest(b"a", None, limit=1)
    assert [k for k, _ in out] == [b"a"] and count == 2
    out, count = idx.range_at(b"a", b"c", 4)
    assert [k for k, _ in out] == [b"a", b"b"] and count == 2
    out, count = idx.range_at(b"a", None, 4, limit=1)
    assert [k for k, _ in out] == [b"a"] and count == 3
    assert idx.range_latest(b"c", b"a") == ([], 0)
    assert idx.range_at(b"c", b"c", 4) == ([], 0)
    assert idx.latest(b"b") is None and idx.get(b"b", 4) == (encode(3), encode(3), 1)
    assert idx.live_count() == 2 and len(idx) == 3


def test_index_compact_keys_in_steps_removes_emptied_keys() -> None:
    idx = Index()
    for i, k in enumerate([b"a", b"b", b"c", b"d"]):
        idx.put(k, encode(2 + i))
    idx.tombstone(b"b", encode(6))
    idx.put(b"c", encode(7))
    dropped, last, done = idx.compact_keys(6, None, 2)
    assert last == b"b" and not done
    assert sorted(dropped) == [(encode(3), False), (encode(6), True)]
    assert idx.key_index(b"b") is None and len(idx) == 3
    dropped, last, done = idx.compact_keys(6, last, 2)
    assert dropped == [] and last == b"d" and not done  # c keeps 4 (its latest <= 6)
    dropped, last, done = idx.compact_keys(6, last, 2)
    assert done and dropped == []
    assert idx.keep(6) == {encode(2), encode(4), encode(5)}
