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

import functools
import socket
import struct
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import grpc
import pytest

from petcd.proto import raft_internal_pb2, raft_pb2, rpc_pb2, rpc_pb2_grpc
from petcd.server import txn_ops
from petcd.testing.harness import Server, etcd_server, petcd_cluster, petcd_server, wait_for, when_healthy
from tests.cluster.helpers import hash_kv_converges, leader, status

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
        (2, b"\x01\x02\x03"),  # a v2 configuration change, which petcd does not speak
    ]


def poison_conf_changes(member_id: int) -> list[bytes]:
    """Configuration changes that decode, so raft applies them, but whose
    member records petcd cannot use: each would fail every member applying
    it, and the URLs every later start."""
    def cc(kind: int, node: int, context: bytes) -> bytes:
        return raft_pb2.ConfChange(id=77, type=kind, node_id=node, context=context).SerializeToString()  # type: ignore[arg-type]

    return [
        cc(2, member_id, b"\xff{"),  # update: not JSON
        cc(3, 0x1234, b'{"id":4660,"peerURLs":["http://127.0.0.1:70000"]}'),  # learner at a port that cannot exist
        cc(3, 0x1235, b'{"id":4661,"peerURLs":"http://127.0.0.1:6"}'),  # a string where a list belongs
        cc(0, 0x1236, b'{"id":1,"peerURLs":["http://127.0.0.1:7"]}'),  # the record names another member
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
            msg = raft_pb2.Message(type=raft_pb2.MsgProp, to=me, entries=[raft_pb2.Entry(Type=etype, Data=data)])  # type: ignore[arg-type]
            setattr(msg, "from", other)
            frame = msg.SerializeToString()
            s.sendall(struct.pack(">I", len(frame)) + frame)


def applied_everywhere(members: list[Server], key: bytes) -> bool:
    return all(m.kv().Range(rpc_pb2.RangeRequest(key=key, serializable=True), timeout=5).count for m in members)


def test_entries_the_applier_cannot_apply_never_stop_a_member(cluster: list[Server]) -> None:
    lead = leader(cluster)
    lead.kv().Put(rpc_pb2.PutRequest(key=b"before", value=b"poison"), timeout=30)
    member_id = status(cluster[0]).header.member_id
    batches = [poison_entries(member_id)] + [[(1, c)] for c in poison_conf_changes(member_id)]
    for i, batch in enumerate(batches):  # raft takes one configuration change at a time
        send_from_peer(lead, cluster, batch)
        # a write proposed after them is applied after them, on every member
        key = b"after%d" % i
        lead.kv().Put(rpc_pb2.PutRequest(key=key, value=b"poison"), timeout=30)
        wait_for(functools.partial(applied_everywhere, cluster, key), 60, "every member to apply past the poison")
    after = lead.kv().Put(rpc_pb2.PutRequest(key=b"after", value=b"poison"), timeout=30).header.revision
    all_alive(cluster)
    for m in cluster:  # each member logged the entries it could not apply, with their index
        log = m.log_path.read_text(errors="replace")
        assert log.count("is not a request petcd can decode") >= 3, m.log_tail()
        assert log.count("is a configuration change petcd cannot apply") == 4, m.log_tail()
    members = rpc_pb2_grpc.ClusterStub(lead.channel()).MemberList(rpc_pb2.MemberListRequest(), timeout=30).members
    assert len(members) == 3 and all(m.peerURLs and m.peerURLs[0].startswith("http://") for m in members)
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


# ---- every request type at the limits -----------------------------------------

I64MAX, I64MIN, U64MAX = 2**63 - 1, -(2**63), 2**64 - 1
MAX_REQUEST_BYTES = 1572864  # etcd's default --max-request-bytes
OK = "OK"
_C = grpc.StatusCode
TOO_LARGE = (_C.INVALID_ARGUMENT, "etcdserver: request is too large")
NO_LEASE = (_C.NOT_FOUND, "etcdserver: requested lease not found")
KEY_NOT_FOUND = (_C.INVALID_ARGUMENT, "etcdserver: key not found")
TOO_MANY_OPS = (_C.INVALID_ARGUMENT, "etcdserver: too many operations in txn request")
COMPACTED = (_C.OUT_OF_RANGE, "etcdserver: mvcc: required revision has been compacted")
FUTURE = (_C.OUT_OF_RANGE, "etcdserver: mvcc: required revision is a future revision")
BAD_URLS = (_C.INVALID_ARGUMENT, "etcdserver: given member URLs are invalid")
MEMBER_NOT_FOUND = (_C.NOT_FOUND, "etcdserver: member not found")
TTL_TOO_LARGE = (_C.OUT_OF_RANGE, "etcdserver: too large lease TTL")
LEASE_EXISTS = (_C.FAILED_PRECONDITION, "etcdserver: lease already exists")

Outcome = str | tuple[grpc.StatusCode, str]


def _put(k: bytes, v: bytes = b"", **kw: Any) -> rpc_pb2.RequestOp:
    return rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=k, value=v, **kw))


