"""MemberState: everything a member's state machine is, built on one backend.

What it is for: the backend file, the mvcc store on it, the lessor, the
alarms, the membership, the applier that changes them, and the index of the
last raft entry they hold (etcd's consistent index) belong together: each is
built from the same backend, and when the member installs a backend sent by
the leader, all of them must be replaced at once. So they live in one object
that is built whole from a backend (:meth:`MemberState.open`), and a
snapshot install builds a fresh one; the server swaps its one reference.
Nothing here is rebound after construction except ``consistent_index``,
which the apply loop advances.

The functions beside it are what the member does with whole backend files:
open its own (installing a leader's first when a crash came between),
stage and check a leader's before raft takes the snapshot (in a worker
thread), install it (a rename), and read its own to send to a follower.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from dataclasses import dataclass

from petcd import stats
from petcd.auth.store import AuthStore
from petcd.auth.tokens import TokenProvider, new_token_provider
from petcd.lease.lessor import Lessor
from petcd.mvcc.key_range import KeyRange
from petcd.mvcc.kvstore import KVStore
from petcd.raft import Snapshot
from petcd.server.alarms import ALARM_BUCKET, AlarmStore
from petcd.server.apply import Applier
from petcd.server.config import ServerConfig
from petcd.server.membership import Membership
from petcd.storage.backend import Backend
from petcd.storage.fsutil import fsync_dir, replace_file

log = logging.getLogger("petcd.server.state")


def open_backend(cfg: ServerConfig, snap: Snapshot | None = None) -> Backend:
    """The member's backend. A raft snapshot that carries a backend (sent by
    a leader) and is newer than the backend on disk replaces it first: a
    crash came between saving the one and installing the other."""
    backend = Backend(cfg.backend_path(), unsafe_no_fsync=cfg.unsafe_no_fsync)
    if snap is not None and snap.data and backend.consistent_index()[0] < snap.metadata.index:
        backend.close()
        install_backend(cfg, snap)
        backend = Backend(cfg.backend_path(), unsafe_no_fsync=cfg.unsafe_no_fsync)
    return backend


def staged_backend_path(backend_path: str, index: int) -> str:
    """Where the backend a leader's snapshot at index waits, checked and
    durable, until raft has taken the snapshot and the member installs it."""
    return f"{backend_path}{_STAGED}{index:016x}"


_STAGED = ".incoming-"


def discard_staged(backend_path: str, keep: str | None = None) -> None:
    """Remove staged backends (all but keep): ones raft did not take, or
    left by a crash."""
    d, base = os.path.split(backend_path)
    for name in os.listdir(d or "."):
        path = os.path.join(d, name)
        if name.startswith(base + _STAGED) and path != keep:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)


def install_backend(cfg: ServerConfig, snap: Snapshot) -> None:
    """Replace the backend file with the leader's backend snap carries,
    durably: the staged copy when there is one (a rename), else its data.
    The backend must be closed."""
    path = cfg.backend_path()
    staged = staged_backend_path(path, snap.metadata.index)
    if os.path.exists(staged):
        os.replace(staged, path)
        fsync_dir(os.path.dirname(path) or ".")
    else:  # staged for another snapshot since, or by a member that crashed before staging
        replace_file(path, snap.data)


def stage_backend(snap: Snapshot, backend_path: str) -> str | None:
    """Write the backend a MsgSnap carries beside ours, durably, at
    staged_backend_path, and check it: None when it is staged, else why it
    could not be installed here (and nothing is left behind). Runs in a
    worker thread: a backend is as big as the database.

    Checked before raft sees the message: once raft takes a snapshot it is in
    the WAL, and a backend that cannot be opened would stop the member on
    every start. A leader always sends its whole backend, committed at or past
    the snapshot's index."""
    if not snap.data:
        return "it carries no backend"
    staged = staged_backend_path(backend_path, snap.metadata.index)
    discard_staged(backend_path)
    try:
        # timed as etcd times its save of a leader's backend (.snap.db): the
        # fsync alone, and the save up to a durable file (the check aside)
        started = time.perf_counter()
        with open(staged, "wb") as f:
            f.write(snap.data)
            f.flush()
            synced = time.perf_counter()
            os.fsync(f.fileno())
            done = time.perf_counter()
        stats.SNAP_DB_FSYNC.observe(done - synced)
        stats.SNAP_DB_SAVE.observe(done - started)
        backend = Backend(staged)
        try:
            index, _ = backend.consistent_index()
        finally:
            backend.close()
    except Exception as exc:  # anything the bytes make the backend raise
        why: str | None = f"its backend cannot be opened: {exc}"
    else:
        why = None
        if index < snap.metadata.index:
            why = f"its backend is at index {index}, behind the snapshot's {snap.metadata.index}"
    with contextlib.suppress(FileNotFoundError):
        os.unlink(staged + "-lock")
    if why is not None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(staged)
    return why


