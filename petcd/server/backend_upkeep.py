"""The backend's upkeep while the member runs: its batch commit when due,
and defragmentation.

The backend's write transaction belongs to the loop thread (LMDB binds
write transactions to a thread), so the batch commit, fsync included, runs
on the loop; a failed commit is fatal (fail-stop, as in etcd). A defrag's
compacting copy and its fsync run in a worker thread while writes, reads
and commits go on; the swap on the loop replays the writes the copy missed.
Runs on the event loop only.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import time
from collections.abc import Callable

from petcd import stats
from petcd.server.raft_node import RaftNode
from petcd.server.state import MemberState
from petcd.storage.backend import Backend, DefragCopy
from petcd.storage.errors import StorageError
from petcd.storage.fsutil import fsync_dir

log = logging.getLogger("petcd.server")


class BackendUpkeep:
    """Commits and defragments the current backend (read through ``state``:
    the state is replaced whole when the member installs a leader's
    backend). A failed commit marks ``node`` failed."""

    def __init__(self, *, node: RaftNode, state: Callable[[], MemberState],
                 check_running: Callable[[], None], stopped: Callable[[], bool]) -> None:
        self.node = node
        self._state = state
        self._check_running = check_running
        self._stopped = stopped
        self._defrag_lock = asyncio.Lock()  # one defrag at a time; held while one runs

    def defragmenting(self) -> bool:
        """Whether a defrag is in flight (raft snapshots wait for it)."""
        return self._defrag_lock.locked()

    async def committer(self) -> None:
        """Commit the backend's batch when it is due (checked every 100 ms).

        A failed commit (disk full, I/O error, read-only file system, a
        truncated db file) is fatal, as in etcd: it is logged at fatal level
        naming the db file and the OS error, and the member fails at once:
        the node loop is marked failed, so no request is taken and the
        embedding program stops the member (``petcd`` exits with status 1),
        and the backend refuses every later write, so the applier applies
        and acknowledges nothing after the failed commit. Nothing
        acknowledged is lost: the WAL holds every acknowledged write and the
        next start replays it above the backend's consistent index.
        """
        interval = 0.1
        while not self._stopped():
            await asyncio.sleep(interval)
            backend = self._state().backend
            try:
                backend.commit_if_due()
            except StorageError as exc:
                log.critical("%s; stopping the member (fail-stop: no write is acknowledged after a failed commit)",
                             exc, extra={"fields": {"path": backend.path}})
                if self.node.failed is None:
                    self.node.failed = exc
                return

    async def defragment(self) -> None:
        """Defragment the backend without holding the loop: the compacting
        copy and its fsync run in a worker thread while writes, reads and
        commits go on; the swap on the loop replays the writes the copy
        missed. One defrag at a time; raft snapshots wait for it. A defrag
        that completes is timed, from the start of its copy to the durable
        rename (etcd_disk_backend_defrag_duration_seconds)."""
        self._check_running()
        async with self._defrag_lock:
            started = time.perf_counter()
            backend = self._state().backend
            copy = backend.start_defrag()
            running = asyncio.ensure_future(asyncio.to_thread(copy.run))
            try:
                await asyncio.shield(running)
                while not backend.finish_defrag(copy):  # a snapshot copy holds the environment
                    await asyncio.to_thread(backend.wait_env_free)
            except BaseException:
                # the copy may still be running in its thread: clean up once it is done
                running.add_done_callback(functools.partial(_abort_defrag, backend, copy))
                raise
            await asyncio.to_thread(_settle_defrag, copy, os.path.dirname(backend.path))
            stats.DEFRAG.observe(time.perf_counter() - started)
            log.info("defragmented %s: %d bytes", backend.path, backend.size())


def _settle_defrag(copy: DefragCopy, dirname: str) -> None:
    """After the swap (in a worker thread): free the old file, make the rename durable."""
    copy.release_old()
    fsync_dir(dirname)


def _abort_defrag(backend: Backend, copy: DefragCopy, running: asyncio.Future[None]) -> None:
    if not running.cancelled():
        running.exception()  # retrieved: the caller got the failure already
    backend.abort_defrag(copy)
