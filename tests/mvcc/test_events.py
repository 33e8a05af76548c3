"""Events: what on_events reports for each write, and history reads (events())."""

from __future__ import annotations

from petcd.mvcc.history import StoreHistory
from petcd.proto import kv_pb2, rpc_pb2
from tests.mvcc.conftest import Harness, populate

PUT, DELETE = kv_pb2.Event.PUT, kv_pb2.Event.DELETE
R = rpc_pb2


def brief(events: list[kv_pb2.Event]) -> list[tuple[int, bytes, int, bytes | None]]:
    """(type, key, mod_revision, prev value or None) of each event."""
    return [
        (e.type, e.kv.key, e.kv.mod_revision, e.prev_kv.value if e.HasField("prev_kv") else None)
        for e in events
    ]


def test_on_events_per_write(h: Harness) -> None:
    h.put(b"k", b"1")
    h.put(b"k", b"2")
    h.delete(b"k")
    h.delete(b"k")  # nothing: no event, no revision
    h.put(b"k", b"3")
    assert [(rev, brief(evs)) for rev, evs in h.events] == [
        (2, [(PUT, b"k", 2, None)]),  # a creation has no prev_kv
        (3, [(PUT, b"k", 3, b"1")]),
        (4, [(DELETE, b"k", 4, b"2")]),
        (5, [(PUT, b"k", 5, None)]),
    ]
    put_ev = h.events[1][1][0]
    assert put_ev.kv == kv_pb2.KeyValue(key=b"k", value=b"2", create_revision=2, mod_revision=3, version=2)
    assert put_ev.prev_kv.mod_revision == 2
    del_ev = h.events[2][1][0]
    assert del_ev.kv == kv_pb2.KeyValue(key=b"k", mod_revision=4)


def test_on_events_for_txn_in_sub_revision_order(h: Harness) -> None:
    populate(h)
    h.events.clear()
    h.txn(
        R.TxnRequest(
            success=[
                R.RequestOp(request_delete_range=R.DeleteRangeRequest(key=b"a", range_end=b"b")),
                R.RequestOp(request_put=R.PutRequest(key=b"a", value=b"new")),
                R.RequestOp(request_put=R.PutRequest(key=b"c", value=b"c2")),
                R.RequestOp(request_range=R.RangeRequest(key=b"a")),
            ]
        )
    )
    assert [rev for rev, _ in h.events] == [10]
    assert brief(h.events[0][1]) == [
        (DELETE, b"a", 10, b"4"),
        (DELETE, b"ab", 10, b"6"),
        (PUT, b"a", 10, None),  # re-created in the same txn: a creation
        (PUT, b"c", 10, b"3"),
    ]
    h.events.clear()
    h.txn(R.TxnRequest(success=[R.RequestOp(request_range=R.RangeRequest(key=b"a"))]))
    assert h.events == []


def test_events_history_matches_live_events(h: Harness) -> None:
    populate(h)
    h.txn(
        R.TxnRequest(
            success=[
                R.RequestOp(request_put=R.PutRequest(key=b"x", value=b"1")),
                R.RequestOp(request_delete_range=R.DeleteRangeRequest(key=b"b")),
            ]
        )
    )
    live = [ev for _, evs in h.events for ev in evs]
    assert h.kv.events(1, h.kv.rev + 1, b"\0", b"\0", True) == live
    # without prev_kv
    bare = h.kv.events(1, h.kv.rev + 1, b"\0", b"\0", False)
    assert [e.kv for e in bare] == [e.kv for e in live] and not any(e.HasField("prev_kv") for e in bare)


def test_events_ranges_and_bounds(h: Harness) -> None:
    populate(h)
    ev = h.kv.events
    assert brief(ev(2, 10, b"a", b"", True)) == [(PUT, b"a", 2, None), (PUT, b"a", 5, b"1")]
    assert brief(ev(3, 10, b"a", b"", True)) == [(PUT, b"a", 5, b"1")]
    assert brief(ev(2, 5, b"a", b"", True)) == [(PUT, b"a", 2, None)]  # end exclusive
    assert [e.kv.key for e in ev(1, 10, b"a", b"b", False)] == [b"a", b"a", b"ab"]
    assert [e.kv.key for e in ev(1, 10, b"c", b"\0", False)] == [b"c", b"d", b"d"]
    assert [e.kv.key for e in ev(1, 10, b"a", b"a\0", False)] == [b"a", b"a"]
    tomb = ev(7, 8, b"d", b"", True)
    assert brief(tomb) == [(DELETE, b"d", 7, b"5")]
    assert tomb[0].kv == kv_pb2.KeyValue(key=b"d", mod_revision=7)
    assert ev(5, 5, b"\0", b"\0", True) == [] and ev(10, 20, b"\0", b"\0", True) == []


def test_events_after_compaction_still_have_prev_kv(h: Harness) -> None:
    populate(h)
    job = h.kv.compact(8)
    while not job.step(10):
        pass
    assert brief(h.kv.events(9, 10, b"b", b"", True)) == [(PUT, b"b", 9, b"2")]


def test_store_history_delegates(h: Harness) -> None:
    populate(h)
    history = StoreHistory(h.kv)
    assert history.current_revision() == 9 and history.compact_revision() == 0
    h.kv.compact(4)
    assert history.compact_revision() == 4
    assert history.events(5, 6, b"a", b"a\0", False) == h.kv.events(5, 6, b"a", b"a\0", False)


def test_a_put_reads_the_previous_value_only_when_someone_needs_it(h: Harness) -> None:
    """With needs_prev saying no, a put of an existing key reads nothing
    from the backend (version and creation come from the index) and its
    event carries no prev_kv; a put that asks for prev_kv, or needs_prev
    saying yes, reads it and reports it."""
    h.put(b"k", b"1")
    h.put(b"k", b"2")
    asked: list[bytes] = []
    wanted = False

    def needs_prev(key: bytes) -> bool:
        asked.append(key)
        return wanted

    h.kv.needs_prev = needs_prev
    reads: list[bytes] = []
    real_get = h.backend.get

    def counting_get(bucket: str, key: bytes) -> bytes | None:
        reads.append(key)
        return real_get(bucket, key)

    h.backend.get = counting_get  # type: ignore[method-assign]
    h.events.clear()
    h.put(b"k", b"3")
    assert reads == [] and asked == [b"k"]
    (rev, (ev,)), = h.events
    assert not ev.HasField("prev_kv")
    assert ev.kv == kv_pb2.KeyValue(key=b"k", value=b"3", create_revision=2, mod_revision=4, version=3)

    resp = h.put_request(rpc_pb2.PutRequest(key=b"k", value=b"4", prev_kv=True))
    assert resp.prev_kv.value == b"3" and len(reads) == 1
    assert h.events[-1][1][0].prev_kv.value == b"3"

    wanted = True
    h.put(b"k", b"5")
    assert len(reads) == 2
    assert h.events[-1][1][0].prev_kv.value == b"4"
    assert h.events[-1][1][0].kv.version == 5
