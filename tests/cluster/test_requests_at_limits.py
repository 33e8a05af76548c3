"""Requests built at the limits, through propose -> apply -> restart on a
three-member cluster of real processes: every member stays up, answers, and
agrees (HashKV) afterwards.

Issue 9, defect 1: a Txn nested 49 levels deep passed the API, but wrapped in
InternalRaftRequest it was past protobuf's decode depth, so every member died
applying it, and again at every restart (WAL replay). etcd 3.4 applies a Txn
of up to 128 nested TxnRequests with its default --max-txn-ops (each level
counts against the op budget) and refuses the 129th with "too many
operations"; petcd does the same.
"""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest

from petcd.proto import rpc_pb2
from tests.cluster.helpers import hash_kv_converges, leader
from tests.harness import Server, petcd_cluster, wait_for

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Server]]:
    members = petcd_cluster(tmp_path_factory.mktemp("limits"), 3)
    yield members
    for m in members:
        m.stop()


def nested_txn(levels: int, key: bytes) -> rpc_pb2.TxnRequest:
    """A Txn of `levels` TxnRequests, each the only success op of the one
    above; the innermost puts key. Built through references: protobuf's
    constructors copy by re-parsing, which stops at its depth limit."""
    top = rpc_pb2.TxnRequest()
    t = top
    for _ in range(levels - 1):
        t = t.success.add().request_txn
    t.success.add().request_put.key = key
    t.success[0].request_put.value = b"v%d" % levels
    return top


def raw_txn(m: Server) -> grpc.UnaryUnaryMultiCallable:
    """Txn with bytes in and out: the response of a deep txn is itself too
    deep for the client's protobuf decoder, as it is for etcd's clients."""
    return m.channel().unary_unary("/etcdserverpb.KV/Txn", request_serializer=None, response_deserializer=None)


def restart_all(members: list[Server]) -> None:
    """Stop every member, then start them together (a lone member cannot
    elect a leader): each replays its WAL on the way up."""
    for m in members:
        assert m.proc is not None and m.proc.poll() is None, f"{m.client_url} died:\n{m.log_tail()}"
        m.stop()
    for m in members:
        m.launch()
    for m in members:
        m.wait_ready()


def all_alive(members: list[Server]) -> None:
    for m in members:
        assert m.proc is not None and m.proc.poll() is None, f"{m.client_url} died:\n{m.log_tail()}"


def test_deeply_nested_txns_are_applied_as_etcd_applies_them(cluster: list[Server]) -> None:
    leader(cluster)
    for i, levels in enumerate((49, 50, 51, 100, 128)):
        m = cluster[i % 3]
        out = raw_txn(m)(nested_txn(levels, b"deep%d" % levels).SerializeToString(), timeout=30)
        assert out, "an empty TxnResponse"
    with pytest.raises(grpc.RpcError) as err:
        raw_txn(cluster[0])(nested_txn(129, b"deep129").SerializeToString(), timeout=30)
    assert (err.value.code(), err.value.details()) == (
        grpc.StatusCode.INVALID_ARGUMENT, "etcdserver: too many operations in txn request")
    all_alive(cluster)
    restart_all(cluster)
    hash_kv_converges(cluster)
    for m in cluster:
        got = m.kv().Range(rpc_pb2.RangeRequest(key=b"deep", range_end=b"deeq"), timeout=30)
        assert [(kv.key, kv.value) for kv in got.kvs] == [
            (b"deep%d" % n, b"v%d" % n) for n in (100, 128, 49, 50, 51)]
    wait_for(lambda: all(m.kv().Range(rpc_pb2.RangeRequest(key=b"deep49"), timeout=5).count == 1 for m in cluster),
             30, "every member to answer")
