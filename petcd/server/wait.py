"""Where client requests wait for the applier.

``Wait`` maps a proposal's unique id to the future its caller awaits; the
applier completes it with the response (or the error) once the entry is
applied. ``AppliedWait`` lets readers wait until the applied index reaches a
given index (ReadIndex). Both run on the server's event loop only.
"""

from __future__ import annotations

import asyncio
import heapq
from typing import Any


class Wait:
    """Futures keyed by request id."""

    def __init__(self) -> None:
        self._pending: dict[int, asyncio.Future[Any]] = {}

    def register(self, req_id: int) -> asyncio.Future[Any]:
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[req_id] = fut
        return fut

    def __len__(self) -> int:
        """Proposals waiting for their result (etcd_server_proposals_pending)."""
        return len(self._pending)

    def is_registered(self, req_id: int) -> bool:
        return req_id in self._pending

    def trigger(self, req_id: int, result: Any) -> None:
        fut = self._pending.pop(req_id, None)
        if fut is not None and not fut.done():
            fut.set_result(result)

    def fail(self, req_id: int, exc: BaseException) -> None:
        fut = self._pending.pop(req_id, None)
        if fut is not None and not fut.done():
            fut.set_exception(exc)

    def cancel(self, req_id: int) -> None:
        self._pending.pop(req_id, None)

    def fail_all(self, exc: BaseException) -> None:
        pending, self._pending = self._pending, {}
        for fut in pending.values():
            if not fut.done():
                fut.set_exception(exc)


class AppliedWait:
    """Futures that complete once the applied index reaches their index."""

    def __init__(self, applied: int = 0) -> None:
        self.applied = applied
        self._heap: list[tuple[int, int, asyncio.Future[None]]] = []
        self._seq = 0

    def wait(self, index: int) -> asyncio.Future[None]:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if index <= self.applied:
            fut.set_result(None)
        else:
            self._seq += 1
            heapq.heappush(self._heap, (index, self._seq, fut))
        return fut

    def advance(self, applied: int) -> None:
        self.applied = applied
        heap = self._heap
        while heap and heap[0][0] <= applied:
            _, _, fut = heapq.heappop(heap)
            if not fut.done():
                fut.set_result(None)

    def fail_all(self, exc: BaseException) -> None:
        heap, self._heap = self._heap, []
        for _, _, fut in heap:
            if not fut.done():
                fut.set_exception(exc)
