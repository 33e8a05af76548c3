"""Differential watch test: the same seeded operations on petcd and real
etcd, watched by watchers with every option (prefix, from-key, one key,
prev_kv, filters, history replay from past and compacted revisions); the
event streams must be identical."""

from __future__ import annotations

import random
from typing import Any

import pytest
from google.protobuf import text_format

from petcd.proto import rpc_pb2
from petcd.testing.harness import Server, wait_for
from tests.integration.test_watch_guarantees import WatchStream

pytestmark = pytest.mark.timeout(600)

SEED = 424242
KEYS = [b"w/a", b"w/b", b"w/c", b"x", b"y/1", b"y/2"]
NOPUT, NODELETE = rpc_pb2.WatchCreateRequest.NOPUT, rpc_pb2.WatchCreateRequest.NODELETE


def _watch_specs(rng: random.Random, max_rev: int) -> list[rpc_pb2.WatchCreateRequest]:
    specs = []
    for _ in range(12):
        key = rng.choice(KEYS + [b"w/", b"y/"])
        end = rng.choice([b"", b"\0", key[:-1] + bytes([key[-1] + 1])])
        req = rpc_pb2.WatchCreateRequest(key=key, range_end=end, prev_kv=rng.random() < 0.5)
        if rng.random() < 0.3:
            req.filters.append(rng.choice([NOPUT, NODELETE]))
        if max_rev and rng.random() < 0.7:
            req.start_revision = rng.randint(1, max_rev)
        specs.append(req)
    return specs


def _ops(rng: random.Random, n: int) -> list[tuple[str, Any]]:
    ops: list[tuple[str, Any]] = []
    for _ in range(n):
        c = rng.random()
        key = rng.choice(KEYS)
        if c < 0.55:
            ops.append(("Put", rpc_pb2.PutRequest(key=key, value=b"v%d" % rng.randint(0, 9))))
        elif c < 0.75:
            ops.append(("DeleteRange", rpc_pb2.DeleteRangeRequest(key=key, range_end=rng.choice([b"", b"\0"]))))
        else:
            txn = rpc_pb2.TxnRequest(success=[
                rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=b"w/a", value=b"t")),
                rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=b"y/2", value=b"t")),
                rpc_pb2.RequestOp(request_delete_range=rpc_pb2.DeleteRangeRequest(key=b"x")),
            ])
            ops.append(("Txn", txn))
    return ops


def _events(w: WatchStream) -> dict[int, list[str]]:
    out: dict[int, list[str]] = {}
    with w.lock:
        for r in w.responses:
            lst = out.setdefault(r.watch_id, [])
            if r.created or r.canceled or r.compact_revision:
                lst.append(f"ctl created={r.created} canceled={r.canceled} compact={r.compact_revision} "
                           f"reason={r.cancel_reason!r}")
            for e in r.events:
                lst.append(text_format.MessageToString(e, as_one_line=True))
    return out


def _whole_revisions(w: WatchStream) -> bool:
    """Every revision's events arrive in one response."""
    seen: dict[tuple[int, int], int] = {}
    with w.lock:
        for i, r in enumerate(w.responses):
            for e in r.events:
                if seen.setdefault((r.watch_id, e.kv.mod_revision), i) != i:
                    return False
    return True


def test_watch_streams_match_etcd(petcd: Server, etcd: Server) -> None:
    rng = random.Random(SEED)
    ops = _ops(rng, 300)
    servers = {"petcd": petcd, "etcd": etcd}
    base = {name: s.kv().Range(rpc_pb2.RangeRequest(key=b"\0", range_end=b"\0", count_only=True), timeout=30)
            .header.revision for name, s in servers.items()}
    assert base["petcd"] == base["etcd"], "the servers must start this test at the same revision"
    streams = {name: WatchStream(s.channel()) for name, s in servers.items()}
    live = _watch_specs(rng, 0)
    for w in streams.values():
        for spec in live:
            w.requests.put(rpc_pb2.WatchRequest(create_request=spec))
    wait_for(lambda: all(len(w.created()) == len(live) for w in streams.values()), 30, "live watchers")
    for s in servers.values():
        kv = s.kv()
        for method, req in ops[:200]:
            getattr(kv, method)(req, timeout=30)
        mid = kv.Range(rpc_pb2.RangeRequest(key=b"x"), timeout=30).header.revision
        kv.Compact(rpc_pb2.CompactionRequest(revision=mid - 50, physical=True), timeout=30)
        for method, req in ops[200:]:
            getattr(kv, method)(req, timeout=30)
    final = {name: s.kv().Range(rpc_pb2.RangeRequest(key=b"x"), timeout=30).header.revision
             for name, s in servers.items()}
    assert final["petcd"] == final["etcd"]
    # history replay, some from before the compaction
    replay = _watch_specs(rng, final["etcd"])
    for w in streams.values():
        for spec in replay:
            w.requests.put(rpc_pb2.WatchRequest(create_request=spec))

    def settled() -> bool:
        ev = {name: _events(w) for name, w in streams.items()}
        return ev["petcd"] == ev["etcd"] and len(ev["etcd"]) == len(live) + len(replay)

    try:
        wait_for(settled, 60, "the event streams to match")
    except AssertionError:
        ep, ee = _events(streams["petcd"]), _events(streams["etcd"])
        for wid in sorted(set(ep) | set(ee)):
            if ep.get(wid) != ee.get(wid):
                pytest.fail(f"seed {SEED}: watcher {wid} differs\n petcd: {ep.get(wid)}\n etcd:  {ee.get(wid)}")
        raise
    finally:
        for w in streams.values():
            w.close()
    assert _whole_revisions(streams["petcd"])
    got = _events(streams["petcd"])
    assert sum(len(v) for v in got.values()) > 300  # the watchers did see a real history
    assert any("compact=" in line and "compact=0" not in line for v in got.values() for line in v)