def _range(k: bytes, **kw: Any) -> rpc_pb2.RequestOp:
    return rpc_pb2.RequestOp(request_range=rpc_pb2.RangeRequest(key=k, **kw))


def _wide_deep(levels: int, width: int) -> rpc_pb2.TxnRequest:
    """levels nested txns, each with width - 1 ranges beside the nested one."""
    top = rpc_pb2.TxnRequest()
    t = top
    for lvl in range(levels):
        for i in range(width - 1):
            t.success.add().request_range.key = b"w%d-%d" % (lvl, i)
        if lvl < levels - 1:
            t = t.success.add().request_txn
    t.success.add().request_put.key = b"wide-deep"
    return top


def _extreme_compares() -> list[rpc_pb2.Compare]:
    operands: list[dict[str, Any]] = [
        {"version": I64MIN}, {"create_revision": I64MAX}, {"mod_revision": I64MIN}, {"value": b"\xff" * 100},
        {"lease": I64MAX}]
    return [rpc_pb2.Compare(key=b"c%d" % i, target=i % 5, result=i % 4,  # type: ignore[arg-type]
                            range_end=b"\x00" if i % 7 == 0 else b"", **operands[i % 5]) for i in range(128)]


def limit_cases() -> list[tuple[str, str, str, object, Outcome]]:
    """(label, service, method, request, outcome): every request type that
    goes through raft, at its limits. Each outcome is real etcd 3.4's
    (test_outcomes_match_etcd checks them there), except where noted."""
    P = rpc_pb2
    big = MAX_REQUEST_BYTES - 64
    cases: list[tuple[str, str, str, object, Outcome]] = [
        ("put largest value", "KV", "Put", P.PutRequest(key=b"big", value=b"v" * big), OK),
        ("put value over the limit", "KV", "Put", P.PutRequest(key=b"big", value=b"v" * MAX_REQUEST_BYTES), TOO_LARGE),
        ("put largest key", "KV", "Put", P.PutRequest(key=b"K" * big), OK),
        ("put key 0x00", "KV", "Put", P.PutRequest(key=b"\x00", value=b"zero"), OK),
        ("put key 0xff*1000", "KV", "Put", P.PutRequest(key=b"\xff" * 1000, value=b"ff"), OK),
        ("put lease i64max", "KV", "Put", P.PutRequest(key=b"l", lease=I64MAX), NO_LEASE),
        ("put lease i64min", "KV", "Put", P.PutRequest(key=b"l", lease=I64MIN), NO_LEASE),
        ("put ignore_value, no key", "KV", "Put", P.PutRequest(key=b"nokey", ignore_value=True), KEY_NOT_FOUND),
        ("put ignore_lease, no key", "KV", "Put", P.PutRequest(key=b"nokey", ignore_lease=True), KEY_NOT_FOUND),
        ("delete end before key", "KV", "DeleteRange", P.DeleteRangeRequest(key=b"z", range_end=b"a"), OK),
        ("delete 0xff keys", "KV", "DeleteRange",
         P.DeleteRangeRequest(key=b"\xff" * 1000, range_end=b"\xff" * 1001, prev_kv=True), OK),
        ("txn max ops", "KV", "Txn", P.TxnRequest(success=[_put(b"p%03d" % i, b"x" * 1000) for i in range(128)]), OK),
        ("txn one op too many", "KV", "Txn", P.TxnRequest(success=[_put(b"p%03d" % i) for i in range(129)]),
         TOO_MANY_OPS),
        ("txn max compares, extreme operands", "KV", "Txn",
         P.TxnRequest(compare=_extreme_compares(), success=[_put(b"cmp-ok")], failure=[_put(b"cmp-fail")]), OK),
        ("txn compare, unknown enums", "KV", "Txn", P.TxnRequest(
            compare=[P.Compare(key=b"a", target=99, result=77)],  # type: ignore[arg-type]
            success=[_put(b"enum-ok")], failure=[_put(b"enum-fail")]), OK),
        ("txn ranges, extreme limits", "KV", "Txn", P.TxnRequest(success=[
            _range(b"a", range_end=b"\x00", limit=I64MIN), _range(b"a", limit=I64MAX),
            _range(b"\x00", range_end=b"\x00", count_only=True, keys_only=True, min_mod_revision=I64MAX,
                   max_create_revision=I64MIN), _put(b"txn-range")]), OK),
        ("txn range at i64max", "KV", "Txn", P.TxnRequest(success=[_range(b"a", revision=I64MAX), _put(b"f")]),
         FUTURE),
        ("txn range at -1", "KV", "Txn", P.TxnRequest(success=[_range(b"a", revision=-1), _put(b"f")]), OK),
        ("txn range at i64min", "KV", "Txn", P.TxnRequest(success=[_range(b"a", revision=I64MIN), _put(b"f")]),
         COMPACTED),
        ("txn unknown sort order", "KV", "Txn", P.TxnRequest(success=[_range(b"a", sort_order=99), _put(b"s")]), OK),
        ("txn empty op", "KV", "Txn", P.TxnRequest(success=[P.RequestOp()]), KEY_NOT_FOUND),
        ("txn deepest", "KV", "Txn", nested_txn(128, b"deepest"), OK),
        ("txn one level too deep", "KV", "Txn", nested_txn(129, b"too-deep"), TOO_MANY_OPS),
        ("txn wide and deep", "KV", "Txn", _wide_deep(11, 11), OK),
        ("txn largest value", "KV", "Txn", P.TxnRequest(success=[_put(b"tb", b"x" * (MAX_REQUEST_BYTES - 100))]), OK),
        ("compact 0", "KV", "Compact", P.CompactionRequest(revision=0), OK),
        ("compact -1", "KV", "Compact", P.CompactionRequest(revision=-1), COMPACTED),
        ("compact i64min", "KV", "Compact", P.CompactionRequest(revision=I64MIN), COMPACTED),
        ("compact i64max", "KV", "Compact", P.CompactionRequest(revision=I64MAX), FUTURE),
        ("compact 3", "KV", "Compact", P.CompactionRequest(revision=3, physical=True), OK),
        ("grant ttl 0", "Lease", "LeaseGrant", P.LeaseGrantRequest(TTL=0), OK),
        ("grant ttl i64min", "Lease", "LeaseGrant", P.LeaseGrantRequest(TTL=I64MIN), OK),
        ("grant largest ttl", "Lease", "LeaseGrant", P.LeaseGrantRequest(TTL=9_000_000_000), OK),
        ("grant ttl too large", "Lease", "LeaseGrant", P.LeaseGrantRequest(TTL=9_000_000_001), TTL_TOO_LARGE),
        ("grant ttl i64max", "Lease", "LeaseGrant", P.LeaseGrantRequest(TTL=I64MAX), TTL_TOO_LARGE),
    ]
    for lid in (-1, I64MAX, I64MIN):
        cases += [
            (f"grant id {lid}", "Lease", "LeaseGrant", P.LeaseGrantRequest(ID=lid, TTL=60), OK),
            (f"grant id {lid} again", "Lease", "LeaseGrant", P.LeaseGrantRequest(ID=lid, TTL=60), LEASE_EXISTS),
        ]
    cases += [
        ("put with lease -1", "KV", "Put", P.PutRequest(key=b"leased", lease=-1), OK),
        ("revoke 0", "Lease", "LeaseRevoke", P.LeaseRevokeRequest(ID=0), NO_LEASE),
        ("revoke -1", "Lease", "LeaseRevoke", P.LeaseRevokeRequest(ID=-1), OK),
        ("revoke i64max", "Lease", "LeaseRevoke", P.LeaseRevokeRequest(ID=I64MAX), OK),
        ("revoke i64min", "Lease", "LeaseRevoke", P.LeaseRevokeRequest(ID=I64MIN), OK),
        ("revoke again", "Lease", "LeaseRevoke", P.LeaseRevokeRequest(ID=I64MIN), NO_LEASE),
        ("alarm activate unknown type", "Maintenance", "Alarm",
         P.AlarmRequest(action=P.AlarmRequest.ACTIVATE, memberID=U64MAX, alarm=99), OK),  # type: ignore[arg-type]
        ("alarm activate negative type", "Maintenance", "Alarm",
         P.AlarmRequest(action=P.AlarmRequest.ACTIVATE, alarm=-5), OK),  # type: ignore[arg-type]
        ("alarm deactivate unknown type", "Maintenance", "Alarm",
         P.AlarmRequest(action=P.AlarmRequest.DEACTIVATE, memberID=U64MAX, alarm=99), OK),  # type: ignore[arg-type]
        ("alarm deactivate negative type", "Maintenance", "Alarm",
         P.AlarmRequest(action=P.AlarmRequest.DEACTIVATE, alarm=-5), OK),  # type: ignore[arg-type]
        ("member add, no URL", "Cluster", "MemberAdd", P.MemberAddRequest(isLearner=True), BAD_URLS),
        ("member add, empty URL", "Cluster", "MemberAdd", P.MemberAddRequest(peerURLs=[""], isLearner=True), BAD_URLS),
        ("member add, not a URL", "Cluster", "MemberAdd", P.MemberAddRequest(peerURLs=["x y"], isLearner=True),
         BAD_URLS),
        ("member add, bad IPv6", "Cluster", "MemberAdd", P.MemberAddRequest(peerURLs=["http://[::1"], isLearner=True),
         BAD_URLS),
        ("member add, unix", "Cluster", "MemberAdd", P.MemberAddRequest(peerURLs=["unix:///x"], isLearner=True),
         BAD_URLS),
        ("member add, long path", "Cluster", "MemberAdd",
         P.MemberAddRequest(peerURLs=["http://h:1/" + "p" * 10000], isLearner=True), BAD_URLS),
        ("member update u64max", "Cluster", "MemberUpdate",
         P.MemberUpdateRequest(ID=U64MAX, peerURLs=["http://127.0.0.1:2"]), MEMBER_NOT_FOUND),
        ("member remove 0", "Cluster", "MemberRemove", P.MemberRemoveRequest(ID=0), MEMBER_NOT_FOUND),
        ("member remove u64max", "Cluster", "MemberRemove", P.MemberRemoveRequest(ID=U64MAX), MEMBER_NOT_FOUND),
        ("member promote u64max", "Cluster", "MemberPromote", P.MemberPromoteRequest(ID=U64MAX), MEMBER_NOT_FOUND),
    ]
    return cases


