"""Linearizable reads through raft's ReadIndex, shared by reads that
arrive together (etcd's linearizableReadLoop).

A read is linearizable once a ReadIndex round that *started after the read
arrived* has been confirmed by a quorum (the leader is still the leader)
and the local applied index has reached the round's index. The reads that
arrive in one loop iteration share a round, started at the end of that
iteration; up to MAX_ROUNDS rounds are in flight at once (a read does not
wait out a round that started before it), and reads arriving beyond that
join the next round, started when one is answered: under load one round
serves many reads. A round lost to a leader change (it may never be
answered) fails its reads over to a new round, after a leader is known. A
round whose request or answer the network lost while the leader stayed the
same is asked again every RETRY_INTERVAL (etcd's readIndexRetryTime), so it
cannot block every later read until the leader changes.
"""

from __future__ import annotations

import asyncio
import functools

from petcd import stats
from petcd.raft import ProposalDropped, ReadState
from petcd.server.errors import ErrTimeout
from petcd.server.raft_node import RaftNode
from petcd.server.wait import AppliedWait

# How long a round may go unanswered before it is asked again.
RETRY_INTERVAL = 0.5
# Rounds in flight at once: a read arriving while one is out starts the next
# at once rather than waiting for it (while as many reads share each round).
MAX_ROUNDS = 2


class RoundLost(Exception):
    """A read index round that will never be answered (no leader, or the
    leader changed); the reads in it start a new one."""


class ReadIndex:
    """The member's ReadIndex rounds. Runs on the event loop only."""

    def __init__(self, member_id: int, node: RaftNode, applied_wait: AppliedWait, has_leader: asyncio.Event) -> None:
        self._member_id = member_id
        self._node = node
        self._applied_wait = applied_wait
        self._has_leader = has_leader
        self._next: asyncio.Future[None] | None = None  # the round the next reads join
        self._rounds: dict[bytes, asyncio.Future[None]] = {}  # rounds sent, by context
        self._sent_at: dict[bytes, float] = {}  # when each round was last asked
        self._seq = 0
        self._start_scheduled = False

    async def wait(self, timeout: float) -> None:
        """Return once a read of the local store is linearizable (see the
        module docstring); raise ErrTimeout after timeout seconds, leader
        or not (as etcd does)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            if self._next is None:
                self._next = loop.create_future()
                # a round's outcome may find no reader left (they timed out,
                # or the member stopped): that is no error to report
                self._next.add_done_callback(_retrieve)
            fut = self._next
            if len(self._rounds) < MAX_ROUNDS and not self._start_scheduled:
                # the reads arriving in this loop iteration share the round
                self._start_scheduled = True
                loop.call_soon(self._start_round)
            try:
                await asyncio.wait_for(asyncio.shield(fut), min(RETRY_INTERVAL, max(0.0, deadline - loop.time())))
                return
            except RoundLost:
                if self._node.lead == 0:
                    try:
                        await asyncio.wait_for(self._has_leader.wait(), max(0.0, deadline - loop.time()))
                    except TimeoutError:
                        raise ErrTimeout() from None
            except TimeoutError:
                if loop.time() >= deadline:
                    # etcd's read loop answers "request timed out" whether or
                    # not a leader is known
                    raise ErrTimeout() from None
                self._ask_again(loop.time())

    def _start_round(self) -> None:
        self._start_scheduled = False
        fut, self._next = self._next, None
        if fut is not None:
            self._send(fut)

    def _send(self, fut: asyncio.Future[None]) -> None:
        """Ask raft to confirm a round under a fresh context."""
        self._seq += 1
        # unique across members: the leader keeps every member's rounds apart by it
        ctx = self._member_id.to_bytes(8, "big") + self._seq.to_bytes(8, "big")
        try:
            self._node.read_index(ctx)
        except ProposalDropped:
            stats.SERVER.read_indexes_failed += 1  # etcd_server_read_indexes_failed_total
            fut.set_exception(RoundLost())
            return
        self._rounds[ctx] = fut
        self._sent_at[ctx] = asyncio.get_running_loop().time()

    def _ask_again(self, now: float) -> None:
        """Rounds unanswered for RETRY_INTERVAL are asked again under a new
        context (the leader ignores a context it is still confirming, and a
        confirmation that was lost would never come): any index confirmed
        after a read arrived serves it. A late answer to the old context is
        ignored."""
        for ctx in [c for c, sent in self._sent_at.items() if now - sent >= RETRY_INTERVAL]:
            fut = self._rounds.pop(ctx, None)
            del self._sent_at[ctx]
            if fut is None or fut.done():
                continue
            # etcd counts a read index that timed out as slow
            stats.SERVER.slow_read_indexes += 1  # etcd_server_slow_read_indexes_total
            self._send(fut)

    def on_read_states(self, states: list[ReadState]) -> None:
        """Raft confirmed rounds: each completes once the applied index
        reaches its index. Reads waiting meanwhile start the next round."""
        for rs in states:
            fut = self._rounds.pop(rs.request_ctx, None)
            self._sent_at.pop(rs.request_ctx, None)
            if fut is None:
                # an out-of-date answer (to a round since asked again or
                # failed over), which etcd counts as slow too
                stats.SERVER.slow_read_indexes += 1  # etcd_server_slow_read_indexes_total
                continue
            waiter = self._applied_wait.wait(rs.index)
            waiter.add_done_callback(functools.partial(_chain, dst=fut))
        self._start_round()

    def leader_changed(self) -> None:
        """Rounds sent to the old leader may never be answered: fail them over."""
        if self._rounds:
            rounds, self._rounds = self._rounds, {}
            self._sent_at.clear()
            for fut in rounds.values():
                if not fut.done():
                    fut.set_exception(RoundLost())


def _retrieve(fut: asyncio.Future[None]) -> None:
    if not fut.cancelled():
        fut.exception()


def _chain(src: asyncio.Future[None], dst: asyncio.Future[None]) -> None:
    if dst.done():
        return
    exc = src.exception()
    if exc is not None:
        dst.set_exception(exc)
    else:
        dst.set_result(None)
