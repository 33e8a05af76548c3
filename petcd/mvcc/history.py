"""The store's history as the watchable store sees it."""

from __future__ import annotations

from petcd.mvcc.kvstore import KVStore
from petcd.mvcc.watchable_store import History
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
