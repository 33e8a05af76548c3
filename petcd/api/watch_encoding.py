"""WatchResponse bytes built from parts encoded once: a revision's events are
serialized once however many watchers receive them (the store hands every
watcher with the same options the same event list), the header once per
revision, and only the watch id per watcher. The result is the same bytes
protobuf would produce for the equivalent message (fields in number order,
zero values left out)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from functools import lru_cache

from petcd.proto import kv_pb2
from petcd.varint import varint

_EVENTS_CACHE = 512  # event lists remembered (each by identity, kept alive while cached)
_events_cache: OrderedDict[int, tuple[list[kv_pb2.Event], bytes]] = OrderedDict()


def _field_varint(tag: int, n: int) -> bytes:
    return bytes((tag,)) + varint(n) if n else b""


def header(cluster_id: int, member_id: int, revision: int, raft_term: int) -> bytes:
    """WatchResponse field 1 (the ResponseHeader), tag and length included."""
    body = _ids(cluster_id, member_id) + _field_varint(0x18, revision) + _term(raft_term)
    return b"\x0a" + varint(len(body)) + body


@lru_cache(maxsize=16)
def _ids(cluster_id: int, member_id: int) -> bytes:
    return _field_varint(0x08, cluster_id) + _field_varint(0x10, member_id)


@lru_cache(maxsize=16)
def _term(raft_term: int) -> bytes:
    return _field_varint(0x20, raft_term)


def events(evs: list[kv_pb2.Event]) -> bytes:
    """WatchResponse field 11 for each event of evs, encoded once per list."""
    key = id(evs)
    hit = _events_cache.get(key)
    if hit is not None and hit[0] is evs:
        return hit[1]
    parts = []
    for ev in evs:
        raw = ev.SerializeToString()
        parts.append(b"\x5a" + varint(len(raw)) + raw)
    encoded = b"".join(parts)
    _events_cache[key] = (evs, encoded)
    if len(_events_cache) > _EVENTS_CACHE:
        _events_cache.popitem(last=False)
    return encoded


def responses(header_field: bytes, watch_ids: Iterable[int], event_fields: bytes) -> list[bytes]:
    """A WatchResponse carrying events for each of watch_ids, alike but for the id."""
    wid = _watch_id_field
    return [header_field + wid(i) + event_fields for i in watch_ids]


@lru_cache(maxsize=4096)
def _watch_id_field(watch_id: int) -> bytes:
    """WatchResponse field 2; watch ids are small and reused, so remembered."""
    return _field_varint(0x10, watch_id)
