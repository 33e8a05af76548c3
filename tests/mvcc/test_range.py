"""Range: every option, as etcd 3.4 answers it (expectations checked against
a real etcd 3.4.23 running the same writes); petcd.server.txn over a real store."""

from __future__ import annotations

from typing import Any

import pytest

from petcd.gosort import go_sorted
from petcd.mvcc.errors import ErrCompacted, ErrFutureRev
from petcd.proto import rpc_pb2
from tests.mvcc.conftest import Harness, populate

RR = rpc_pb2.RangeRequest
ALL = {"key": b"\0", "range_end": b"\0"}


@pytest.mark.parametrize(
    "req, keys, count, more",
    [
        ({"key": b"a"}, [b"a"], 1, False),
        ({"key": b"zz"}, [], 0, False),
        ({"key": b"d"}, [], 0, False),  # deleted
        ({"key": b"a", "range_end": b"b"}, [b"a", b"ab"], 2, False),  # prefix "a"
        (ALL, [b"a", b"ab", b"b", b"c"], 4, False),
        ({"key": b"b", "range_end": b"\0"}, [b"b", b"c"], 2, False),  # from key
        ({"key": b"c", "range_end": b"a"}, [], 0, False),  # end < key
        ({"key": b"c", "range_end": b"c"}, [], 0, False),  # end == key
        ({**ALL, "limit": 2}, [b"a", b"ab"], 4, True),
        ({**ALL, "limit": 4}, [b"a", b"ab", b"b", b"c"], 4, False),
        ({**ALL, "limit": 5}, [b"a", b"ab", b"b", b"c"], 4, False),
        ({**ALL, "count_only": True}, [], 4, False),
        ({**ALL, "count_only": True, "limit": 1}, [], 4, False),
        ({**ALL, "revision": 6}, [b"a", b"b", b"c", b"d"], 4, False),
        ({**ALL, "revision": 7}, [b"a", b"b", b"c"], 3, False),
        ({**ALL, "revision": 6, "limit": 1}, [b"a"], 4, True),
        ({**ALL, "revision": 1}, [], 0, False),
        ({**ALL, "revision": -3}, [b"a", b"ab", b"b", b"c"], 4, False),  # <= 0: current
        ({"key": b"a", "revision": 4}, [b"a"], 1, False),
        # sort targets; ties keep key order both ways (Go's insertion sort)
        ({**ALL, "sort_target": RR.VERSION, "sort_order": RR.ASCEND}, [b"ab", b"c", b"a", b"b"], 4, False),
        ({**ALL, "sort_target": RR.VERSION, "sort_order": RR.DESCEND}, [b"a", b"b", b"ab", b"c"], 4, False),
        ({**ALL, "sort_target": RR.CREATE, "sort_order": RR.DESCEND}, [b"ab", b"c", b"b", b"a"], 4, False),
        ({**ALL, "sort_target": RR.CREATE, "sort_order": RR.ASCEND}, [b"a", b"b", b"c", b"ab"], 4, False),
        ({**ALL, "sort_target": RR.MOD, "sort_order": RR.ASCEND}, [b"c", b"a", b"ab", b"b"], 4, False),
        ({**ALL, "sort_target": RR.MOD}, [b"c", b"a", b"ab", b"b"], 4, False),  # order NONE + target: ascend
        ({**ALL, "sort_target": RR.VALUE, "sort_order": RR.ASCEND}, [b"b", b"c", b"a", b"ab"], 4, False),
        ({**ALL, "sort_target": RR.KEY, "sort_order": RR.DESCEND}, [b"c", b"b", b"ab", b"a"], 4, False),
        ({**ALL, "sort_target": RR.VALUE, "sort_order": RR.DESCEND, "limit": 2}, [b"ab", b"a"], 4, True),
        (
            {**ALL, "sort_target": RR.MOD, "sort_order": RR.DESCEND, "limit": 4},
            [b"b", b"ab", b"a", b"c"],
            4,
            False,
        ),
        # etcd quirk: a target without an order fetches only limit+1 keys (in
        # key order) and sorts those
        ({**ALL, "sort_target": RR.VERSION, "limit": 1}, [b"ab"], 4, True),
        # filters leave count alone
        ({**ALL, "min_mod_revision": 5}, [b"a", b"ab", b"b"], 4, False),
        ({**ALL, "max_mod_revision": 5}, [b"a", b"c"], 4, False),
        ({**ALL, "min_create_revision": 3}, [b"ab", b"b", b"c"], 4, False),
        ({**ALL, "max_create_revision": 3}, [b"a", b"b"], 4, False),
        ({**ALL, "min_mod_revision": 5, "max_mod_revision": 8}, [b"a", b"ab"], 4, False),
        ({**ALL, "min_mod_revision": 5, "limit": 1}, [b"a"], 4, True),
        ({**ALL, "min_mod_revision": 9, "limit": 1}, [b"b"], 4, False),
        ({**ALL, "max_create_revision": 3, "revision": 6}, [b"a", b"b"], 4, False),
    ],
)
def test_range_options(h: Harness, req: dict[str, Any], keys: list[bytes], count: int, more: bool) -> None:
    populate(h)
    resp = h.range_request(RR(**req))
    assert [kv.key for kv in resp.kvs] == keys
    assert resp.count == count
    assert resp.more == more
    assert resp.header.revision == 9  # always the current revision
    assert resp.header.cluster_id == 0 and resp.header.member_id == 0 and resp.header.raft_term == 0


