"""The mvcc API itself: ranges of keys at revisions, and writes that put
and delete keys under one revision (no request semantics)."""

from __future__ import annotations

import pytest

from petcd.mvcc.errors import ErrCompacted, ErrFutureRev
from petcd.mvcc.key_range import KeyRange
from petcd.mvcc.kvstore import KeyRevision
from tests.mvcc.conftest import Harness, populate


def test_range_returns_stored_values_count_and_current_revision(h: Harness) -> None:
    populate(h)
    r = h.kv.range(KeyRange(b"a", b"c"), limit=2)
    assert [kv.key for kv in r.kvs()] == [b"a", b"ab"] and (r.count, r.rev) == (3, 9)
    at4 = h.kv.range(KeyRange(b"\0", b"\0"), rev=4)
    assert [(kv.key, kv.value) for kv in at4.kvs()] == [(b"a", b"1"), (b"b", b"2"), (b"c", b"3")]
    assert at4.rev == 9  # the revision the store is at, not the one read
    only = h.kv.range(KeyRange(b"\0", b"\0"), count_only=True)
    assert (only.values, only.count) == ([], 4)
    with pytest.raises(ErrFutureRev):
        h.kv.range(KeyRange(b"a"), rev=10)
    h.kv.compact(5)
    with pytest.raises(ErrCompacted):
        h.kv.range(KeyRange(b"a"), rev=4)


def test_key_revisions_and_existence_come_from_the_index(h: Harness) -> None:
    populate(h)
    assert h.kv.key_revisions(KeyRange(b"a", b"b")) == [
        KeyRevision(b"a", 5, 2, 2),
        KeyRevision(b"ab", 8, 8, 1),
    ]
    assert h.kv.exists(b"c") and not h.kv.exists(b"d")


def test_a_write_takes_one_revision_and_sees_its_own_changes(h: Harness) -> None:
    populate(h)
    h.events.clear()
    w = h.kv.write()
    assert w.rev == 9
    prev = w.put(b"a", b"new", 0)
    assert prev is not None and prev.value == b"4"
    assert w.put(b"fresh", b"1", 7) is None
    assert w.rev == 10 and h.kv.rev == 9  # not published yet
    inside = w.range(KeyRange(b"a"))
    assert [kv.value for kv in inside.kvs()] == [b"new"] and inside.rev == 10
    deleted = w.delete_range(KeyRange(b"b", b"d"))
    assert [kv.key for kv in deleted] == [b"b", b"c"]
    assert h.events == []
    assert w.end() == 10 and h.kv.rev == 10
    (rev, events), = h.events
    assert rev == 10 and [(e.type, e.kv.key, e.kv.mod_revision) for e in events] == [
        (0, b"a", 10), (0, b"fresh", 10), (1, b"b", 10), (1, b"c", 10)
    ]


def test_a_write_that_changes_nothing_takes_no_revision(h: Harness) -> None:
    populate(h)
    h.events.clear()
    w = h.kv.write()
    assert w.delete_range(KeyRange(b"nothing")) == []
    assert w.end() == 9 and h.events == []