# Where petcd answers differently from etcd 3.4, on purpose: a URL petcd's
# peer transport cannot dial is refused before it is committed (etcd 3.4
# takes a port out of range); an
# unknown alarm action is answered with no alarms (etcd 3.4's server panics
# marshalling its nil response).
PETCD_ONLY: list[tuple[str, str, str, object, Outcome]] = [
    ("alarm unknown action", "Maintenance", "Alarm", rpc_pb2.AlarmRequest(action=99, alarm=1), OK),  # type: ignore[arg-type]
    ("member add, port out of range", "Cluster", "MemberAdd",
     rpc_pb2.MemberAddRequest(peerURLs=["http://127.0.0.1:99999"], isLearner=True), BAD_URLS),
]


def outcome(m: Server, service: str, method: str, req: object) -> Outcome:
    stub = getattr(rpc_pb2_grpc, service + "Stub")(m.channel())
    call = getattr(stub, method)
    if method == "Txn":  # a deep txn's response is too deep for the client's protobuf
        call = m.channel().unary_unary("/etcdserverpb.KV/Txn", request_serializer=rpc_pb2.TxnRequest.SerializeToString,
                                       response_deserializer=None)
    try:
        call(req, timeout=30)
    except grpc.RpcError as exc:
        return exc.code(), exc.details() or ""
    return OK