def test_range_returns_full_key_values(h: Harness) -> None:
    populate(h)
    kvs = {kv.key: kv for kv in h.get(b"\0", b"\0").kvs}
    a, ab, b, c = kvs[b"a"], kvs[b"ab"], kvs[b"b"], kvs[b"c"]
    assert (a.create_revision, a.mod_revision, a.version, a.value, a.lease) == (2, 5, 2, b"4", 0)
    assert (ab.create_revision, ab.mod_revision, ab.version, ab.value) == (8, 8, 1, b"6")
    assert (b.create_revision, b.mod_revision, b.version, b.value) == (3, 9, 2, b"0")
    assert (c.create_revision, c.mod_revision, c.version, c.value, c.lease) == (4, 4, 1, b"3", 7)
    old = h.get(b"a", revision=4).kvs[0]
    assert (old.create_revision, old.mod_revision, old.version, old.value) == (2, 2, 1, b"1")


def test_keys_only_clears_values_only(h: Harness) -> None:
    populate(h)
    for extra in ({}, {"sort_target": RR.VALUE, "sort_order": RR.DESCEND}, {"revision": 6}):
        resp = h.get(b"\0", b"\0", keys_only=True, **extra)
        assert resp.kvs and all(kv.value == b"" for kv in resp.kvs)
        assert all(kv.mod_revision > 0 and kv.version > 0 for kv in resp.kvs)
    assert h.get(b"c", keys_only=True).kvs[0].lease == 7


def test_range_revision_errors(h: Harness) -> None:
    populate(h)
    with pytest.raises(ErrFutureRev, match="required revision is a future revision"):
        h.get(b"a", revision=10)
    h.kv.compact(5)
    with pytest.raises(ErrCompacted, match="required revision has been compacted"):
        h.get(b"a", revision=4)
    assert h.get(b"a", revision=5).kvs[0].value == b"4"  # == compact rev is readable
    assert h.keys(revision=5) == [b"a", b"b", b"c"]
    assert h.keys(revision=6) == [b"a", b"b", b"c", b"d"]


def test_empty_store_is_at_revision_one(h: Harness) -> None:
    resp = h.get(b"\0", b"\0")
    assert resp.header.revision == 1 and resp.count == 0 and not resp.kvs
    assert h.kv.rev == 1 and h.kv.compact_rev == 0


def test_many_keys_with_ties_sort_like_go(h: Harness) -> None:
    # 20 keys, sorted by value with ties: beyond 12 items Go's sort is not
    # stable; the expected orders are real etcd 3.4.23's answers
    values = [0, 1, 1, 1, 0, 1, 1, 0, 0, 1, 1, 1, 1, 0, 0, 1, 1, 0, 0, 0]
    h.txn(
        rpc_pb2.TxnRequest(
            success=[
                rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=b"k%04d" % i, value=b"%d" % v))
                for i, v in enumerate(values)
            ]
        )
    )

    def order(sort_order: int) -> list[int]:
        resp = h.get(b"k", b"l", sort_target=RR.VALUE, sort_order=sort_order)
        return [int(kv.key[1:]) for kv in resp.kvs]

    assert order(RR.ASCEND) == [0, 19, 18, 17, 4, 14, 13, 7, 8, 10, 9, 11, 12, 6, 5, 15, 16, 3, 2, 1]
    assert order(RR.DESCEND) == [10, 11, 2, 3, 9, 5, 6, 16, 15, 1, 12, 17, 7, 13, 14, 19, 0, 4, 18, 8]


def test_go_sort_matches_etcd_on_64_items_with_ties() -> None:
    # real etcd 3.4.23's order for 64 keys whose values are these digits
    values = "6637476629944746054742701973402607884370374244797891024485948075"
    asc = [
        52,
        39,
        32,
        61,
        29,
        23,
        16,
        24,
        51,
        8,
        53,
        30,
        43,
        21,
        37,
        2,
        40,
        27,
        20,
        14,
        18,
        54,
        44,
        59,
        36,
        11,
        42,
        45,
        28,
        4,
        55,
        12,
        57,
        63,
        17,
        31,
        1,
        6,
        7,
        15,
        0,
        41,
        62,
        38,
        22,
        19,
        46,
        5,
        48,
        3,
        26,
        33,
        13,
        49,
        60,
        35,
        56,
        34,
        25,
        58,
        9,
        10,
        50,
        47,
    ]  # noqa: E501
    desc = [
        47,
        58,
        25,
        50,
        9,
        10,
        34,
        60,
        35,
        56,
        49,
        5,
        48,
        13,
        46,
        41,
        38,
        3,
        62,
        19,
        33,
        26,
        22,
        31,
        1,
        6,
        7,
        15,
        0,
        17,
        63,
        57,
        44,
        54,
        18,
        59,
        36,
        4,
        28,
        55,
        20,
        11,
        42,
        12,
        14,
        45,
        37,
        40,
        2,
        27,
        30,
        21,
        43,
        53,
        8,
        51,
        24,
        23,
        52,
        32,
        29,
        61,
        16,
        39,
    ]  # noqa: E501
    items = list(range(64))
    assert go_sorted(items, lambda i: values[i], descending=False) == asc
    assert go_sorted(items, lambda i: values[i], descending=True) == desc
    # distinct keys: any correct sort agrees
    assert go_sorted([3, 1, 2], lambda x: x, descending=True) == [3, 2, 1]
