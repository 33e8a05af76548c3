"""KeyRange: etcd's three readings of range_end, the one type every layer asks."""

from __future__ import annotations

import pytest

from petcd.api import validation
from petcd.mvcc.key_range import KeyRange
from petcd.mvcc.watchable_store import Watcher, WatchSink
from petcd.proto import rpc_pb2 as pb

KEYS = [b"\0", b"a", b"a\0", b"ab", b"b", b"c", b"\xff"]


@pytest.mark.parametrize(
    "key, end, named",
    [
        (b"a", b"", [b"a"]),  # empty range_end: the key alone
        (b"a", b"\0", [b"a", b"a\0", b"ab", b"b", b"c", b"\xff"]),  # "\0": from key on
        (b"\0", b"\0", KEYS),  # every key
        (b"a", b"b", [b"a", b"a\0", b"ab"]),  # [key, end)
        (b"a", b"a\0", [b"a"]),  # the interval of one key
        (b"b", b"a", []),  # end <= key: nothing
        (b"a", b"a", []),
    ],
)
def test_the_keys_a_pair_names(key: bytes, end: bytes, named: list[bytes]) -> None:
    kr = KeyRange(key, end)
    assert [k for k in KEYS if kr.contains(k)] == named
    assert kr.is_empty() == (not named)
    assert kr.range_end == end and KeyRange(kr.key, kr.range_end) == kr
    assert kr.from_key == (end == b"\0")


def test_a_watcher_matches_what_its_range_names() -> None:
    for key, end in [(b"a", b""), (b"a", b"\0"), (b"a", b"b"), (b"b", b"a")]:
        w = Watcher(id=1, key=key, end=end, sink=WatchSink(), next_rev=0)
        assert [k for k in KEYS if w.matches(k)] == [k for k in KEYS if KeyRange(key, end).contains(k)]


def _txn(*ops: pb.RequestOp) -> pb.TxnRequest:
    return pb.TxnRequest(success=list(ops))


def _put(key: bytes) -> pb.RequestOp:
    return pb.RequestOp(request_put=pb.PutRequest(key=key))


def _del(key: bytes, end: bytes = b"") -> pb.RequestOp:
    return pb.RequestOp(request_delete_range=pb.DeleteRangeRequest(key=key, range_end=end))


def test_txn_overlap_check_uses_the_same_ranges_with_etcds_from_key_exception() -> None:
    for end in (b"", b"b"):
        with pytest.raises(validation.ErrDuplicateKey):
            validation.check_txn(_txn(_del(b"a", end), _put(b"a")), 128)
    validation.check_txn(_txn(_del(b"a", b"a"), _put(b"a")), 128)  # an empty range deletes nothing
    # etcd compares range ends as plain strings there: "\0" lies below every
    # key, so a delete from a key on never overlaps a put (etcd accepts this)
    validation.check_txn(_txn(_del(b"a", b"\0"), _put(b"a")), 128)
