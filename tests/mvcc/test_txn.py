"""Txn: compares, branches, nested txns, sub-response revisions, atomicity
(petcd.server.txn over a real store, as the applier runs it)."""

from __future__ import annotations

from typing import Any

import pytest

from petcd.lease.lessor import ErrLeaseNotFound
from petcd.mvcc.errors import ErrCompacted, ErrFutureRev
from petcd.mvcc.kvstore import KEY_BUCKET
from petcd.mvcc.revision import to_bytes
from petcd.proto import rpc_pb2
from petcd.server.errors import ErrKeyNotFound
from tests.mvcc.conftest import Harness, populate

R = rpc_pb2
C = rpc_pb2.Compare
EQ, GT, LT, NE = C.EQUAL, C.GREATER, C.LESS, C.NOT_EQUAL


def put(key: bytes, value: bytes = b"", **kw: Any) -> rpc_pb2.RequestOp:
    return R.RequestOp(request_put=R.PutRequest(key=key, value=value, **kw))


def rng(key: bytes, end: bytes = b"", **kw: Any) -> rpc_pb2.RequestOp:
    return R.RequestOp(request_range=R.RangeRequest(key=key, range_end=end, **kw))


def dele(key: bytes, end: bytes = b"", **kw: Any) -> rpc_pb2.RequestOp:
    return R.RequestOp(request_delete_range=R.DeleteRangeRequest(key=key, range_end=end, **kw))


def sub(t: rpc_pb2.TxnRequest) -> rpc_pb2.RequestOp:
    return R.RequestOp(request_txn=t)


def cmp(key: bytes, target: int, result: int, end: bytes = b"", **operand: Any) -> rpc_pb2.Compare:
    return C(key=key, target=target, result=result, range_end=end, **operand)


def holds(h: Harness, c: rpc_pb2.Compare) -> bool:
    before = h.kv.rev
    resp = h.txn(R.TxnRequest(compare=[c]))
    assert resp.header.revision == before == h.kv.rev
    return resp.succeeded


# key a at rev 9: version 2, create 2, mod 5, value "4", lease 0; c has lease 7
@pytest.mark.parametrize(
    "target, field, low, equal, high",
    [
        (C.VERSION, "version", 1, 2, 3),
        (C.CREATE, "create_revision", 1, 2, 3),
        (C.MOD, "mod_revision", 4, 5, 6),
        (C.VALUE, "value", b"3", b"4", b"5"),
        (C.LEASE, "lease", -1, 0, 7),
    ],
)
def test_compare_every_target_and_result(
    h: Harness, target: int, field: str, low: object, equal: object, high: object
) -> None:
    populate(h)
    table = [
        (EQ, equal, True), (EQ, low, False), (EQ, high, False),
        (NE, equal, False), (NE, low, True), (NE, high, True),
        (GT, low, True), (GT, equal, False), (GT, high, False),
        (LT, high, True), (LT, equal, False), (LT, low, False),
    ]  # fmt: skip
    for result, operand, expected in table:
        assert holds(h, cmp(b"a", target, result, **{field: operand})) is expected, (result, operand)


@pytest.mark.parametrize(
    "target, field, result, operand, expected",
    [
        (C.VERSION, "version", EQ, 0, True),
        (C.VERSION, "version", GT, 0, False),
        (C.CREATE, "create_revision", EQ, 0, True),
        (C.CREATE, "create_revision", LT, 1, True),
        (C.MOD, "mod_revision", NE, 0, False),
        (C.LEASE, "lease", EQ, 0, True),
        # a missing key has no value: every value compare fails
        (C.VALUE, "value", EQ, b"", False),
        (C.VALUE, "value", NE, b"x", False),
        (C.VALUE, "value", LT, b"x", False),
    ],
)
def test_compare_missing_key(
    h: Harness, target: int, field: str, result: int, operand: object, expected: bool
) -> None:
    populate(h)
    assert holds(h, cmp(b"nope", target, result, **{field: operand})) is expected
    assert holds(h, cmp(b"d", target, result, **{field: operand})) is expected  # deleted key too


