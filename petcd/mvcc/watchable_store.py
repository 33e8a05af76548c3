"""The watchable store: delivers the store's events to watchers, in revision
order, each event exactly once.

A watcher is either *synced* (it has seen everything up to the current
revision and gets each new revision's events as they are applied) or
*unsynced* (it starts in the past, or its client fell behind): the sync loop
reads its missing revisions from the backend in chunks and moves it to
synced once caught up. A watcher whose stream is full is not given more
events and not dropped: it simply becomes unsynced at the first revision it
did not get, holding no events in memory, and catches up from the backend
when its client reads again. That bounds memory per slow watcher and never
blocks writes or other watchers.

A watcher that starts below the compact revision (or falls that far behind)
is cancelled with the compact revision, as etcd does. One that starts exactly
at the compact revision is served from it (clients resume at the
CompactRevision they were given): it gets what survives compaction at that
revision, as etcd does once the compaction has run: the puts, without their
previous values (those are compacted), and not the deletions (a tombstone at
the compact revision is removed by compaction).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from petcd import stats
from petcd.mvcc.key_range import KeyRange
from petcd.proto import kv_pb2

log = logging.getLogger("petcd.mvcc.watch")

PUT = kv_pb2.Event.PUT
DELETE = kv_pb2.Event.DELETE


@dataclass(slots=True)
class WatchBatch:
    """What watchers of one sink are sent: the same events of whole
    revisions for each of them (live events go out to all of a stream's
    watchers alike in one batch, so a revision costs a stream one offer
    however many of its watchers see it), or a compaction (one watcher)."""

    watchers: list[Watcher]
    events: list[kv_pb2.Event]
    revision: int
    compact_revision: int = 0
    # roughly the events' encoded size (keys and values), for each watcher:
    # what a stream counts against its byte budget once per watcher
    size: int = 0


class WatchSink:
    """A watch stream's outbox, as the store sees it: ``offer`` takes a batch
    (for all of its watchers) or refuses it when the stream is full; the
    stream calls the store's ``resume`` hook when it has room again. Sinks
    are compared by identity (the store groups watchers by sink)."""

    def offer(self, batch: WatchBatch) -> bool:  # pragma: no cover - interface
        raise NotImplementedError

    def has_room(self) -> bool:
        """Whether an offer may be taken now (the store reads no history for
        watchers whose stream is full)."""
        return True


def events_size(events: list[kv_pb2.Event]) -> int:
    """Roughly the encoded size of events, cheaply: keys and values."""
    return sum(len(ev.kv.key) + len(ev.kv.value) + len(ev.prev_kv.value) + 32 for ev in events)


@dataclass(slots=True, eq=False)
class Watcher:
    id: int
    key: bytes
    end: bytes  # b"": the key alone; b"\0": every key from key on; else [key, end)
    sink: WatchSink
    next_rev: int  # the first revision this watcher has not been sent
    prev_kv: bool = False
    no_put: bool = False
    no_delete: bool = False
    progress_notify: bool = False
    synced: bool = False
    canceled: bool = False
    keys: KeyRange = field(init=False, repr=False)
    # (prev_kv, no_put, no_delete): watchers with the same options see the same events
    options: tuple[bool, bool, bool] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.keys = KeyRange(self.key, self.end)
        self.options = (self.prev_kv, self.no_put, self.no_delete)

    def matches(self, key: bytes) -> bool:
        return self.keys.contains(key)

    def select(self, events: list[kv_pb2.Event]) -> list[kv_pb2.Event]:
        out = []
        for ev in events:
            if not self.matches(ev.kv.key):
                continue
            if (ev.type == PUT and self.no_put) or (ev.type == DELETE and self.no_delete):
                continue
            if not self.prev_kv and ev.HasField("prev_kv"):
                slim = kv_pb2.Event(type=ev.type)
                slim.kv.CopyFrom(ev.kv)
                ev = slim
            out.append(ev)
        return out


@dataclass(slots=True)
class _Group:
    """Synced watchers on one identical range: matched against an event
    once. Held by sink and options: the watchers of one stream with the
    same options get one batch per revision."""

    key: bytes
    end: bytes
    members: dict[tuple[WatchSink, tuple[bool, bool, bool]], dict[Watcher, None]] = field(default_factory=dict)
    count: int = 0
    keys: KeyRange = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.keys = KeyRange(self.key, self.end)

    def add(self, w: Watcher) -> bool:
        """Adds w; whether it was not there yet."""
        ws = self.members.setdefault((w.sink, w.options), {})
        if w in ws:
            return False
        ws[w] = None
        self.count += 1
        return True

    def discard(self, w: Watcher) -> bool:
        """Removes w; whether it was there."""
        ws = self.members.get((w.sink, w.options))
        if ws is None or w not in ws:
            return False
        del ws[w]
        if not ws:
            del self.members[(w.sink, w.options)]
        self.count -= 1
        return True

    def watchers(self) -> list[Watcher]:
        return [w for ws in self.members.values() for w in ws]


class History:
    """What the watchable store needs from the store beneath it."""

    def current_revision(self) -> int:  # pragma: no cover - interface
        raise NotImplementedError

    def compact_revision(self) -> int:  # pragma: no cover - interface
        raise NotImplementedError

    def events(self, start_rev: int, end_rev: int, key: bytes, end: bytes, prev_kv: bool) -> list[kv_pb2.Event]:
        """Events of revisions [start_rev, end_rev) on keys in [key, end)."""
        raise NotImplementedError  # pragma: no cover - interface

    def events_limited(
        self, start_rev: int, end_rev: int, key: bytes, end: bytes, prev_kv: bool, max_bytes: int
    ) -> tuple[list[kv_pb2.Event], int]:
        """events() of whole revisions from start_rev on, stopping at the
        first revision boundary after about max_bytes (events_size): the
        events and the first revision not read (end_rev when all were)."""
        return self.events(start_rev, end_rev, key, end, prev_kv), end_rev


class WatchableStore:
    # Revisions read from the backend per pass at most: bounds the time a
    # pass holds the loop.
    SYNC_CHUNK_REVS = 1000
    # Bytes of events a pass reads at most (whole revisions; the revision
    # that crosses it is the last): bounds its memory when values are large,
    # and the size of the catch-up responses made from it (a watcher's
    # share of a pass goes out as one response; grpc clients refuse
    # messages over 4 MB by default).
    SYNC_CHUNK_BYTES = 1 << 20

    def __init__(self, history: History, sync_interval: float = 0.1) -> None:
        self.history = history
        self.sync_interval = sync_interval
        self._groups: dict[tuple[bytes, bytes], _Group] = {}
        self._unsynced: set[Watcher] = set()
        # synced watchers that asked for prev_kv: only they use a live
        # event's prev_kv (catching up reads it from the history)
        self._synced_prev_kv = 0
        self._kick = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._sync_loop(), name="watch-sync")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    # ---- watchers ------------------------------------------------------------

    def watch(self, watcher: Watcher, start_rev: int) -> None:
        """Register a watcher; start_rev 0 means "from the next revision"."""
        cur = self.history.current_revision()
        if start_rev == 0 or start_rev > cur:
            watcher.next_rev = start_rev if start_rev > cur else cur + 1
            self._add_synced(watcher)
        else:
            watcher.next_rev = start_rev
            self._unsynced.add(watcher)
            self._kick.set()

    def cancel(self, watcher: Watcher) -> None:
        watcher.canceled = True
        if watcher.synced:
            self._remove_synced(watcher)
        self._unsynced.discard(watcher)

    def resume(self) -> None:
        """A stream has room again: let its parked watchers catch up."""
        self._kick.set()

    def resync_all(self) -> None:
        """The store beneath was replaced (a snapshot from the leader): every
        synced watcher catches up from the new history."""
        for g in list(self._groups.values()):
            for w in g.watchers():
                self._park(w, w.next_rev)
        self._kick.set()

    def watcher_count(self) -> int:
        """Watchers registered, synced or catching up (etcd_debugging_mvcc_watcher_total)."""
        return sum(g.count for g in self._groups.values()) + len(self._unsynced)

    def unsynced_count(self) -> int:
        """Watchers catching up from history, behind the store's revision
        (etcd_debugging_mvcc_slow_watcher_total)."""
        return len(self._unsynced)

    def synced_watchers(self) -> list[Watcher]:
        return [w for g in self._groups.values() for w in g.watchers()]

    def wants_prev_kv(self, key: bytes) -> bool:
        """Whether a live event on key may be sent to a watcher that asked
        for prev_kv (conservatively: whether any synced watcher asked)."""
        return self._synced_prev_kv > 0

    def _add_synced(self, w: Watcher) -> None:
        w.synced = True
        g = self._groups.get((w.key, w.end))
        if g is None:
            g = self._groups[(w.key, w.end)] = _Group(w.key, w.end)
        if g.add(w) and w.prev_kv:
            self._synced_prev_kv += 1

    def _remove_synced(self, w: Watcher) -> None:
        w.synced = False
        g = self._groups.get((w.key, w.end))
        if g is not None:
            if g.discard(w) and w.prev_kv:
                self._synced_prev_kv -= 1
            if not g.count:
                del self._groups[(w.key, w.end)]

    def _park(self, w: Watcher, rev: int) -> None:
        """The stream is full: stop live delivery; catch up from rev later."""
        self._remove_synced(w)
        w.next_rev = rev
        self._unsynced.add(w)

    # ---- live events -----------------------------------------------------------

    def notify(self, events: list[kv_pb2.Event], rev: int) -> None:
        """The events of revision rev, just applied."""
        if not self._groups:
            return
        for g in list(self._groups.values()):
            contains = g.keys.contains
            if not any(contains(ev.kv.key) for ev in events):
                continue
            # watchers of one range with the same options see the same events:
            # select (and strip prev_kv) once per option set, and offer them
            # to each stream as one batch
            selections: dict[tuple[bool, bool, bool], tuple[list[kv_pb2.Event], int]] = {}
            sent = 0
            for (sink, options), members in list(g.members.items()):
                ready = [w for w in members if w.next_rev <= rev]
                if not ready:
                    continue
                found = selections.get(options)
                if found is None:
                    chosen = ready[0].select(events)
                    found = selections[options] = (chosen, events_size(chosen))
                selected, size = found
                if selected and not sink.offer(WatchBatch(ready, selected, rev, 0, size)):
                    for w in ready:
                        self._park(w, rev)
                    continue
                for w in ready:
                    w.next_rev = rev + 1
                sent += len(selected) * len(ready)
            stats.WATCHES.events += sent  # etcd_debugging_mvcc_events_total

    # ---- catching up -------------------------------------------------------------

    async def _sync_loop(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._kick.wait(), self.sync_interval)
            except TimeoutError:
                pass
            self._kick.clear()
            if self._unsynced:
                try:
                    self.sync_once()
                except Exception:  # keep syncing the others; this is logged loudly
                    log.exception("watch sync pass failed")
                await asyncio.sleep(0)

    def sync_once(self) -> None:
        """One pass over the unsynced watchers. They share one read of the
        history (at most SYNC_CHUNK_REVS revisions and about SYNC_CHUNK_BYTES
        from the oldest one's next revision, every key), which each then
        filters for itself: the cost of a pass grows with the history read,
        not with the watcher count. Watchers whose stream is full are
        skipped until it drains."""
        cur = self.history.current_revision()
        compact = self.history.compact_revision()
        pending: list[Watcher] = []
        for w in list(self._unsynced):
            if w.canceled:
                self._unsynced.discard(w)
            elif w.next_rev < compact:
                # revision 0: etcd's compacted response carries no revision
                if w.sink.offer(WatchBatch([w], [], 0, compact_revision=compact)):
                    self._unsynced.discard(w)
                    w.canceled = True
            elif w.next_rev > cur:
                self._unsynced.discard(w)
                self._add_synced(w)
            elif w.sink.has_room():
                pending.append(w)
            # else: its stream is still full; read nothing for it yet
        if not pending:
            return
        start = min(w.next_rev for w in pending)
        events, end_rev = self.history.events_limited(
            start, min(cur + 1, start + self.SYNC_CHUNK_REVS), b"\0", b"\0", any(w.prev_kv for w in pending),
            self.SYNC_CHUNK_BYTES)
        if start <= compact:
            events = _as_compacted(events, compact)
        last = cur if end_rev > cur else end_rev - 1
        # watchers alike (same range, options and position) select alike
        selections: dict[tuple[int, bytes, bytes, bool, bool, bool], tuple[list[kv_pb2.Event], int]] = {}
        progressed = False
        for w in pending:
            if w.next_rev >= end_rev:
                progressed = True  # ahead of this chunk: the next pass
                continue
            like = (w.next_rev, w.key, w.end, w.prev_kv, w.no_put, w.no_delete)
            found = selections.get(like)
            if found is None:
                mine = events if w.next_rev == start else [ev for ev in events if ev.kv.mod_revision >= w.next_rev]
                chosen = w.select(mine)
                found = selections[like] = (chosen, events_size(chosen))
            selected, size = found
            if selected and not w.sink.offer(WatchBatch([w], selected, last, size=size)):
                continue  # still full; its stream resumes the store when it drains
            stats.WATCHES.events += len(selected)  # etcd_debugging_mvcc_events_total
            progressed = True
            w.next_rev = end_rev
            if end_rev > cur:
                self._unsynced.discard(w)
                self._add_synced(w)
        if self._unsynced and progressed:
            self._kick.set()


def _as_compacted(events: list[kv_pb2.Event], compact: int) -> list[kv_pb2.Event]:
    """events as a finished compaction at compact leaves them: the events of
    the compact revision itself lose their previous values and its deletions
    are gone. Applied whether or not the physical compaction has finished, so
    a watcher sees the same thing either way."""
    out: list[kv_pb2.Event] = []
    for ev in events:
        if ev.kv.mod_revision <= compact:
            if ev.type == DELETE:
                continue
            if ev.HasField("prev_kv"):
                slim = kv_pb2.Event(type=ev.type)
                slim.kv.CopyFrom(ev.kv)
                ev = slim
        out.append(ev)
    return out


def _scan_end(w: Watcher) -> bytes:
    """The end of the key range to read for a watcher, as a range_end."""
    if not w.end:
        return w.key + b"\0"
    return w.end


ProgressCallback = Callable[[Watcher, int], None]
