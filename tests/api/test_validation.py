"""Request checks made before proposing, with etcd's errors."""

from __future__ import annotations

import pytest

from petcd.api import validation as v
from petcd.proto import rpc_pb2 as pb


def put(key: bytes) -> pb.RequestOp:
    return pb.RequestOp(request_put=pb.PutRequest(key=key, value=b"v"))


def delete(key: bytes, end: bytes = b"") -> pb.RequestOp:
    return pb.RequestOp(request_delete_range=pb.DeleteRangeRequest(key=key, range_end=end))


def nested(success: list[pb.RequestOp], failure: list[pb.RequestOp] | None = None) -> pb.RequestOp:
    return pb.RequestOp(request_txn=pb.TxnRequest(success=success, failure=failure or []))


def test_empty_keys_are_refused_everywhere() -> None:
    with pytest.raises(v.ErrEmptyKey, match="key is not provided"):
        v.check_range(pb.RangeRequest())
    with pytest.raises(v.ErrEmptyKey):
        v.check_put(pb.PutRequest(value=b"x"))
    with pytest.raises(v.ErrEmptyKey):
        v.check_delete(pb.DeleteRangeRequest())
    with pytest.raises(v.ErrEmptyKey):
        v.check_txn(pb.TxnRequest(compare=[pb.Compare()]), 128)
    with pytest.raises(v.ErrEmptyKey):
        v.check_txn(pb.TxnRequest(success=[nested([put(b"")])]), 128)


def test_ignore_value_and_ignore_lease_conflicts() -> None:
    with pytest.raises(v.ErrValueProvided, match="value is provided"):
        v.check_put(pb.PutRequest(key=b"k", value=b"v", ignore_value=True))
    with pytest.raises(v.ErrLeaseProvided, match="lease is provided"):
        v.check_put(pb.PutRequest(key=b"k", lease=5, ignore_lease=True))
    v.check_put(pb.PutRequest(key=b"k", ignore_value=True, ignore_lease=True))


def test_too_many_operations() -> None:
    ok = pb.TxnRequest(success=[put(b"k%d" % i) for i in range(128)])
    v.check_txn(ok, 128)
    with pytest.raises(v.ErrTooManyOps, match="too many operations in txn request"):
        v.check_txn(pb.TxnRequest(success=[put(b"k%d" % i) for i in range(129)]), 128)
    with pytest.raises(v.ErrTooManyOps):
        v.check_txn(pb.TxnRequest(compare=[pb.Compare(key=b"k")] * 3), 2)


def test_empty_request_op_is_key_not_found() -> None:
    with pytest.raises(v.ErrKeyNotFound):
        v.check_txn(pb.TxnRequest(success=[pb.RequestOp()]), 128)


@pytest.mark.parametrize(
    "ops",
    [
        [put(b"a"), put(b"a")],
        [put(b"a"), delete(b"a")],
        [put(b"ab"), delete(b"a", b"b")],
        [nested([put(b"a")]), put(b"a")],
        [delete(b"a", b"z"), nested([put(b"m")])],
        [nested([put(b"a")]), nested([put(b"a")])],
    ],
)
def test_overlapping_writes_are_duplicate_keys(ops: list[pb.RequestOp]) -> None:
    with pytest.raises(v.ErrDuplicateKey, match="duplicate key given in txn request"):
        v.check_txn(pb.TxnRequest(success=ops), 128)


@pytest.mark.parametrize(
    "ops",
    [
        [put(b"a"), put(b"b")],
        [put(b"b"), delete(b"a")],
        [nested([put(b"a")], [put(b"a")])],  # then and else exclude each other
        [delete(b"a"), delete(b"a")],
        [put(b"b"), delete(b"a", b"\x00")],  # etcd's interval check never matches a from-key delete
    ],
)
def test_disjoint_writes_are_accepted(ops: list[pb.RequestOp]) -> None:
    v.check_txn(pb.TxnRequest(success=ops), 128)