def test_compare_over_a_range_needs_every_key(h: Harness) -> None:
    populate(h)
    assert holds(h, cmp(b"a", C.VERSION, GT, b"b", version=0))  # a (2), ab (1)
    assert not holds(h, cmp(b"a", C.VERSION, EQ, b"b", version=2))
    assert holds(h, cmp(b"\0", C.CREATE, GT, b"\0", create_revision=1))
    assert not holds(h, cmp(b"\0", C.LEASE, EQ, b"\0", lease=0))  # c has lease 7
    assert holds(h, cmp(b"x", C.VERSION, EQ, b"\0", version=0))  # empty range: compares zero
    assert not holds(h, cmp(b"x", C.VALUE, EQ, b"\0", value=b""))


def test_compare_operand_must_match_target(h: Harness) -> None:
    populate(h)
    # a version compare whose operand sits in another member reads as 0
    assert holds(h, cmp(b"a", C.VERSION, GT, value=b"zzz"))
    assert not holds(h, cmp(b"a", C.VERSION, EQ, mod_revision=2))
    assert holds(h, cmp(b"a", C.VALUE, GT, version=9))  # value compare against b""


def test_txn_branches_and_sub_response_revisions(h: Harness) -> None:
    populate(h)
    resp = h.txn(
        R.TxnRequest(
            compare=[cmp(b"a", C.VALUE, EQ, value=b"4")],
            success=[
                rng(b"x"),
                dele(b"nothing"),
                put(b"x", b"1"),
                rng(b"x"),
                rng(b"x", revision=9),
                dele(b"nothing"),
                sub(R.TxnRequest(success=[rng(b"x")])),
            ],
            failure=[put(b"never")],
        )
    )
    assert resp.succeeded and resp.header.revision == 10 == h.kv.rev
    r = resp.responses
    assert r[0].response_range.header.revision == 9 and r[0].response_range.count == 0
    assert r[1].response_delete_range.header.revision == 9  # nothing deleted, nothing written yet
    assert r[2].response_put.header.revision == 10
    assert r[3].response_range.header.revision == 10 and r[3].response_range.kvs[0].value == b"1"
    assert r[4].response_range.header.revision == 10 and r[4].response_range.count == 0  # at rev 9
    assert r[5].response_delete_range.header.revision == 10  # an earlier op wrote
    nested = r[6].response_txn
    # etcd leaves a nested txn's header present but empty
    assert nested.HasField("header") and nested.header.revision == 0 and nested.succeeded
    assert nested.responses[0].response_range.kvs[0].value == b"1"
    assert nested.responses[0].response_range.header.revision == 10
    assert h.keys(b"never", b"") == []


def test_failure_branch_and_read_only_txn(h: Harness) -> None:
    populate(h)
    resp = h.txn(
        R.TxnRequest(compare=[cmp(b"a", C.VERSION, EQ, version=1)], success=[put(b"s")], failure=[rng(b"a")])
    )
    assert not resp.succeeded and resp.header.revision == 9 == h.kv.rev
    assert resp.responses[0].response_range.kvs[0].value == b"4"
    empty = h.txn(R.TxnRequest())
    assert empty.succeeded and empty.header.revision == 9 and not empty.responses


def test_txn_writes_share_one_revision_with_sub_revisions(h: Harness) -> None:
    populate(h)
    resp = h.txn(R.TxnRequest(success=[put(b"p", b"1"), dele(b"a", b"b"), put(b"q", b"2")]))
    assert resp.header.revision == 10 and resp.responses[1].response_delete_range.deleted == 2
    rev, events = h.events[-1]
    assert rev == 10
    assert [(e.type, e.kv.key, e.kv.mod_revision) for e in events] == [
        (0, b"p", 10), (1, b"a", 10), (1, b"ab", 10), (0, b"q", 10)
    ]  # fmt: skip
    assert h.kv.hash_kv(0)[1] == 10
    assert h.backend.get(KEY_BUCKET, to_bytes(10, 0)) is not None
    assert h.backend.get(KEY_BUCKET, to_bytes(10, 1, tombstone=True)) is not None
    assert h.backend.get(KEY_BUCKET, to_bytes(10, 2, tombstone=True)) is not None
    assert h.backend.get(KEY_BUCKET, to_bytes(10, 3)) is not None


def test_delete_only_txn_that_deletes_nothing_takes_no_revision(h: Harness) -> None:
    populate(h)
    resp = h.txn(R.TxnRequest(success=[dele(b"zz"), dele(b"d")]))
    assert resp.header.revision == 9 == h.kv.rev
    assert all(r.response_delete_range.header.revision == 9 for r in resp.responses)


