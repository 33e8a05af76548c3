"""Bootstrap: what a member opens and builds before it can run (etcd's
bootstrap.go), in one of three cases:

- restart: a WAL exists; raft's state comes from it (and the newest raft
  snapshot), the members from the backend;
- join: no WAL and ``--initial-cluster-state=existing``: the members (and
  so this member's id) come from a running member, after a MemberAdd;
- new: no WAL: a new cluster from ``--initial-cluster``.

Each case returns a :class:`Bootstrapped` holding everything opened, or,
when it fails, closes whatever it opened and raises: a failed start leaves
no file open and no lock held.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field

from petcd.raft import ConfState, Snapshot
from petcd.server.cluster import joined_membership, load_membership, new_membership, store_members
from petcd.server.config import ServerConfig
from petcd.server.membership import Membership
from petcd.server.raft_storage import RaftStorage, WalIdentity
from petcd.server.state import MemberState, open_backend
from petcd.storage.backend import Backend
from petcd.storage.errors import WalError
from petcd.storage.fsutil import DirPermissionError, check_dir_permission, make_private_dirs

log = logging.getLogger("petcd.server.bootstrap")


@dataclass(eq=False)
class Bootstrapped:
    """A member's durable state, opened: raft's storage, the state machine,
    and what raft starts from."""

    raft_storage: RaftStorage
    state: MemberState
    # the voters raft starts with: only when starting a new cluster
    peers: list[int]
    # the raft snapshot's index (0 without one): what raft knows is applied
    snapshot_index: int
    conf_state: ConfState = field(default_factory=ConfState)

    @property
    def member_id(self) -> int:
        return self.state.membership.local_id

    @property
    def cluster_id(self) -> int:
        return self.state.membership.cluster_id

    def close(self) -> None:
        """Close everything (a start that fails after bootstrap)."""
        try:
            self.state.close()
        finally:
            self.raft_storage.close()


async def bootstrap(cfg: ServerConfig) -> Bootstrapped:
    """Open or create the member's data directory (see the module docstring)."""
    if os.path.isdir(cfg.data_dir):
        try:
            check_dir_permission(cfg.data_dir)
        except DirPermissionError as e:
            # etcd 3.4 warns and serves on (checked against the installed etcd)
            log.warning("check file permission: %s", e)
    make_private_dirs(cfg.member_dir())
    if RaftStorage.exists(cfg.wal_dir()):
        return _restart(cfg)
    if cfg.initial_cluster_state == "existing":
        return await _join(cfg)
    return _new(cfg)


def _restart(cfg: ServerConfig) -> Bootstrapped:
    raft_storage, rec = RaftStorage.open(cfg.wal_dir(), cfg.snap_dir(), unsafe_no_fsync=cfg.unsafe_no_fsync)
    try:
        backend = open_backend(cfg, rec.snapshot)
        state = _build_state(cfg, backend, lambda: load_membership(backend, rec.identity, cfg))
    except BaseException:
        raft_storage.close()
        raise
    snap = rec.snapshot
    applied, applied_term = state.backend.consistent_index()
    if applied > raft_storage.log.last_index():
        snap = _catch_up_to_backend(raft_storage, state, applied, applied_term)
    if snap is None and raft_storage.log.last_index() == 0 and rec.hard_state.term == 0:
        # the WAL was created but raft never recorded anything (the first
        # start failed right after creating it): nothing happened yet, so
        # start raft as that start would have
        peers = state.membership.voter_ids() if cfg.initial_cluster_state == "new" else []
        log.info("member %x never started raft: starting it now", rec.identity.member_id)
        return Bootstrapped(raft_storage, state, peers, 0)
    log.info("restarting member %x in cluster %x at commit %d", rec.identity.member_id,
             rec.identity.cluster_id, raft_storage.log.hard_state.commit)
    if snap is None:
        return Bootstrapped(raft_storage, state, [], 0)
    return Bootstrapped(raft_storage, state, [], snap.metadata.index, snap.metadata.conf_state)


def _catch_up_to_backend(raft_storage: RaftStorage, state: MemberState, index: int, term: int) -> Snapshot:
    """The WAL lost entries the backend had applied (see
    RaftStorage.catch_up_to_backend): raft restarts from the backend."""
    last = raft_storage.log.last_index()
    try:
        if term == 0:
            raise WalError(f"wal: the WAL ends at index {last} but the backend holds index {index} "
                           "with no term recorded: cannot start raft from the backend")
        members = state.membership.members.values()
        conf_state = ConfState(sorted(m.id for m in members if not m.is_learner),
                               sorted(m.id for m in members if m.is_learner))
        log.warning("the WAL ends at index %d but the backend holds index %d (term %d): the WAL lost its "
                    "tail; raft restarts from a snapshot of the backend at %d", last, index, term, index)
        return raft_storage.catch_up_to_backend(index, term, conf_state)
    except BaseException:
        state.close()
        raft_storage.close()
        raise


async def _join(cfg: ServerConfig) -> Bootstrapped:
    membership = await joined_membership(cfg)
    boot = _create(cfg, membership, peers=[])
    log.info("joining cluster %x as member %x", membership.cluster_id, membership.local_id)
    return boot


def _new(cfg: ServerConfig) -> Bootstrapped:
    membership = new_membership(cfg)
    boot = _create(cfg, membership, peers=membership.voter_ids())
    log.info("starting new member %x in cluster %x", membership.local_id, membership.cluster_id)
    return boot


def _create(cfg: ServerConfig, membership: Membership, peers: list[int]) -> Bootstrapped:
    """A fresh data directory for membership's local member: the backend
    holding the members, then the WAL naming the member and cluster."""
    backend = open_backend(cfg)
    try:
        store_members(backend, membership)
        backend.commit()
    except BaseException:
        backend.close()
        raise
    state = _build_state(cfg, backend, lambda: membership)
    try:
        identity = WalIdentity(membership.local_id, membership.cluster_id)
        raft_storage = RaftStorage.create(cfg.wal_dir(), cfg.snap_dir(), identity, unsafe_no_fsync=cfg.unsafe_no_fsync)
    except BaseException:
        state.close()
        raise
    return Bootstrapped(raft_storage, state, peers, 0)


def _build_state(cfg: ServerConfig, backend: Backend, membership: Callable[[], Membership]) -> MemberState:
    """The state machine on backend; the backend is closed if building fails."""
    try:
        return MemberState.open(cfg, backend, membership())
    except BaseException:
        backend.close()
        raise
