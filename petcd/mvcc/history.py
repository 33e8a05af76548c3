"""The store's history as the watchable store sees it."""

from __future__ import annotations

from petcd.mvcc.kvstore import KVStore
from petcd.mvcc.watchable_store import History, events_size
from petcd.proto import kv_pb2


class StoreHistory(History):
    """Current and compact revisions and past events, read from a KVStore."""

    def __init__(self, kv: KVStore) -> None:
        self.kv = kv

    def current_revision(self) -> int:
        return self.kv.rev

    def compact_revision(self) -> int:
        return self.kv.compact_rev

    def events(
        self, start_rev: int, end_rev: int, key: bytes, end: bytes, prev_kv: bool
    ) -> list[kv_pb2.Event]:
        return self.kv.events(start_rev, end_rev, key, end, prev_kv)

    def events_limited(
        self, start_rev: int, end_rev: int, key: bytes, end: bytes, prev_kv: bool, max_bytes: int
    ) -> tuple[list[kv_pb2.Event], int]:
        out: list[kv_pb2.Event] = []
        size = 0
        last = 0
        for ev in self.kv.iter_events(start_rev, end_rev, key, end, prev_kv):
            rev = ev.kv.mod_revision
            if rev != last and size >= max_bytes:
                return out, rev  # whole revisions only: rev is read next time
            last = rev
            size += events_size([ev])
            out.append(ev)
        return out, end_rev
