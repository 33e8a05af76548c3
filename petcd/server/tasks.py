"""One owner for a member's background tasks.

What it is for: asyncio keeps only weak references to tasks, so a task
nobody holds may be dropped mid-flight ("Task was destroyed but it is
pending!"), and a task nobody awaits fails silently. A :class:`TaskGroup`
holds every task it spawns until the task ends, logs a task that fails,
and cancels and awaits them all on ``close``. The server keeps one for its
long-running loops and short jobs, and a separate one for compactions, so
that waiting for compactions waits for nothing else.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


class TaskGroup:
    """Background tasks with strong references, failure logging, and one
    way to stop them all. Used from the event loop's thread only."""

    def __init__(self, name: str, log: logging.Logger) -> None:
        self.name = name
        self._log = log
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closed = False

    def spawn(self, coro: Coroutine[Any, Any, T], name: str) -> asyncio.Task[T]:
        """Run coro as a task held here until it ends. After close, the
        coroutine is closed unstarted and the returned task is cancelled."""
        task = asyncio.get_running_loop().create_task(coro, name=name)
        if self._closed:
            task.cancel()
            return task
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            self._log.error("%s task %r failed: %r", self.name, task.get_name(), exc, exc_info=exc)

    def pending(self) -> list[asyncio.Task[Any]]:
        """The tasks still running."""
        return [t for t in self._tasks if not t.done()]

    def __len__(self) -> int:
        return len(self._tasks)

    async def wait(self) -> None:
        """Wait until every task running now has ended (their failures are
        logged, not raised)."""
        pending = self.pending()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)

    def cancel_all(self) -> None:
        """Cancel every task now (they end at their next await)."""
        for t in list(self._tasks):
            t.cancel()

    async def close(self, timeout: float = 10.0) -> None:
        """Cancel every task and wait (up to timeout) for them to end;
        spawn cancels from now on. A task still running after the timeout
        (it ignored its cancellation) is logged."""
        self._closed = True
        tasks = list(self._tasks)
        for t in tasks:
            t.cancel()
        if not tasks:
            return
        _, stuck = await asyncio.wait(tasks, timeout=timeout)
        for t in stuck:
            self._log.error("%s task %r did not stop within %.0f s of its cancellation", self.name, t.get_name(), timeout)