def test_every_request_type_at_the_limits_then_restart(cluster: list[Server]) -> None:
    leader(cluster)
    got = []
    for i, (label, service, method, req, _) in enumerate(limit_cases() + PETCD_ONLY):
        got.append((label, outcome(cluster[i % 3], service, method, req)))
        all_alive(cluster)
    assert got == [(c[0], c[4]) for c in limit_cases() + PETCD_ONLY]
    # a learner with an odd but usable URL comes and goes through raft
    stub = rpc_pb2_grpc.ClusterStub(cluster[0].channel())
    added = when_healthy(lambda: stub.MemberAdd(
        rpc_pb2.MemberAddRequest(peerURLs=["http://127.0.0.1:1"], isLearner=True), timeout=30))
    stub.MemberRemove(rpc_pb2.MemberRemoveRequest(ID=added.member.ID), timeout=30)
    hash_kv_converges(cluster)
    restart_all(cluster)
    hash_kv_converges(cluster)
    for m in cluster:
        assert m.kv().Range(rpc_pb2.RangeRequest(key=b"K" * (MAX_REQUEST_BYTES - 64)), timeout=30).count == 1
        assert m.kv().Range(rpc_pb2.RangeRequest(key=b"deepest"), timeout=30).count == 1
        assert len(m.kv().Range(rpc_pb2.RangeRequest(key=b"big"), timeout=30).kvs[0].value) == MAX_REQUEST_BYTES - 64


