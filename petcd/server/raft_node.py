"""The node loop: drives the sans-I/O raft core on the server's event loop.

It ticks the core on a timer, and whenever the core has a Ready it
1. sends the leader's messages at once (the Raft thesis lets a leader send
   before its own fsync); a follower sends the requests it forwards to the
   leader (MsgProp, MsgReadIndex) at once too, everything else only after
   persisting;
2. persists the Ready's hard state and entries with ONE WAL fsync, in the
   node's sync thread so the loop keeps serving;
3. meanwhile applies the committed entries this member already held
   durably before the Ready (so answering them does not wait for this
   fsync); whatever the WAL write makes durable is applied after it;
4. appends the Ready's entries to the in-memory raft log;
5. hands the remaining committed entries to the applier, in order;
6. advances the core.
Nothing is answered before it is durable here and committed. Proposals that
arrive while a fsync is in flight pile up in the core and leave together in
the next Ready: that batching is where throughput comes from."""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass

from petcd.raft import (
    ConfChange,
    Config,
    ConfState,
    Entry,
    Message,
    MessageType,
    RawNode,
    ReadState,
    Ready,
    Snapshot,
    StateType,
    Status,
)
from petcd.server.raft_storage import RaftStorage

log = logging.getLogger("petcd.server.raft")


# How long stopping waits for a WAL write in flight.
CLOSE_WAIT = 10.0


