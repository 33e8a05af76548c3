"""Re-attaching stored keys to their leases a chunk at a time (after a
leader's backend is installed) ends where one full scan ends, with writes
applied between the chunks."""

from __future__ import annotations

from pathlib import Path

from petcd.lease.lessor import Lessor
from petcd.mvcc.kvstore import KVStore
from petcd.server.state import LeaseKeyRebuild
from petcd.storage.backend import Backend


def put(kv: KVStore, key: bytes, lease: int) -> None:
    w = kv.write()
    w.put(key, b"v", lease)
    w.end()


def fresh(backend: Backend) -> tuple[KVStore, Lessor]:
    kv = KVStore(backend)
    lessor = Lessor(backend, 1)
    kv.on_events = lambda events, rev: lessor.on_events(events)
    return kv, lessor


def test_chunked_rebuild_with_writes_between_chunks_matches_a_full_scan(tmp_path: Path) -> None:
    b = Backend(str(tmp_path / "db"), unsafe_no_fsync=True)
    try:
        kv, lessor = fresh(b)
        for lease in (1, 2, 3):
            lessor.grant(lease, 100)
        for i in range(5000):
            put(kv, b"k/%05d" % i, (1, 2, 3, 0)[i % 4])
        b.commit()

        # a new store and lessor on the same backend, as after an install
        kv, lessor = fresh(b)
        rebuild = LeaseKeyRebuild(kv, lessor)
        assert not rebuild.step(300)
        # writes behind and ahead of the scan, between its chunks
        put(kv, b"k/00000", 2)  # behind it: moves from lease 1 to lease 2
        put(kv, b"k/04000", 3)  # ahead of it: moves from lease 1 to lease 3
        put(kv, b"k/04001", 0)  # ahead: leaves lease 2
        put(kv, b"k/00008", 0)  # behind: leaves lease 1
        put(kv, b"new", 1)
        steps = 1
        while not rebuild.step(300):
            steps += 1
        assert steps > 10
        chunked = {i: set(lessor.lookup(i).keys) for i in (1, 2, 3)}  # type: ignore[union-attr]

        kv2, lessor2 = fresh(b)
        LeaseKeyRebuild(kv2, lessor2).finish()
        assert chunked == {i: set(lessor2.lookup(i).keys) for i in (1, 2, 3)}  # type: ignore[union-attr]
        assert b"k/00000" in chunked[2] and b"k/04000" in chunked[3]
        assert b"k/04001" not in chunked[2] and b"k/00008" not in chunked[1]
        assert b"new" in chunked[1]
        assert len(chunked[1]) == 1250 - 3 + 1
    finally:
        b.close()
