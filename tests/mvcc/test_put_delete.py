"""Put and DeleteRange: revisions, versions, prev_kv, ignore_value/lease, leases
(petcd.server.txn over a real store, as the applier runs it)."""

from __future__ import annotations

import pytest

from petcd.lease.lessor import ErrLeaseNotFound
from petcd.mvcc.kvstore import KEY_BUCKET
from petcd.mvcc.revision import to_bytes
from petcd.proto import kv_pb2, rpc_pb2
from petcd.server import txn
from petcd.server.errors import ErrKeyNotFound
from tests.mvcc.conftest import Harness, populate

R = rpc_pb2


def test_put_creates_then_updates(h: Harness) -> None:
    r = h.put(b"k", b"v1")
    assert r.header.revision == 2 and not r.HasField("prev_kv")
    r = h.put(b"k", b"v2", prev_kv=True)
    assert r.header.revision == 3
    assert (r.prev_kv.value, r.prev_kv.version, r.prev_kv.mod_revision) == (b"v1", 1, 2)
    kv = h.get(b"k").kvs[0]
    assert (kv.create_revision, kv.mod_revision, kv.version, kv.value) == (2, 3, 2, b"v2")


def test_put_after_delete_starts_a_new_generation(h: Harness) -> None:
    h.put(b"k", b"v1")
    h.put(b"k", b"v2")
    h.delete(b"k")
    r = h.put(b"k", b"v3", prev_kv=True)
    assert not r.HasField("prev_kv")
    kv = h.get(b"k").kvs[0]
    assert (kv.create_revision, kv.mod_revision, kv.version) == (5, 5, 1)


def test_put_stores_etcd_layout(h: Harness) -> None:
    h.put(b"k", b"v", lease=7)
    h.delete(b"k")
    raw = h.backend.get(KEY_BUCKET, to_bytes(2, 0))
    assert raw is not None
    assert kv_pb2.KeyValue.FromString(raw) == kv_pb2.KeyValue(
        key=b"k", value=b"v", create_revision=2, mod_revision=2, version=1, lease=7
    )
    # a tombstone is the marked revision holding only the key
    tomb = h.backend.get(KEY_BUCKET, to_bytes(3, 0, tombstone=True))
    assert tomb is not None and kv_pb2.KeyValue.FromString(tomb) == kv_pb2.KeyValue(key=b"k")


def test_ignore_value_and_ignore_lease_keep_existing(h: Harness) -> None:
    h.put(b"k", b"v1", lease=7)
    h.put(b"k", ignore_value=True)
    kv = h.get(b"k").kvs[0]
    assert (kv.value, kv.lease, kv.version) == (b"v1", 0, 2)
    h.put(b"k", b"v2", lease=7)
    h.put(b"k", b"v3", ignore_lease=True)
    kv = h.get(b"k").kvs[0]
    assert (kv.value, kv.lease, kv.version) == (b"v3", 7, 4)


@pytest.mark.parametrize("flag", ["ignore_value", "ignore_lease"])
def test_ignore_flags_on_missing_key_fail_without_trace(h: Harness, flag: str) -> None:
    h.put(b"other")
    with pytest.raises(ErrKeyNotFound, match="etcdserver: key not found"):
        h.put(b"k", **{flag: True})
    assert h.kv.rev == 2 and h.keys() == [b"other"] and len(h.events) == 1


def test_put_with_missing_lease_fails_before_anything(h: Harness) -> None:
    with pytest.raises(ErrLeaseNotFound, match="requested lease not found"):
        h.put(b"k", b"v", lease=8)
    # the lease check comes first, even when ignore_value would fail too
    with pytest.raises(ErrLeaseNotFound):
        h.put(b"k", lease=8, ignore_value=True)
    assert h.kv.rev == 1 and h.keys() == [] and h.events == []


def test_put_without_lease_checker_accepts_any_lease(h: Harness) -> None:
    txn.put(h.kv, R.PutRequest(key=b"k", value=b"v", lease=12345), None)
    assert h.get(b"k").kvs[0].lease == 12345


@pytest.mark.parametrize(
    "key, end, deleted",
    [
        (b"a", b"", [b"a"]),
        (b"a", b"b", [b"a", b"ab"]),
        (b"b", b"\0", [b"b", b"c"]),
        (b"\0", b"\0", [b"a", b"ab", b"b", b"c"]),
        (b"c", b"a", []),
        (b"zz", b"", []),
        (b"d", b"", []),  # already deleted
    ],
)
def test_delete_range_counts_and_prev_kvs(h: Harness, key: bytes, end: bytes, deleted: list[bytes]) -> None:
    populate(h)
    before = {kv.key: kv for kv in h.get(b"\0", b"\0").kvs}
    r = h.delete(key, end, prev_kv=True)
    assert r.deleted == len(deleted)
    assert [kv.key for kv in r.prev_kvs] == deleted
    assert list(r.prev_kvs) == [before[k] for k in deleted]
    if deleted:
        assert r.header.revision == h.kv.rev == 10
    else:
        assert r.header.revision == h.kv.rev == 9  # nothing deleted: no new revision
    assert sorted(set(before) - set(deleted)) == h.keys()


def test_delete_without_prev_kv_returns_none(h: Harness) -> None:
    populate(h)
    r = h.delete(b"a", b"b")
    assert r.deleted == 2 and not r.prev_kvs


def test_response_headers_carry_only_the_revision(h: Harness) -> None:
    r = h.put(b"k", b"v")
    d = h.delete(b"k")
    for header in (r.header, d.header):
        assert (header.cluster_id, header.member_id, header.raft_term) == (0, 0, 0)