class _SyncThread:
    """One thread that runs the WAL writes and fsyncs, so the event loop keeps
    serving while the disk works.

    Cheaper per Ready than asyncio.to_thread (no executor bookkeeping, no
    context copy, no chained futures): the loop puts (job, future) on a
    SimpleQueue, and the thread hands the outcome back with one
    call_soon_threadsafe. Jobs run one at a time, in the order given."""

    def __init__(self, name: str) -> None:
        self._jobs: queue.SimpleQueue[tuple[Callable[[], None], asyncio.Future[None]] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)
        self._thread.start()

    def run(self, job: Callable[[], None]) -> asyncio.Future[None]:
        """job() in the thread; the future completes on the calling loop."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._jobs.put((job, fut))
        return fut

    async def close(self) -> None:
        """Let the thread finish the jobs it has, and wait (up to
        CLOSE_WAIT s: a disk may hang) until it has exited, so nothing
        writes the WAL once the server closes it."""
        self._jobs.put(None)
        await asyncio.to_thread(self._thread.join, CLOSE_WAIT)
        if self._thread.is_alive():
            log.warning("the WAL sync thread is still writing after %.0f s; stopping without it", CLOSE_WAIT)

    def _main(self) -> None:
        while True:
            item = self._jobs.get()
            if item is None:
                return
            job, fut = item
            try:
                job()
            except BaseException as exc:  # noqa: BLE001 - handed to the loop, which fails the node
                _hand_back(fut, exc)
            else:
                _hand_back(fut, None)


def _hand_back(fut: asyncio.Future[None], exc: BaseException | None) -> None:
    try:
        fut.get_loop().call_soon_threadsafe(_settle, fut, exc)
    except RuntimeError:  # the loop is closed: nobody waits any more
        pass


def _settle(fut: asyncio.Future[None], exc: BaseException | None) -> None:
    if fut.done():  # the waiter was cancelled (stop)
        return
    if exc is None:
        fut.set_result(None)
    else:
        fut.set_exception(exc)


@dataclass(slots=True)
class NodeHooks:
    """What the node loop calls back into the server for."""

    apply_entries: Callable[[list[Entry]], None]
    apply_snapshot: Callable[[Snapshot], None]
    read_states: Callable[[list[ReadState]], None]
    leader_changed: Callable[[int, int], None]  # (old lead, new lead)
    send: Callable[[list[Message]], None]
    failed: Callable[[BaseException], None]  # the member can no longer serve writes


class RaftNode:
    """Owns the raft core and its durable storage; runs the Ready loop.

    The core is sealed in here: everything the server feeds it goes through
    a method below, which also wakes the loop, so no input can sit in the
    core unnoticed until the next tick."""

    def __init__(self, config: Config, storage: RaftStorage, hooks: NodeHooks, tick_interval: float) -> None:
        self._raw = RawNode(config)
        self.storage = storage
        self.hooks = hooks
        self.tick_interval = tick_interval
        self.lead = 0
        self.role = StateType.Follower
        self.term = 0
        self.commit = 0
        self._wake = asyncio.Event()
        self._stopped = False
        self._tasks: list[asyncio.Task[None]] = []
        self._failed: BaseException | None = None
        self._sync = _SyncThread("petcd-wal-sync")

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._run(), name="raft-ready-loop"),
            asyncio.create_task(self._ticker(), name="raft-ticker"),
        ]

    async def stop(self) -> None:
        self._stopped = True
        self._wake.set()
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            try:
                await t
            except (asyncio.CancelledError, Exception):
                pass
        await self._sync.close()

    @property
    def failed(self) -> BaseException | None:
        """The failure that stopped this member serving writes (the node
        loop's, or one the server records, such as a failed backend commit);
        None while it serves."""
        return self._failed

    @failed.setter
    def failed(self, exc: BaseException | None) -> None:
        # the first failure wins and is reported once
        if exc is None or self._failed is not None:
            return
        self._failed = exc
        self.hooks.failed(exc)

    def notify(self) -> None:
        """Something changed that may give the core a Ready: look soon."""
        self._wake.set()

    # ---- inputs: each wakes the loop ---------------------------------------------

    def propose(self, data: bytes) -> None:
        """Propose a request; raises ProposalDropped when the core cannot take it now."""
        self._raw.propose(data)
        self._wake.set()

    def propose_conf_change(self, cc: ConfChange) -> None:
        """Propose a membership change; raises ProposalDropped like propose."""
        self._raw.propose_conf_change(cc)
        self._wake.set()

    def read_index(self, ctx: bytes) -> None:
        """Start a ReadIndex round named ctx; raises ProposalDropped without a leader."""
        self._raw.read_index(ctx)
        self._wake.set()

    def step(self, m: Message) -> None:
        """A message from a peer."""
        self._raw.step(m)
        self._wake.set()

    def campaign(self) -> None:
        self._raw.campaign()
        self._wake.set()

    def transfer_leader(self, target: int) -> None:
        self._raw.transfer_leader(target)
        self._wake.set()

    def report_unreachable(self, member_id: int) -> None:
        self._raw.report_unreachable(member_id)
        self._wake.set()

    def report_snapshot(self, member_id: int, ok: bool) -> None:
        self._raw.report_snapshot(member_id, ok)
        self._wake.set()

    def apply_conf_change(self, cc: ConfChange) -> ConfState:
        """Apply a committed membership change to the core; the new configuration."""
        cs = self._raw.apply_conf_change(cc)
        self._wake.set()
        return cs

    def status(self) -> Status:
        """The core's current view (role, term, leader; followers' progress on a leader)."""
        return self._raw.status()

    def is_leader(self) -> bool:
        return self.role == StateType.Leader

    async def _ticker(self) -> None:
        while not self._stopped:
            await asyncio.sleep(self.tick_interval)
            self._raw.tick()
            self._wake.set()

    async def _run(self) -> None:
        try:
            while not self._stopped:
                await self._wake.wait()
                self._wake.clear()
                while self._raw.has_ready() and not self._stopped:
                    await self._handle(self._raw.ready())
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # a failed fsync or apply: stop serving writes
            log.critical("raft node loop failed: %r", exc, exc_info=True)
            self.failed = exc
            raise

    async def _handle(self, rd: Ready) -> None:
        if rd.soft_state is not None:
            old = self.lead
            self.lead = rd.soft_state.lead
            self.role = rd.soft_state.raft_state
            if old != self.lead:
                self.hooks.leader_changed(old, self.lead)
        if rd.read_states:
            self.hooks.read_states(rd.read_states)
        leader = self.role == StateType.Leader
        if leader and rd.messages:
            self.hooks.send(rd.messages)
        if rd.hard_state is not None:
            self.term = rd.hard_state.term
            self.commit = rd.hard_state.commit
        committed = rd.committed_entries
        if rd.snapshot is not None or rd.entries or rd.must_sync:
            persisted = self._sync.run(lambda: self.storage.persist(rd.hard_state, rd.entries, rd.snapshot))
            try:
                if not leader and rd.messages:
                    # requests forwarded to the leader carry nothing of this
                    # member's durable state: they need not wait for its fsync
                    early = [m for m in rd.messages if m.type in _FORWARDED]
                    if early:
                        self.hooks.send(early)
                        rd.messages = [m for m in rd.messages if m.type not in _FORWARDED]
                if committed and rd.snapshot is None:
                    # Committed entries this member already holds durably
                    # (from earlier Readies) are applied while the disk works
                    # on this Ready's: their answers need not wait for this
                    # fsync. Entries that only become durable with it wait.
                    durable = self.storage.log.last_index()
                    cut = _count_upto(committed, durable)
                    if cut:
                        self.hooks.apply_entries(committed[:cut])
                        committed = committed[cut:]
            finally:
                await persisted
        elif rd.hard_state is not None:  # only the commit index moved: no fsync needed
            self.storage.persist(rd.hard_state, [], None, sync=False)
        self.storage.append_to_log(rd.hard_state, rd.entries, rd.snapshot)
        if rd.snapshot is not None:
            self.hooks.apply_snapshot(rd.snapshot)
        if not leader and rd.messages:
            self.hooks.send(rd.messages)
        if committed:
            self.hooks.apply_entries(committed)
        self._raw.advance(rd)


# Messages a follower forwards to the leader on a client's behalf.
_FORWARDED = frozenset({MessageType.MsgProp, MessageType.MsgReadIndex})


def _count_upto(entries: list[Entry], index: int) -> int:
    """How many of the (consecutive) entries have an index <= index."""
    return max(0, min(len(entries), index - entries[0].index + 1))
