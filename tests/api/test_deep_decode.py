"""Decoding requests nested deeper than protobuf's own limit (issue 9,
defect 1), and the checks that keep what is proposed decodable."""

from __future__ import annotations

import random
import time

import pytest
from google.protobuf.message import DecodeError

from petcd.api import validation
from petcd.proto import raft_internal_pb2, rpc_pb2
from petcd.server import txn_ops
from petcd.server.apply import decode_request, request_id
from petcd.server.decoding import TooDeep, field_bytes, parse_deep


def nested_txn(levels: int, key: bytes = b"k") -> rpc_pb2.TxnRequest:
    top = rpc_pb2.TxnRequest()
    t = top
    for _ in range(levels - 1):
        t.compare.add(key=b"c", target=rpc_pb2.Compare.VERSION)
        t.failure.add().request_range.key = b"r"
        t = t.success.add().request_txn
    t.success.add().request_put.key = key
    return top


def wrapped(t: rpc_pb2.TxnRequest, req_id: int = 7) -> bytes:
    r = raft_internal_pb2.InternalRaftRequest()
    r.header.ID = req_id
    r.txn.CopyFrom(t)
    return r.SerializeToString()


def test_protobuf_alone_stops_near_fifty_nested_txns() -> None:
    """The defect's cause: what the client port decodes, wrapped once more,
    no longer decodes with protobuf's own limit."""
    data = nested_txn(50).SerializeToString()
    rpc_pb2.TxnRequest().ParseFromString(data)
    with pytest.raises(DecodeError):
        raft_internal_pb2.InternalRaftRequest().ParseFromString(wrapped(nested_txn(50)))


@pytest.mark.parametrize("levels", [1, 49, 50, 51, 128, txn_ops.MAX_TXN_DEPTH])
def test_every_depth_the_api_accepts_decodes_the_same(levels: int) -> None:
    t = nested_txn(levels)
    data = t.SerializeToString()
    got = parse_deep(rpc_pb2.TxnRequest, data, txn_ops.MAX_MESSAGE_DEPTH)
    assert got.SerializeToString() == data
    assert txn_ops.depth(got) == levels
    req = decode_request(wrapped(t))
    assert req.header.ID == 7 and req.txn.SerializeToString() == data


def test_too_deep_is_refused_with_a_bound_and_fast() -> None:
    """A megabyte of nesting neither overflows the stack nor takes long."""
    data = nested_txn(txn_ops.MAX_TXN_DEPTH + 20).SerializeToString()
    with pytest.raises(TooDeep):
        parse_deep(rpc_pb2.TxnRequest, data, txn_ops.MAX_MESSAGE_DEPTH)
    huge = deep_chain(700_001)  # odd: the outermost field is a RequestOp's
    assert len(huge) > 1_400_000
    start = time.monotonic()
    with pytest.raises(DecodeError):
        parse_deep(rpc_pb2.RequestOp, huge, txn_ops.MAX_MESSAGE_DEPTH)
    assert time.monotonic() - start < 2.0


def deep_chain(messages: int) -> bytes:
    """A RequestOp nesting `messages` messages (RequestOp.request_txn ->
    TxnRequest.success -> RequestOp ...), encoded by hand in linear time:
    protobuf itself cannot encode it without overflowing its stack."""
    size = 0
    headers = []
    for i in range(messages):
        tag = b"\x22" if i % 2 == 0 else b"\x12"  # RequestOp.request_txn, TxnRequest.success
        h = tag + _varint(size)
        headers.append(h)
        size += len(h)
    return b"".join(reversed(headers))


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def test_matches_protobuf_on_random_shallow_and_malformed_input() -> None:
    """Wherever protobuf's decoder gives an answer, parse_deep gives the same."""
    rng = random.Random(9)
    base = [wrapped(nested_txn(n)) for n in (1, 3, 20)] + [
        raft_internal_pb2.InternalRaftRequest(put=rpc_pb2.PutRequest(key=b"a", value=b"b" * 300)).SerializeToString()]
    for _ in range(3000):
        data = bytearray(rng.choice(base))
        for _ in range(rng.randint(1, 4)):
            i = rng.randrange(len(data))
            data[i] = rng.randrange(256)
        if rng.random() < 0.3:
            data = data[: rng.randrange(len(data) + 1)]
        ref = raft_internal_pb2.InternalRaftRequest()
        try:
            ref.ParseFromString(bytes(data))
        except DecodeError:
            continue  # parse_deep may decode deeper, or refuse too
        assert parse_deep(raft_internal_pb2.InternalRaftRequest, bytes(data), 520) == ref


def test_oneof_and_merge_semantics_in_the_deep_path() -> None:
    """Fields after a deep one still win a oneof, and a repeated singular
    field merges, as protobuf's own decoder does them."""
    deep = nested_txn(60).SerializeToString()
    op = b"\x22" + _varint(len(deep)) + deep  # RequestOp.request_txn
    put = rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=b"p")).SerializeToString()
    got = parse_deep(rpc_pb2.RequestOp, op + put, 520)
    assert got.WhichOneof("request") == "request_put" and got.request_put.key == b"p"
    got = parse_deep(rpc_pb2.RequestOp, put + op, 520)
    assert got.WhichOneof("request") == "request_txn" and txn_ops.depth(got.request_txn) == 60


def test_request_id_of_an_entry_that_does_not_decode() -> None:
    header = raft_internal_pb2.InternalRaftRequest(header=raft_internal_pb2.RequestHeader(ID=0x1234))
    bad_txn = b"\x32\x04\xff\xff\xff\xff"  # field 6 (txn): a TxnRequest that does not decode
    for data in (bad_txn + header.SerializeToString(), header.SerializeToString() + bad_txn + b"\xff"):
        with pytest.raises(DecodeError):
            decode_request(data)
        assert request_id(data) == 0x1234
    assert request_id(b"\xff\xff") == 0
    assert field_bytes(b"", 100) is None


def test_validation_refuses_depth_beyond_what_petcd_carries() -> None:
    with pytest.raises(validation.ErrTxnTooDeep):
        validation.check_txn(nested_txn(txn_ops.MAX_TXN_DEPTH + 1), 100_000)
    validation.check_txn(nested_txn(txn_ops.MAX_TXN_DEPTH), 100_000)
    with pytest.raises(validation.ErrTooManyOps) as err:  # etcd's budget, etcd's message
        validation.check_txn(nested_txn(129), 128)
    assert str(err.value) == "etcdserver: too many operations in txn request"
    validation.check_txn(nested_txn(128), 128)