def test_nested_compares_see_the_state_before_the_txn(h: Harness) -> None:
    populate(h)
    inner = R.TxnRequest(
        compare=[cmp(b"new", C.VERSION, GT, version=0)], success=[put(b"yes")], failure=[put(b"no")]
    )
    resp = h.txn(R.TxnRequest(success=[put(b"new", b"1"), sub(inner)]))
    assert not resp.responses[1].response_txn.succeeded
    assert h.keys(b"no", b"") == [b"no"] and h.keys(b"yes", b"") == []


def test_nested_txns_recurse(h: Harness) -> None:
    populate(h)
    deepest = R.TxnRequest(success=[put(b"z3", b"3")])
    middle = R.TxnRequest(compare=[cmp(b"a", C.MOD, EQ, mod_revision=5)], success=[sub(deepest), put(b"z2")])
    resp = h.txn(R.TxnRequest(success=[sub(middle), put(b"z1")]))
    assert resp.header.revision == 10
    m = resp.responses[0].response_txn
    assert m.succeeded and m.responses[0].response_txn.responses[0].response_put.header.revision == 10
    assert h.keys(b"z", b"{") == [b"z1", b"z2", b"z3"]
    assert [e.kv.key for e in h.events[-1][1]] == [b"z3", b"z2", b"z1"]


@pytest.mark.parametrize(
    "ops, error",
    [
        ([put(b"x", b"1"), put(b"y", lease=8)], ErrLeaseNotFound),
        ([put(b"x", b"1"), sub(R.TxnRequest(success=[put(b"y", lease=8)]))], ErrLeaseNotFound),
        ([put(b"x", b"1"), put(b"missing", ignore_value=True)], ErrKeyNotFound),
        ([put(b"x", b"1"), put(b"missing", ignore_lease=True)], ErrKeyNotFound),
        # put before check: the key must exist before the txn
        ([put(b"fresh", b"1"), put(b"fresh", ignore_value=True)], ErrKeyNotFound),
        # deleted earlier in the same txn (etcd would crash here)
        ([dele(b"a"), put(b"a", ignore_value=True)], ErrKeyNotFound),
        ([dele(b"\0", b"\0"), put(b"b", ignore_lease=True)], ErrKeyNotFound),
        ([put(b"x", b"1"), rng(b"a", revision=10)], ErrFutureRev),
        ([put(b"x", b"1"), rng(b"a", revision=-5)], ErrCompacted),  # etcd's check: below compact rev (-1)
        ([rng(b"a", revision=10)], ErrFutureRev),
    ],
)
def test_failing_txn_leaves_no_trace(
    h: Harness, ops: list[rpc_pb2.RequestOp], error: type[Exception]
) -> None:
    populate(h)
    before = h.kv.hash_kv(0)
    n_events = len(h.events)
    with pytest.raises(error):
        h.txn(R.TxnRequest(success=ops))
    assert h.kv.rev == 9 and h.kv.hash_kv(0) == before and len(h.events) == n_events
    assert h.keys() == [b"a", b"ab", b"b", b"c"]


def test_checks_only_cover_the_chosen_branch(h: Harness) -> None:
    populate(h)
    resp = h.txn(
        R.TxnRequest(
            compare=[cmp(b"a", C.VERSION, EQ, version=2)], success=[put(b"ok")], failure=[put(b"x", lease=8)]
        )
    )
    assert resp.succeeded and h.keys(b"ok", b"") == [b"ok"]


def test_txn_range_below_compaction_fails(h: Harness) -> None:
    populate(h)
    h.kv.compact(6)
    with pytest.raises(ErrCompacted):
        h.txn(R.TxnRequest(success=[rng(b"a", revision=5)]))
    resp = h.txn(R.TxnRequest(success=[rng(b"a", revision=6)]))
    assert resp.responses[0].response_range.kvs[0].value == b"4"


def test_puts_inside_txn_keep_versions_and_prev_kv(h: Harness) -> None:
    populate(h)
    resp = h.txn(R.TxnRequest(success=[put(b"a", b"5", prev_kv=True), put(b"c", ignore_lease=True)]))
    assert resp.responses[0].response_put.prev_kv.value == b"4"
    a, c = h.get(b"a").kvs[0], h.get(b"c").kvs[0]
    assert (a.version, a.create_revision, a.mod_revision) == (3, 2, 10)
    assert (c.lease, c.value, c.version) == (7, b"", 2)
