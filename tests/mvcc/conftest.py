"""Fixtures for the mvcc tests: a KVStore on a real Backend in tmp_path,
driven with etcd's requests through petcd.server.txn, as the applier does."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from petcd.mvcc.kvstore import KVStore
from petcd.proto import kv_pb2, rpc_pb2
from petcd.server import txn
from petcd.storage.backend import Backend

R = rpc_pb2


class Harness:
    """A store, its backend and the events it reported; can reopen itself."""

    def __init__(self, path: Path, leases: set[int]) -> None:
        self.path = path
        self.leases = leases
        self.events: list[tuple[int, list[kv_pb2.Event]]] = []
        self.backend = Backend(str(path / "db"), unsafe_no_fsync=True)
        self.kv = self._open()

    def _open(self) -> KVStore:
        kv = KVStore(self.backend)
        kv.on_events = lambda evs, rev: self.events.append((rev, list(evs)))
        return kv

    def reopen(self) -> KVStore:
        self.backend.close()
        self.backend = Backend(str(self.path / "db"), unsafe_no_fsync=True)
        self.kv = self._open()
        return self.kv

    def close(self) -> None:
        self.backend.close()

    def lease_exists(self, lease: int) -> bool:
        return lease in self.leases

    # etcd's requests, as the applier carries them out
    def put_request(self, req: rpc_pb2.PutRequest) -> rpc_pb2.PutResponse:
        return txn.put(self.kv, req, self.lease_exists)

    def delete_request(self, req: rpc_pb2.DeleteRangeRequest) -> rpc_pb2.DeleteRangeResponse:
        return txn.delete_range(self.kv, req)

    def range_request(self, req: rpc_pb2.RangeRequest) -> rpc_pb2.RangeResponse:
        return txn.range_(self.kv, req)

    def txn(self, req: rpc_pb2.TxnRequest) -> rpc_pb2.TxnResponse:
        return txn.txn(self.kv, req, self.lease_exists)

    # shorthands
    def put(self, key: bytes, value: bytes = b"", **kw: object) -> rpc_pb2.PutResponse:
        return self.put_request(R.PutRequest(key=key, value=value, **kw))  # type: ignore[arg-type]

    def delete(self, key: bytes, range_end: bytes = b"", **kw: object) -> rpc_pb2.DeleteRangeResponse:
        return self.delete_request(R.DeleteRangeRequest(key=key, range_end=range_end, **kw))  # type: ignore[arg-type]

    def get(self, key: bytes, range_end: bytes = b"", **kw: object) -> rpc_pb2.RangeResponse:
        return self.range_request(R.RangeRequest(key=key, range_end=range_end, **kw))  # type: ignore[arg-type]

    def keys(self, key: bytes = b"\0", range_end: bytes = b"\0", **kw: object) -> list[bytes]:
        return [kv.key for kv in self.get(key, range_end, **kw).kvs]


@pytest.fixture
def h(tmp_path: Path) -> Iterator[Harness]:
    harness = Harness(tmp_path, {7})
    yield harness
    harness.close()


@pytest.fixture
def make_harness(tmp_path: Path) -> Iterator[Callable[[str], Harness]]:
    made: list[Harness] = []

    def make(name: str) -> Harness:
        d = tmp_path / name
        d.mkdir()
        harness = Harness(d, {7})
        made.append(harness)
        return harness

    yield make
    for harness in made:
        harness.close()


def populate(h: Harness) -> None:
    """rev 2..9: a=1, b=2, c=3 (lease 7), a=4, d=5, del d, ab=6, b=0.

    At rev 9: a (create 2, mod 5, version 2, "4"), ab (8, 8, 1, "6"),
    b (3, 9, 2, "0"), c (4, 4, 1, "3", lease 7).
    """
    h.put(b"a", b"1")
    h.put(b"b", b"2")
    h.put(b"c", b"3", lease=7)
    h.put(b"a", b"4")
    h.put(b"d", b"5")
    h.delete(b"d")
    h.put(b"ab", b"6")
    h.put(b"b", b"0")
    assert h.kv.rev == 9