def read_backend_snapshot(backend: Backend) -> bytes:
    """The whole committed backend as bytes (in a worker thread)."""
    snap = backend.snapshot()
    try:
        chunks = []
        while chunk := snap.read(1 << 20):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        snap.close()


class LeaseKeyRebuild:
    """Re-attaches the stored keys to their leases (which key belongs to
    which lease is not stored), in key order, a chunk at a time, so that a
    large store need not hold the event loop for a whole scan.

    Writes applied while it is unfinished keep the lessor right on their
    own (the lessor follows every write's events), and each chunk reads the
    keys as they are now, so the result is the same as one scan at the end.
    Only what reads a lease's whole key set needs it finished first: call
    ``finish()`` before applying a lease revocation or answering for a
    lease's keys."""

    def __init__(self, kv: KVStore, lessor: Lessor) -> None:
        self._kv = kv
        self._lessor = lessor
        self._next: bytes | None = b"\0"  # the first key not yet scanned; None when done

    @property
    def done(self) -> bool:
        return self._next is None

    def step(self, limit: int = 1000) -> bool:
        """Scan up to limit more keys; True once every key was scanned."""
        if self._next is None:
            return True
        found = self._kv.range(KeyRange(self._next, b"\0"), limit=limit)
        kvs = found.kvs()
        for kv_ in kvs:
            if kv_.lease:
                self._lessor.attach(kv_.lease, kv_.key)
        self._next = kvs[-1].key + b"\0" if len(kvs) == limit and found.count > limit else None
        return self._next is None

    def finish(self) -> None:
        """Scan the rest now."""
        while not self.step(10_000):
            pass


@dataclass(eq=False)
class MemberState:
    """The state machine on one backend (see the module docstring)."""

    backend: Backend
    kv: KVStore
    lessor: Lessor
    alarms: AlarmStore
    membership: Membership
    auth: AuthStore
    applier: Applier
    consistent_index: int
    lease_keys: LeaseKeyRebuild  # done unless open() was told to leave it to the caller

    @classmethod
    def open(
        cls,
        cfg: ServerConfig,
        backend: Backend,
        membership: Membership,
        tokens: TokenProvider | None = None,
        *,
        lease_keys_now: bool = True,
    ) -> MemberState:
        """Build everything on backend, which the state then owns (``close``
        closes it); if building fails, the backend stays the caller's.
        ``tokens`` carries the auth tokens over from the state this one
        replaces (they live in memory); a new provider from the config
        otherwise. With lease_keys_now False the keys are re-attached to
        their leases later, by stepping ``lease_keys`` (see LeaseKeyRebuild)."""
        kv = KVStore(backend)
        alarms = AlarmStore()
        alarms.load(backend.items(ALARM_BUCKET))
        lessor = Lessor(backend, cfg.min_lease_ttl())
        lease_keys = LeaseKeyRebuild(kv, lessor)
        if lease_keys_now:
            lease_keys.finish()
        if tokens is None:
            tokens = new_token_provider(cfg.auth_token, float(cfg.auth_token_ttl))
        auth = AuthStore(backend, tokens, cfg.bcrypt_cost)
        applier = Applier(kv, backend, alarms, lessor, membership, auth)
        return cls(
            backend, kv, lessor, alarms, membership, auth, applier, backend.consistent_index()[0], lease_keys
        )

    def close(self) -> None:
        """Close the backend (without committing: a caller that keeps the
        state commits first)."""
        self.backend.close()
