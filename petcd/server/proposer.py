"""The proposal path: how a write or a membership change gets into raft and
its caller gets the applier's answer.

``raft_request`` gives an InternalRaftRequest a unique id (``ids``), refuses
it if it is too large or would exceed the backend quota (raising the
NOSPACE alarm), registers a waiter under the id in ``wait`` and proposes the
bytes; ``propose_conf_change`` does the same for a ConfChange. Both go
through ``_propose_and_wait``, the one way in: while raft cannot take a
proposal (no leader yet, a leadership transfer) it waits and retries, and
the caller waits under the request timeout. The server's applier answers
the waiters (``wait.trigger``/``wait.fail``) once the entry is applied.
Runs on the event loop only.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from petcd import stats
from petcd.auth.tokens import AuthInfo
from petcd.proto import raft_internal_pb2, rpc_pb2
from petcd.raft import ConfChange, ProposalDropped
from petcd.server import txn_ops
from petcd.server.config import ServerConfig
from petcd.server.errors import (
    ErrDeadlineExceeded,
    ErrNoSpace,
    ErrNotSupportedForLearner,
    ErrRequestTooLarge,
    ErrTimeout,
    ErrTimeoutDueToLeaderFail,
)
from petcd.server.ids import RequestIds
from petcd.server.raft_node import RaftNode
from petcd.server.state import MemberState
from petcd.server.tasks import TaskGroup
from petcd.server.wait import Wait

log = logging.getLogger("petcd.server")


class Proposer:
    """Proposes requests and membership changes and waits for their results.

    It reads the member's current state through ``state`` (the state is
    replaced whole when the member installs a leader's backend), checks the
    member still serves with ``check_running``, and learns that a leader is
    known from ``has_leader``. ``ids`` and ``wait`` are the member's: the
    applier answers the waiters registered here."""

    def __init__(
        self,
        cfg: ServerConfig,
        *,
        member_id: int,
        node: RaftNode,
        state: Callable[[], MemberState],
        check_running: Callable[[], None],
        has_leader: asyncio.Event,
        background: TaskGroup,
        ids: RequestIds,
        wait: Wait,
    ) -> None:
        self.cfg = cfg
        self.member_id = member_id
        self.node = node
        self._state = state
        self._check_running = check_running
        self._has_leader = has_leader
        self.background = background
        self.ids = ids
        self.wait = wait
        self.request_timeout = cfg.request_timeout()

    async def raft_request(self, req: raft_internal_pb2.InternalRaftRequest, auth: AuthInfo | None = None) -> Any:
        """Propose req (as ``auth``'s user, checked where it is applied) and
        return the applier's response, or raise the request's error."""
        self._check_running()
        if auth is not None:  # who the request runs as, checked where it is applied
            req.header.username = auth.username
            req.header.auth_revision = auth.revision
        if self._state().membership.is_learner() and not req.HasField("cluster_member_attr_set"):
            raise ErrNotSupportedForLearner()
        req_id = self.ids.next()
        req.header.ID = req_id
        data = req.SerializeToString()
        if len(data) > self.cfg.max_request_bytes:
            raise ErrRequestTooLarge()
        self._check_quota(req, len(data))
        return await self._propose_and_wait(req_id, lambda: self.node.propose(data), self.request_timeout)

    async def propose_conf_change(self, cc: ConfChange) -> None:
        """Propose a membership change and wait until it is applied. As in
        etcd, no request timeout applies: the change waits (for a leader
        too) as long as its caller does, i.e. up to the call's deadline."""
        self._check_running()
        cc.id = self.ids.next()
        await self._propose_and_wait(cc.id, lambda: self.node.propose_conf_change(cc), None)

    async def _propose_and_wait(self, req_id: int, feed: Callable[[], None], timeout: float | None) -> Any:
        """The one way in for writes and membership changes: register the
        waiter, feed the proposal to raft (waiting for a leader if need be),
        and wait for the applier's result under timeout seconds (None: as
        long as the caller waits)."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        fut = self.wait.register(req_id)
        try:
            await self._until_taken(feed, deadline)
        except BaseException:
            self.wait.cancel(req_id)
            stats.SERVER.proposals_failed += 1  # etcd_server_proposals_failed_total
            raise
        self.node.notify()
        # a timer on the future itself, not asyncio.wait_for: that wraps it
        # in a second future and costs an extra loop iteration per request
        timer = None if deadline is None else loop.call_at(deadline, _expire, fut)
        try:
            return await fut
        except asyncio.CancelledError:  # the client went away (etcd counts it failed too)
            stats.SERVER.proposals_failed += 1  # etcd_server_proposals_failed_total
            raise
        except TimeoutError:
            self.wait.cancel(req_id)
            stats.SERVER.proposals_failed += 1  # etcd_server_proposals_failed_total
            raise (ErrTimeoutDueToLeaderFail() if self.node.lead == 0 else ErrTimeout()) from None
        finally:
            if timer is not None:
                timer.cancel()

    def _check_quota(self, req: raft_internal_pb2.InternalRaftRequest, size: int) -> None:
        """etcd's backend quota: a request that may grow the database past
        --quota-backend-bytes is refused, and the NOSPACE alarm raised (only
        deletes and compactions get through until it is disarmed)."""
        grows = req.HasField("put") or req.HasField("lease_grant") or (
            req.HasField("txn") and txn_ops.has_puts(req.txn))
        quota = self.cfg.quota_bytes()
        backend = self._state().backend
        if not grows or not quota or backend.size() + size <= quota:
            return
        if not self._state().alarms.is_active(rpc_pb2.NOSPACE):
            alarm = rpc_pb2.AlarmRequest(action=rpc_pb2.AlarmRequest.ACTIVATE, memberID=self.member_id,
                                         alarm=rpc_pb2.NOSPACE)
            self.background.spawn(self.raft_request(raft_internal_pb2.InternalRaftRequest(alarm=alarm)),
                                  "raise-nospace")
            log.warning("database space exceeded (%d bytes, quota %d): raising the NOSPACE alarm",
                        backend.size(), quota)
        raise ErrNoSpace()

    async def _until_taken(self, feed: Callable[[], None], deadline: float | None) -> None:
        """Feed a proposal or read request to raft; while raft cannot take it
        (no leader yet, a leadership transfer) wait and retry, as etcd's
        proposals wait for a leader, until the deadline (None: no end)."""
        loop = asyncio.get_running_loop()
        while True:
            try:
                feed()
                return
            except ProposalDropped:
                # etcd's raft blocks a proposal while there is no leader and
                # gives up with the bare context error at the deadline
                remaining = None if deadline is None else deadline - loop.time()
                if remaining is not None and remaining <= 0:
                    raise ErrDeadlineExceeded() from None
                if self.node.lead == 0:
                    try:
                        await asyncio.wait_for(self._has_leader.wait(), remaining)
                    except TimeoutError:
                        raise ErrDeadlineExceeded() from None
                else:
                    tick = self.cfg.tick_seconds()
                    await asyncio.sleep(tick if remaining is None else min(remaining, tick))


def _expire(fut: asyncio.Future[Any]) -> None:
    """The request timeout passed before the applier answered."""
    if not fut.done():
        fut.set_exception(TimeoutError())
