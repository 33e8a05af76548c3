"""The process's file-descriptor limit, set up as etcd's runtime sets it.

Go raises a process's soft RLIMIT_NOFILE to its hard limit at start, so etcd
never runs with the inherited soft limit (often 1,024), which a thousand idle
client connections would exhaust: new clients then time out and the next
WAL segment switch fails with EMFILE. petcd does the same at start, logs the
limit, and checks that it leaves a reserve of descriptors for storage (WAL
segments, their directory fsyncs, the backend, snapshots, defrag, peers)
above what client connections may take.

A front end that owns accept() keeps the reserve by accepting a client
connection only while ``FdBudget.may_accept(open_connections)`` holds (see
``FdBudget.client_connections``); grpc's server accepts on its own, so with
it petcd can only raise the limit, warn at start when the limit cannot keep
the reserve, and watch the reserve while it runs (``ReserveMonitor``: a
warning when clients have eaten into it, so an operator learns before a WAL
segment switch fails).
"""

from __future__ import annotations

import logging
import os
import resource
import threading
from dataclasses import dataclass

log = logging.getLogger("petcd.cli.limits")

# Descriptors kept for storage and peers, never for clients. What a member
# holds open at most besides client sockets, with room to spare: the WAL's
# segment and the one being preallocated, a directory fd per fsync, the lock
# file, lmdb's data and lock files (and a second pair during defrag or a
# snapshot save), snapshot files being written or read, a log file, peer
# connections (two per peer, a few peers) and the event loop's own fds. About
# 40 in a five-member cluster during defrag; 128 leaves room for growth.
STORAGE_FD_RESERVE = 128

# Below this many descriptors for clients the member still runs but serves
# few connections; said in a warning.
MIN_CLIENT_FDS = 256

# Where Linux caps RLIMIT_NOFILE when the hard limit is "unlimited".
_NR_OPEN = "/proc/sys/fs/nr_open"


@dataclass(frozen=True, slots=True)
class FdBudget:
    """The descriptor limit after start and how it is shared out.

    ``soft``/``hard``: RLIMIT_NOFILE after raising; ``open_at_start``:
    descriptors already open when measured; ``reserve``: kept for storage.
    """

    soft: int
    hard: int
    open_at_start: int
    reserve: int = STORAGE_FD_RESERVE

    @property
    def client_connections(self) -> int:
        """How many client connections may be open at once so that storage
        always finds ``reserve`` descriptors free (0: none can be)."""
        return max(self.soft - self.reserve - self.open_at_start, 0)

    def may_accept(self, open_connections: int) -> bool:
        """Whether one more client connection keeps the reserve."""
        return open_connections < self.client_connections

    @property
    def keeps_reserve(self) -> bool:
        return self.client_connections >= MIN_CLIENT_FDS


def open_fds() -> int:
    """Descriptors this process has open now."""
    try:
        return len(os.listdir("/proc/self/fd")) - 1  # minus listdir's own
    except OSError:  # no /proc: count by probing
        return sum(1 for fd in range(min(_soft(), 65536)) if _is_open(fd))


def _is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


def _soft() -> int:
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def _ceiling(hard: int) -> int:
    """The highest soft limit the kernel accepts below hard."""
    if hard != resource.RLIM_INFINITY:
        return hard
    try:
        with open(_NR_OPEN) as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return 1 << 20


def raise_fd_limit() -> FdBudget:
    """Raise the soft RLIMIT_NOFILE to the hard limit (as Go does for etcd),
    log the result, and warn when it cannot keep the storage reserve.
    Never fails: a limit that cannot be raised is logged and kept."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    now = soft
    if soft != resource.RLIM_INFINITY and soft < _ceiling(hard):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (_ceiling(hard), hard))
            now = _ceiling(hard)
        except (OSError, ValueError) as exc:
            log.warning("cannot raise the file descriptor limit", extra={"fields": {
                "soft-limit": soft, "hard-limit": hard, "error": str(exc)}})
    budget = FdBudget(soft=_ceiling(now), hard=_ceiling(hard), open_at_start=open_fds())
    log.info("file descriptor limit", extra={"fields": {
        "inherited-soft-limit": soft, "soft-limit": budget.soft, "hard-limit": budget.hard,
        "storage-reserve": budget.reserve, "client-connections": budget.client_connections}})
    if not budget.keeps_reserve:
        log.warning(
            "file descriptor limit too low to keep the storage reserve: raise the hard limit (ulimit -Hn)",
            extra={"fields": {"soft-limit": budget.soft, "storage-reserve": budget.reserve,
                              "client-connections": budget.client_connections,
                              "recommended-minimum": budget.reserve + budget.open_at_start + MIN_CLIENT_FDS}})
    return budget


class ReserveMonitor:
    """Checks every ``interval`` seconds, in a daemon thread, that the
    descriptors in use leave the storage reserve free; logs a warning when
    they do not (once, until twice the reserve is free again, which it then
    logs as info)."""

    def __init__(self, budget: FdBudget, interval: float = 2.0) -> None:
        self.budget = budget
        self.interval = interval
        self.eaten = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fd-reserve-monitor", daemon=True)

    def start(self) -> ReserveMonitor:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.check()

    def check(self) -> bool:
        """Whether the reserve is free now (logs on a change)."""
        in_use = open_fds()
        free = self.budget.soft - in_use
        if free < self.budget.reserve:
            if not self.eaten:
                log.warning("client connections are using the file descriptors reserved for storage; "
                            "WAL and backend file opens may fail (raise the hard limit, ulimit -Hn)",
                            extra={"fields": {"open-fds": in_use, "soft-limit": self.budget.soft,
                                              "storage-reserve": self.budget.reserve}})
                self.eaten = True
            return False
        if self.eaten and free >= 2 * self.budget.reserve:
            log.info("file descriptor reserve free again", extra={"fields": {
                "open-fds": in_use, "soft-limit": self.budget.soft, "storage-reserve": self.budget.reserve}})
            self.eaten = False
        return True
