"""Watch responses built from parts encoded once are the bytes protobuf
makes for the same message."""

from __future__ import annotations

import random

from petcd.api import watch_encoding
from petcd.proto import kv_pb2, rpc_pb2


def test_same_bytes_as_protobuf() -> None:
    rng = random.Random(7)
    for _ in range(300):
        evs = []
        for _ in range(rng.randrange(0, 5)):
            ev = kv_pb2.Event(type=rng.choice([kv_pb2.Event.PUT, kv_pb2.Event.DELETE]))
            ev.kv.key = rng.randbytes(rng.randrange(0, 40))
            ev.kv.value = rng.randbytes(rng.choice([0, 5, 300]))
            ev.kv.mod_revision = rng.randrange(0, 2**40)
            ev.kv.version = rng.randrange(0, 5)
            if rng.random() < 0.3:
                ev.prev_kv.key = ev.kv.key
                ev.prev_kv.value = b"old"
            evs.append(ev)
        cid, mid = rng.choice([0, 1, 2**63 + 5]), rng.choice([0, 12345678901234])
        rev, term = rng.randrange(1, 2**40), rng.randrange(0, 300)
        wid = rng.choice([0, 1, 127, 128, 2**40, -1])
        expected = rpc_pb2.WatchResponse(
            header=rpc_pb2.ResponseHeader(cluster_id=cid, member_id=mid, revision=rev, raft_term=term),
            watch_id=wid,
            events=evs,
        ).SerializeToString()
        head = watch_encoding.header(cid, mid, rev, term)
        got = watch_encoding.responses(head, [wid, wid], watch_encoding.events(evs))
        assert got == [expected, expected]


def test_events_are_encoded_once_per_list() -> None:
    evs = [kv_pb2.Event(kv=kv_pb2.KeyValue(key=b"k", value=b"v"))]
    first = watch_encoding.events(evs)
    evs[0].kv.value = b"changed"  # not seen: the same list is the same revision's events
    assert watch_encoding.events(evs) is first
    assert watch_encoding.events(list(evs)) != first
