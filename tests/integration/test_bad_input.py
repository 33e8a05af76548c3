"""Bad input: clear errors in etcd's words, the server keeps serving, and
nothing acknowledged is lost."""

from __future__ import annotations

import socket

import grpc
import pytest

from petcd.proto import rpc_pb2
from petcd.testing.harness import Server

pytestmark = pytest.mark.timeout(600)


def _code(fn: object, req: object) -> tuple[grpc.StatusCode, str]:
    try:
        fn(req, timeout=30)  # type: ignore[operator]
    except grpc.RpcError as exc:
        return exc.code(), exc.details() or ""
    return grpc.StatusCode.OK, ""


def test_malformed_and_unknown_protobufs(petcd: Server) -> None:
    kv = petcd.kv()
    assert kv.Put(rpc_pb2.PutRequest(key=b"safe", value=b"1"), timeout=30).header.revision > 0
    ch = petcd.channel()
    raw_put = ch.unary_unary("/etcdserverpb.KV/Put", request_serializer=lambda b: b, response_deserializer=lambda b: b)
    code, _ = _code(raw_put, b"\xff\xff\xff\xff\x0f garbage")
    assert code in (grpc.StatusCode.INTERNAL, grpc.StatusCode.INVALID_ARGUMENT)
    # an unknown field (number 999) is skipped, as protobuf requires
    unknown = rpc_pb2.PutRequest(key=b"u", value=b"v").SerializeToString() + b"\xb8\x3e\x01"
    assert _code(raw_put, unknown)[0] == grpc.StatusCode.OK
    unknown_method = ch.unary_unary("/etcdserverpb.KV/Nope", request_serializer=lambda b: b,
                                    response_deserializer=lambda b: b)
    assert _code(unknown_method, b"")[0] == grpc.StatusCode.UNIMPLEMENTED
    assert kv.Range(rpc_pb2.RangeRequest(key=b"safe"), timeout=30).kvs[0].value == b"1"


def test_invalid_requests_get_etcds_errors(petcd: Server) -> None:
    kv = petcd.kv()
    assert _code(kv.Put, rpc_pb2.PutRequest(key=b"", value=b"v")) == (
        grpc.StatusCode.INVALID_ARGUMENT, "etcdserver: key is not provided")
    assert _code(kv.Range, rpc_pb2.RangeRequest(key=b"")) == (
        grpc.StatusCode.INVALID_ARGUMENT, "etcdserver: key is not provided")
    code, msg = _code(kv.Range, rpc_pb2.RangeRequest(key=b"a", sort_target=9))
    assert code == grpc.StatusCode.INVALID_ARGUMENT, msg
    assert _code(kv.Put, rpc_pb2.PutRequest(key=b"big", value=b"x" * (1600 * 1024))) == (
        grpc.StatusCode.INVALID_ARGUMENT, "etcdserver: request is too large")
    code, _ = _code(kv.Put, rpc_pb2.PutRequest(key=b"huge", value=b"x" * (8 << 20)))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
    ops = [rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=b"k%d" % i)) for i in range(129)]
    assert _code(kv.Txn, rpc_pb2.TxnRequest(success=ops)) == (
        grpc.StatusCode.INVALID_ARGUMENT, "etcdserver: too many operations in txn request")
    dup = [rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=b"d")) for _ in range(2)]
    assert _code(kv.Txn, rpc_pb2.TxnRequest(success=dup)) == (
        grpc.StatusCode.INVALID_ARGUMENT, "etcdserver: duplicate key given in txn request")
    assert _code(kv.Range, rpc_pb2.RangeRequest(key=b"a", revision=10**9)) == (
        grpc.StatusCode.OUT_OF_RANGE, "etcdserver: mvcc: required revision is a future revision")
    assert kv.Put(rpc_pb2.PutRequest(key=b"after-bad", value=b"ok"), timeout=30).header.revision > 0


def test_ten_thousand_connections_opened_and_dropped(petcd: Server) -> None:
    kv = petcd.kv()
    rev = kv.Put(rpc_pb2.PutRequest(key=b"conn", value=b"before"), timeout=30).header.revision
    host, port = petcd.endpoint.split(":")
    opened = 0
    while opened < 10_000:
        batch = []
        for _ in range(250):
            s = socket.socket()
            s.settimeout(30)
            s.connect((host, int(port)))
            batch.append(s)
        opened += len(batch)
        for i, s in enumerate(batch):
            if i % 2:
                s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00")  # half an HTTP/2 preface, then gone
            s.close()
    got = kv.Range(rpc_pb2.RangeRequest(key=b"conn"), timeout=30)
    assert got.kvs[0].value == b"before" and got.kvs[0].mod_revision == rev
    assert kv.Put(rpc_pb2.PutRequest(key=b"conn", value=b"after"), timeout=30).header.revision == rev + 1
