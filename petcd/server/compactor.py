"""Auto compaction, as etcd's --auto-compaction-mode/-retention: the leader
compacts the history periodically; a new leader takes the duty over.

- periodic: keep ``retention`` seconds of history. The revision is sampled
  every tenth of the interval (the retention, at most an hour), and every
  interval the store is compacted to the newest revision sampled at least
  ``retention`` ago.
- revision: keep the last ``retention`` revisions; checked every 5 minutes.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger("petcd.server.compactor")

REVISION_CHECK_INTERVAL = 300.0


class AutoCompactor:
    def __init__(
        self,
        mode: str,
        retention: float | int,
        revision: Callable[[], int],
        compacted: Callable[[], int],
        is_leader: Callable[[], bool],
        compact: Callable[[int], Awaitable[object]],
    ) -> None:
        self.mode = mode
        self.retention = retention
        self.revision = revision
        self.compacted = compacted
        self.is_leader = is_leader
        self.compact = compact

    async def run(self) -> None:
        if not self.retention:
            return
        if self.mode == "revision":
            await self._revision_mode(int(self.retention))
        else:
            await self._periodic_mode(float(self.retention))

    async def _periodic_mode(self, retention: float) -> None:
        loop = asyncio.get_running_loop()
        interval = min(retention, 3600.0)
        step = interval / 10
        samples: collections.deque[tuple[float, int]] = collections.deque()
        next_compaction = loop.time() + interval
        while True:
            await asyncio.sleep(step)
            now = loop.time()
            samples.append((now, self.revision()))
            if now < next_compaction:
                continue
            next_compaction = now + interval
            old = [rev for t, rev in samples if t <= now - retention + step / 2]
            while samples and samples[0][0] <= now - retention - interval:
                samples.popleft()
            if old:
                await self._compact_to(old[-1])

    async def _revision_mode(self, keep: int) -> None:
        while True:
            await asyncio.sleep(REVISION_CHECK_INTERVAL)
            await self._compact_to(self.revision() - keep)

    async def _compact_to(self, rev: int) -> None:
        if rev <= self.compacted() or not self.is_leader():
            return
        try:
            await self.compact(rev)
            log.info("auto compaction: compacted to revision %d", rev)
        except Exception as exc:  # the next round tries again
            log.warning("auto compaction to revision %d failed: %s", rev, exc)
