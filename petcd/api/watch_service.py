"""etcdserverpb.Watch over gRPC: one bidirectional stream carries many
watchers; creates, cancels and progress requests come in, created/canceled
responses and event batches go out, in order."""

from __future__ import annotations

import asyncio
import collections
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TypeAlias

from petcd import stats
from petcd.api import watch_encoding
from petcd.api.errors import status_of
from petcd.api.handler import auth_info, fill_header
from petcd.auth import checks as auth_checks
from petcd.auth.errors import AuthError
from petcd.http2.grpc import Messages
from petcd.http2.server import CallContext
from petcd.mvcc.key_range import KeyRange
from petcd.mvcc.watchable_store import WatchableStore, WatchBatch, Watcher, WatchSink
from petcd.proto import rpc_pb2
from petcd.server.etcd_server import EtcdServer

Ctx: TypeAlias = CallContext

# What a stream may hold unsent before its watchers are parked (they then
# catch up from the backend when the client reads again): event responses
# (a batch counts once for each of its watchers), and roughly bytes of
# events. A batch larger than either budget is taken when nothing else
# waits, so that any revision can be delivered.
STREAM_BUFFER = 8192
STREAM_BUFFER_BYTES = 8 << 20
# Control responses (created, canceled, progress) a stream may hold unsent;
# at this many it stops reading requests, so that a client that sends
# requests and never reads the responses is held by flow control instead of
# growing the server (etcd holds fewer still: 16).
CONTROL_BUFFER = 64
# What the sender takes from the outbox to render at once, in responses and
# bytes of events: rendered responses are copies, so this bounds the copies
# in memory too.
CHUNK_ITEMS = 1024
CHUNK_BYTES = 4 << 20
# Events at most in one response made by merging a watcher's queued batches.
MERGE_EVENTS = 1000
MERGE_BYTES = 1 << 20

# etcd_debugging_mvcc_{watch_stream,pending_events}_total are kept here
_WATCHES = stats.WATCHES

ERR_DUPLICATE_WATCH_ID = "mvcc: duplicate watch ID provided on the WatchStream"
ERR_EMPTY_WATCHER_RANGE = "mvcc: watcher range is empty"