def test_outcomes_match_etcd(tmp_path: Path) -> None:
    """The expected outcomes above are real etcd 3.4's."""
    etcd = etcd_server(tmp_path).start()
    try:
        got = [(c[0], outcome(etcd, c[1], c[2], c[3])) for c in limit_cases()]
    finally:
        etcd.stop()
    assert got == [(c[0], c[4]) for c in limit_cases()]


def test_depth_petcd_cannot_carry_is_refused_before_proposing(tmp_path: Path) -> None:
    """With a larger --max-txn-ops etcd goes deeper than its default budget
    allows; petcd applies up to txn_ops.MAX_TXN_DEPTH levels and refuses
    deeper txns at the api, InvalidArgument, before anything is proposed."""
    s = petcd_server(tmp_path, extra=["--max-txn-ops", "100000"]).start()
    try:
        depth = txn_ops.MAX_TXN_DEPTH
        assert raw_txn(s)(nested_txn(depth, b"deepest").SerializeToString(), timeout=30)
        rev = status(s).header.revision
        for levels in (depth + 1, depth + 10, 2000):  # the last is too deep even to decode in full
            with pytest.raises(grpc.RpcError) as err:
                raw_txn(s)(nested_txn(levels, b"x").SerializeToString(), timeout=30)
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert err.value.details() == f"etcdserver: too many operations in txn request (nested deeper than {depth} txns)"
        assert status(s).header.revision == rev
        assert s.proc is not None and s.proc.poll() is None
    finally:
        s.stop()
