"""A watch that starts exactly at the compact revision is served from it,
as etcd serves it (issue 9, defect 7): clients that resume at the
CompactRevision they were given must not be cancelled again and again.
Checked side by side with real etcd, response by response."""

from __future__ import annotations

import pytest
from google.protobuf import text_format

from petcd.proto import rpc_pb2
from petcd.testing.harness import Server, wait_for
from tests.integration.test_watch_guarantees import WatchStream

pytestmark = pytest.mark.timeout(300)


def _txn(*ops: rpc_pb2.RequestOp) -> rpc_pb2.TxnRequest:
    return rpc_pb2.TxnRequest(success=list(ops))


def _put(key: bytes, value: bytes) -> rpc_pb2.RequestOp:
    return rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=key, value=value))


def _delete(key: bytes) -> rpc_pb2.RequestOp:
    return rpc_pb2.RequestOp(request_delete_range=rpc_pb2.DeleteRangeRequest(key=key))


def _history(s: Server) -> tuple[int, int]:
    """Writes whose revisions the test compacts at: (first, second) compact
    revision. The first is a txn that overwrites, creates and deletes keys in
    one revision; the second a plain overwrite."""
    kv = s.kv()
    kv.Put(rpc_pb2.PutRequest(key=b"a", value=b"1"), timeout=30)
    kv.Put(rpc_pb2.PutRequest(key=b"b", value=b"1"), timeout=30)
    kv.Put(rpc_pb2.PutRequest(key=b"d", value=b"1"), timeout=30)
    first = kv.Txn(_txn(_put(b"a", b"2"), _put(b"c", b"1"), _delete(b"b")), timeout=30).header.revision
    kv.Put(rpc_pb2.PutRequest(key=b"c", value=b"2"), timeout=30)
    kv.DeleteRange(rpc_pb2.DeleteRangeRequest(key=b"a"), timeout=30)
    second = kv.Put(rpc_pb2.PutRequest(key=b"d", value=b"2"), timeout=30).header.revision
    kv.Put(rpc_pb2.PutRequest(key=b"e", value=b"1"), timeout=30)
    return first, second


def _lines(w: WatchStream) -> dict[int, list[str]]:
    """Per watch id: control responses (with their header revision) and events."""
    out: dict[int, list[str]] = {}
    with w.lock:
        for r in w.responses:
            lst = out.setdefault(r.watch_id, [])
            if r.created or r.canceled:
                lst.append(f"ctl rev={r.header.revision} created={r.created} canceled={r.canceled} "
                           f"compact={r.compact_revision}")
            lst.extend(text_format.MessageToString(e, as_one_line=True) for e in r.events)
    return out


def _watch_around(s: Server, compact: int) -> dict[int, list[str]]:
    """Watchers on every key with prev_kv from compact-1 (compacted), compact
    and compact+1; what each received once the stream has settled."""
    w = WatchStream(s.channel())
    try:
        for i, start in enumerate((compact - 1, compact, compact + 1)):
            w.requests.put(rpc_pb2.WatchRequest(create_request=rpc_pb2.WatchCreateRequest(
                key=b"\0", range_end=b"\0", start_revision=start, prev_kv=True, watch_id=i + 1)))
        # settled: the compacted one is cancelled and the others reached e's put
        wait_for(lambda: (got := _lines(w)) and len(got.get(1, [])) == 2
                 and all(got.get(i, [""])[-1].find('key: "e"') >= 0 for i in (2, 3)), 30, "watchers to settle")
        return _lines(w)
    finally:
        w.close()


def test_watch_from_compact_revision_matches_etcd(petcd: Server, etcd: Server) -> None:
    got: dict[str, list[dict[int, list[str]]]] = {}
    for name, s in (("petcd", petcd), ("etcd", etcd)):
        first, second = _history(s)
        runs = []
        for rev in (first, second):
            s.kv().Compact(rpc_pb2.CompactionRequest(revision=rev, physical=True), timeout=30)
            runs.append(_watch_around(s, rev))
        got[name] = runs
    for run_p, run_e in zip(got["petcd"], got["etcd"], strict=True):
        for wid in (1, 2, 3):
            assert run_p[wid] == run_e[wid], f"watcher {wid}\n petcd: {run_p[wid]}\n etcd:  {run_e[wid]}"
    first_run = got["petcd"][0]
    # from the compact revision: its surviving puts first (no previous values),
    # the deletion of b at that revision is gone with the compaction
    assert first_run[2][1].startswith('kv { key: "a"') and "prev_kv" not in first_run[2][1]
    assert first_run[2][2].startswith('kv { key: "c"')
    assert not any('key: "b"' in line for line in first_run[2])
    # below it: cancelled with the compact revision, a header without revision
    assert first_run[1][1].startswith("ctl rev=0 created=False canceled=True compact=")