class _Outbox(WatchSink):
    """A stream's outgoing messages, in order. Event batches are taken while
    fewer than STREAM_BUFFER (and STREAM_BUFFER_BYTES) wait, else refused
    (the store parks the watcher). Control responses are always taken (a
    created response must precede its watcher's events), and the stream's
    request reader waits on ``control_room`` before reading on."""

    def __init__(self, store: WatchableStore) -> None:
        self.store = store
        self.items: collections.deque[rpc_pb2.WatchResponse | WatchBatch] = collections.deque()
        self.batches = 0
        self.bytes = 0
        self.controls = 0
        self.refused = False
        self.failure: BaseException | None = None  # the request reader's error: it ends the stream
        self.ready = asyncio.Event()
        self.control_room = asyncio.Event()
        self.control_room.set()

    def has_room(self) -> bool:
        # once it refused a batch, the outbox is full until the sender takes
        # from it (which resumes the store): no history is read for nothing
        return not self.refused and self.batches < STREAM_BUFFER and self.bytes < STREAM_BUFFER_BYTES

    def offer(self, batch: WatchBatch) -> bool:
        # budgets count each watcher's copy: each gets a response of its own
        n = len(batch.watchers)
        size = batch.size * n
        if self.batches and (self.batches + n > STREAM_BUFFER or self.bytes + size > STREAM_BUFFER_BYTES):
            self.refused = True
            return False
        self.batches += n
        self.bytes += size
        _WATCHES.pending += len(batch.events) * n  # etcd_debugging_mvcc_pending_events_total
        self.items.append(batch)
        self.ready.set()
        return True

    def control(self, resp: rpc_pb2.WatchResponse) -> None:
        self.items.append(resp)
        self.controls += 1
        if self.controls >= CONTROL_BUFFER:
            self.control_room.clear()
        self.ready.set()

    def reader_done(self, reader: asyncio.Task[None]) -> None:
        """The request reader ended: an error of its ends the stream (a
        client that only half-closed keeps its watchers, as with etcd)."""
        if not reader.cancelled() and reader.exception() is not None:
            self.failure = reader.exception()
            self.ready.set()

    def discard(self) -> None:
        """The stream ended: what it still holds will never be sent."""
        for item in self.items:
            if type(item) is WatchBatch:
                _WATCHES.pending -= len(item.events) * len(item.watchers)
        self.items.clear()
        self.batches = self.bytes = self.controls = 0

    def controls_full(self) -> bool:
        return self.controls >= CONTROL_BUFFER

    async def take(self) -> list[rpc_pb2.WatchResponse | WatchBatch]:
        """The oldest queued items, in order, once there is something: for
        at most CHUNK_ITEMS responses and about CHUNK_BYTES of events (a
        batch for more watchers is split); the request reader's error once
        it failed."""
        while not self.items and self.failure is None:
            self.ready.clear()
            await self.ready.wait()
        if self.failure is not None:
            raise self.failure
        items: list[rpc_pb2.WatchResponse | WatchBatch] = []
        responses = size = 0
        while self.items and responses < CHUNK_ITEMS and size < CHUNK_BYTES:
            item = self.items[0]
            if type(item) is WatchBatch:
                # a batch for more watchers than the chunk holds is split
                n = len(item.watchers)
                k = min(n, CHUNK_ITEMS - responses, max(1, (CHUNK_BYTES - size) // max(item.size, 1)))
                if k < n:
                    self.items[0] = WatchBatch(item.watchers[k:], item.events, item.revision, 0, item.size)
                    item = WatchBatch(item.watchers[:k], item.events, item.revision, 0, item.size)
                else:
                    self.items.popleft()
                self.batches -= k
                self.bytes -= item.size * k
                _WATCHES.pending -= len(item.events) * k
                responses += k
                size += item.size * k
            else:
                self.items.popleft()
                self.controls -= 1
                responses += 1
            items.append(item)
        if self.controls < CONTROL_BUFFER:
            self.control_room.set()
        if self.refused and self.batches < STREAM_BUFFER and self.bytes < STREAM_BUFFER_BYTES:
            self.refused = False
            self.store.resume()
        return items


class _Stream:
    """One client's Watch stream: its watchers by id and its outbox."""

    def __init__(self, server: EtcdServer) -> None:
        self.s = server
        self.store = server.watchable
        self.out = _Outbox(self.store)
        self.watchers: dict[int, Watcher] = {}
        self.fragment: set[int] = set()
        self.next_id = 0

    def response(self, watch_id: int, revision: int | None = None) -> rpc_pb2.WatchResponse:
        resp = rpc_pb2.WatchResponse(watch_id=watch_id)
        if revision is not None:
            resp.header.revision = revision
        fill_header(self.s, resp.header)
        return resp

    def create(self, c: rpc_pb2.WatchCreateRequest) -> None:
        key = c.key or b"\0"  # an empty key watches from the smallest key
        end = c.range_end
        if KeyRange(key, end).is_empty():
            resp = self.response(-1)
            resp.created = True
            resp.canceled = True
            resp.cancel_reason = ERR_EMPTY_WATCHER_RANGE
            self.out.control(resp)
            return
        if c.watch_id != 0:
            if c.watch_id in self.watchers:
                resp = self.response(-1)
                resp.created = True
                resp.canceled = True
                resp.cancel_reason = ERR_DUPLICATE_WATCH_ID
                self.out.control(resp)
                return
            wid = c.watch_id
        else:
            while self.next_id in self.watchers:
                self.next_id += 1
            wid = self.next_id
            self.next_id += 1
        filters = set(c.filters)
        w = Watcher(
            id=wid,
            key=key,
            end=end,
            sink=self.out,
            next_rev=0,
            prev_kv=c.prev_kv,
            no_put=rpc_pb2.WatchCreateRequest.NOPUT in filters,
            no_delete=rpc_pb2.WatchCreateRequest.NODELETE in filters,
            progress_notify=c.progress_notify,
        )
        self.watchers[wid] = w
        if c.fragment:
            self.fragment.add(wid)
        created = self.response(wid)
        created.created = True
        # The created response must go out before any event of this watcher.
        self.out.control(created)
        self.store.watch(w, c.start_revision)

    def cancel(self, watch_id: int) -> None:
        w = self.watchers.pop(watch_id, None)
        if w is None:
            return
        self.fragment.discard(watch_id)
        self.store.cancel(w)
        resp = self.response(watch_id)
        resp.canceled = True
        self.out.control(resp)

    def progress_all(self) -> None:
        self.out.control(self.response(-1))

    def progress_notify(self) -> None:
        for w in self.watchers.values():
            if w.progress_notify and w.synced:
                self.out.control(self.response(w.id))

    def close(self) -> None:
        for w in self.watchers.values():
            self.store.cancel(w)
        self.watchers.clear()
        self.out.discard()

    def render_all(self, items: list[rpc_pb2.WatchResponse | WatchBatch]) -> Messages:
        """The responses for a run of queued items, in order. Each watcher
        of a batch gets a response of its own; batches queued for the same
        watchers go out as one response per watcher (fewer, larger messages
        when the client or the network is slower than the writes), never
        across a control response or a later batch for any of those
        watchers, so each watcher's events stay in order and created,
        canceled and progress responses keep their place. Event responses
        come out encoded, from events and headers encoded once for every
        watcher (watch_encoding)."""
        out: list[rpc_pb2.WatchResponse | _Run] = []
        runs: dict[tuple[Watcher, ...], _Run] = {}  # still open to more batches
        encodings: dict[int, bytes] = {}  # by id of an event list (alive in items): most are shared
        for item in items:
            if type(item) is not WatchBatch:  # a control response (cheaper than a protobuf isinstance)
                assert isinstance(item, rpc_pb2.WatchResponse)
                runs.clear()
                out.append(item)
                continue
            if item.compact_revision or (self.fragment and any(w.id in self.fragment for w in item.watchers)):
                runs.clear()
                for w in item.watchers:
                    out.extend(self.render(w, item))
                continue
            encoded = encodings.get(id(item.events))
            if encoded is None:
                encoded = encodings[id(item.events)] = watch_encoding.events(item.events)
            count = len(item.events)
            key = tuple(item.watchers)
            run = runs.get(key)
            if run is not None and run.count + count <= MERGE_EVENTS and run.size + len(encoded) <= MERGE_BYTES:
                run.parts.append(encoded)
                run.count += count
                run.size += len(encoded)
                run.revision = item.revision
                continue
            if runs:  # runs for any of these watchers take no more: their events would pass these
                mine = set(key)
                for k in [k for k in runs if not mine.isdisjoint(k)]:
                    del runs[k]
            run = runs[key] = _Run(item.watchers, item.revision, [encoded], count, len(encoded))
            out.append(run)
        return self._responses(out)

    def _responses(self, out: list[rpc_pb2.WatchResponse | _Run]) -> Messages:
        """Control responses as they are; a run as a response for each of
        its watchers: the same header and events, the watcher's id between."""
        s = self.s
        messages = Messages()
        for o in out:
            if type(o) is not _Run:
                messages.append(o)
                continue
            head = watch_encoding.header(s.cluster_id, s.member_id, o.revision, s.term)
            parts = o.parts
            events = parts[0] if len(parts) == 1 else b"".join(parts)
            messages.extend(watch_encoding.responses(head, [w.id for w in o.watchers], events))
        return messages

    def render(self, w: Watcher, item: WatchBatch) -> list[rpc_pb2.WatchResponse]:
        """A batch's responses for one of its watchers, as messages: a
        compaction's cancel, or events split into fragments if the watcher
        asked for them."""
        if item.compact_revision:
            # etcd's compacted response: no revision in its header
            resp = rpc_pb2.WatchResponse(watch_id=w.id, compact_revision=item.compact_revision, canceled=True)
            fill_header(self.s, resp.header)
            resp.header.revision = 0
            self.watchers.pop(w.id, None)
            return [resp]
        resp = self.response(w.id, item.revision)
        resp.events.extend(item.events)
        limit = self.s.cfg.max_request_bytes
        if w.id not in self.fragment or resp.ByteSize() <= limit:
            return [resp]
        return _fragments(resp, limit)


@dataclass(slots=True)
class _Run:
    """Event batches for the same watchers, going out as one response per
    watcher (with the last batch's revision in its header)."""

    watchers: list[Watcher]
    revision: int
    parts: list[bytes]
    count: int
    size: int


def _fragments(resp: rpc_pb2.WatchResponse, limit: int) -> list[rpc_pb2.WatchResponse]:
    """Split a response whose events exceed limit; every part but the last
    says fragment=true (at least one event per part)."""
    parts: list[rpc_pb2.WatchResponse] = []
    cur = rpc_pb2.WatchResponse(header=resp.header, watch_id=resp.watch_id, fragment=True)
    for ev in resp.events:
        if cur.events and cur.ByteSize() + ev.ByteSize() > limit:
            parts.append(cur)
            cur = rpc_pb2.WatchResponse(header=resp.header, watch_id=resp.watch_id, fragment=True)
        cur.events.append(ev)
    cur.fragment = False
    parts.append(cur)
    return parts


class WatchService:
    def __init__(self, server: EtcdServer) -> None:
        self.s = server

    async def Watch(
        self, request_iterator: AsyncIterator[rpc_pb2.WatchRequest], context: Ctx
    ) -> AsyncIterator[Messages]:
        stream = _Stream(self.s)
        reader = asyncio.create_task(self._read(stream, request_iterator, context))
        # When the client closes its side the reader ends, but (as with
        # etcd) the watchers keep delivering until the call is cancelled;
        # a failed reader ends the stream with its error (through take).
        reader.add_done_callback(stream.out.reader_done)
        ticker = asyncio.create_task(self._progress(stream))
        _WATCHES.streams += 1  # etcd_debugging_mvcc_watch_stream_total; less one in finally
        try:
            while True:
                # one yield per take: the front end writes the lot at once
                yield stream.render_all(await stream.out.take())
        finally:
            reader.cancel()
            ticker.cancel()
            stream.close()
            _WATCHES.streams -= 1

    async def _denied(self, c: rpc_pb2.WatchCreateRequest, context: Ctx) -> str:
        """Why the stream's user may not watch c's range ("" if it may): the
        gRPC error text etcd puts in cancel_reason."""
        try:
            info = await auth_info(self.s, context)
            if self.s.auth.enabled:
                auth_checks.check_watch(self.s.auth, info, c)
        except AuthError as exc:
            code, message = status_of(exc)
            go_code = "".join(part.capitalize() for part in code.name.split("_"))
            return f"rpc error: code = {go_code} desc = {message}"
        return ""

    async def _read(self, stream: _Stream, requests: AsyncIterator[rpc_pb2.WatchRequest], context: Ctx) -> None:
        async for req in requests:
            # the client is not taking its responses: read no more requests
            # until it does (flow control then stops the client)
            await stream.out.control_room.wait()
            which = req.WhichOneof("request_union")
            if which == "create_request":
                reason = await self._denied(req.create_request, context)
                if reason:
                    resp = stream.response(-1)
                    resp.created = True
                    resp.canceled = True
                    resp.cancel_reason = reason
                    stream.out.control(resp)
                    continue
                stream.create(req.create_request)
            elif which == "cancel_request":
                stream.cancel(req.cancel_request.watch_id)
            elif which == "progress_request":
                stream.progress_all()

    async def _progress(self, stream: _Stream) -> None:
        interval = self.s.cfg.watch_progress_notify_interval_s
        while True:
            await asyncio.sleep(interval)
            if not stream.out.controls_full():  # a client that is not reading misses a tick
                stream.progress_notify()
