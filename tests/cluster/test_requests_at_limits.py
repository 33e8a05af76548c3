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

import socket
import struct
from collections.abc import Callable, Iterator
from urllib.parse import urlsplit

import grpc
import pytest

from petcd.proto import raft_internal_pb2, raft_pb2, rpc_pb2, rpc_pb2_grpc
from petcd.server import txn_ops
from tests.cluster.helpers import hash_kv_converges, leader, status
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


def restart_all(members: list[Server], before_start: Callable[[], object] | None = None) -> None:
    """Stop every member, then start them together (a lone member cannot
    elect a leader): each replays its WAL on the way up."""
    for m in members:
        assert m.proc is not None and m.proc.poll() is None, f"{m.client_url} died:\n{m.log_tail()}"
        assert m.stop() == 0, m.log_tail()
    if before_start is not None:
        before_start()
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


# ---- Rule B: entries the applier cannot decode or apply ---------------------


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | 0x80 if n else b)
        if not n:
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _deep_txn_bytes(messages: int) -> bytes:
    """A TxnRequest nesting `messages` messages (even), encoded by hand in
    linear time: protobuf cannot encode it without overflowing its stack."""
    size = 0
    headers = []
    for i in range(messages):
        h = (b"\x22" if i % 2 == 0 else b"\x12") + _varint(size)  # RequestOp.request_txn, TxnRequest.success
        headers.append(h)
        size += len(h)
    return b"".join(reversed(headers))


def poison_entries(member_id: int) -> list[tuple[int, bytes]]:
    """(entry type, data) a peer can get committed that no petcd api
    would propose; member_id is a member of the cluster."""
    ir = raft_internal_pb2.InternalRaftRequest
    too_deep = ir()
    too_deep.header.ID = 0xDEAD
    too_deep.txn.CopyFrom(nested_txn(txn_ops.MAX_TXN_DEPTH + 50, b"too-deep"))
    return [
        (0, b"\xff\xff\xff\xff"),  # not protobuf at all
        (0, too_deep.SerializeToString()),  # deeper than petcd carries
        (0, _field(6, _deep_txn_bytes(300_000))),  # a megabyte of nesting
        (0, ir(header=raft_internal_pb2.RequestHeader(ID=1)).SerializeToString()),  # no request in it
        (0, ir(put=rpc_pb2.PutRequest(key=b"", value=b"empty key")).SerializeToString()),
        (0, ir(put=rpc_pb2.PutRequest(key=b"no-lease", lease=-(2**63))).SerializeToString()),
        (0, ir(compaction=rpc_pb2.CompactionRequest(revision=2**63 - 1)).SerializeToString()),
        (0, ir(compaction=rpc_pb2.CompactionRequest(revision=-(2**63))).SerializeToString()),
        (0, ir(lease_grant=rpc_pb2.LeaseGrantRequest(ID=-1, TTL=2**63 - 1)).SerializeToString()),
        (0, ir(lease_checkpoint=rpc_pb2.LeaseCheckpointRequest(checkpoints=[
            rpc_pb2.LeaseCheckpoint(ID=2**63 - 1, remaining_TTL=-(2**63))])).SerializeToString()),
        (0, ir(txn=rpc_pb2.TxnRequest(success=[rpc_pb2.RequestOp()] * 3)).SerializeToString()),  # empty ops
        (0, ir(txn=rpc_pb2.TxnRequest(success=[rpc_pb2.RequestOp(request_range=rpc_pb2.RangeRequest(
            key=b"a", revision=-(2**63), limit=-(2**63)))])).SerializeToString()),
        (1, b"\xff\xff\xff\xff"),  # a configuration change that does not decode
        # decodes, so raft applies it, but its member is not JSON (raft
        # takes one configuration change at a time: the rest are dropped)
        (1, raft_pb2.ConfChange(id=77, type=2, node_id=member_id, context=b"\xff{").SerializeToString()),
        (1, raft_pb2.ConfChange(type=1, node_id=0, context=b"\xff").SerializeToString()),
        (2, b"\x01\x02\x03"),  # a v2 configuration change, which petcd does not speak
    ]


def send_from_peer(lead: Server, members: list[Server], entries: list[tuple[int, bytes]]) -> None:
    """Propose raw entries to the leader over its peer port, as a member
    forwarding proposals does (MsgProp): no api check sees them."""
    ms = rpc_pb2_grpc.ClusterStub(lead.channel()).MemberList(rpc_pb2.MemberListRequest(), timeout=30)
    st = status(lead)
    me = st.header.member_id
    other = next(m.ID for m in ms.members if m.ID != me)
    peer = urlsplit(next(m.peerURLs[0] for m in ms.members if m.ID == me))
    with socket.create_connection((peer.hostname, peer.port), timeout=30) as s:
        s.sendall(struct.pack(">10sQQQ", b"PETCDRAFT1", st.header.cluster_id, other, me))
        for etype, data in entries:
            msg = raft_pb2.Message(type=raft_pb2.MsgProp, to=me, entries=[raft_pb2.Entry(Type=etype, Data=data)])
            setattr(msg, "from", other)
            frame = msg.SerializeToString()
            s.sendall(struct.pack(">I", len(frame)) + frame)


def test_entries_the_applier_cannot_apply_never_stop_a_member(cluster: list[Server]) -> None:
    lead = leader(cluster)
    lead.kv().Put(rpc_pb2.PutRequest(key=b"before", value=b"poison"), timeout=30)
    send_from_peer(lead, cluster, poison_entries(status(cluster[0]).header.member_id))
    # a write proposed after them is applied after them, on every member
    after = lead.kv().Put(rpc_pb2.PutRequest(key=b"after", value=b"poison"), timeout=30).header.revision
    wait_for(lambda: all(m.kv().Range(rpc_pb2.RangeRequest(key=b"after", serializable=True), timeout=5).count
                         for m in cluster), 60, "every member to apply past the poison")
    all_alive(cluster)
    for m in cluster:  # each member logged the entries it could not decode, with their index
        log = m.log_path.read_text(errors="replace")
        assert log.count("is not a request petcd can decode") >= 3, m.log_tail()
        assert "is a configuration change petcd cannot apply" in log, m.log_tail()
    hash_kv_converges(cluster)
    # a member that replays the whole WAL (its backend lost) passes them the same way
    victim = next(m for m in cluster if m is not lead)
    restart_all(cluster, before_start=lambda: (victim.data_dir / "member" / "snap" / "db").unlink())
    hash_kv_converges(cluster)
    log = victim.log_path.read_text(errors="replace")
    assert log.count("is not a request petcd can decode") >= 6, victim.log_tail()
    for m in cluster:
        got = m.kv().Range(rpc_pb2.RangeRequest(key=b"after"), timeout=30)
        assert got.kvs[0].mod_revision == after
