"""RawNode: the raft core's public face. Inputs go in through ``tick``,
``step``, ``propose`` and friends; everything the application must do comes
out as one ``Ready`` at a time:

1. persist ``hard_state``, ``entries`` and ``snapshot`` (a leader may send
   its messages first; anyone else sends after persisting);
2. send ``messages``;
3. apply ``committed_entries`` (calling ``apply_conf_change`` for conf
   change entries) and serve ``read_states``;
4. call ``advance(rd)``.

Only one Ready is outstanding at a time: call ``advance`` before the next
``ready``. Same inputs, same outputs: nothing here reads a clock or the
global random generator.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from petcd.raft.bounds import why_impossible
from petcd.raft.progress import ProgressState
from petcd.raft.raft import Config, ProposalDropped, Raft, ReadState
from petcd.raft.types import (
    ConfChange,
    ConfChangeType,
    ConfState,
    Entry,
    EntryType,
    HardState,
    Message,
    MessageType,
    Snapshot,
    StateType,
)

log = logging.getLogger("petcd.raft")

MT = MessageType
# messages a node makes for itself; one arriving from the network is ignored
_LOCAL = frozenset({MT.MsgHup, MT.MsgBeat, MT.MsgUnreachable, MT.MsgSnapStatus, MT.MsgCheckQuorum})
_RESPONSES = frozenset(
    {MT.MsgAppResp, MT.MsgVoteResp, MT.MsgHeartbeatResp, MT.MsgPreVoteResp}
)


@dataclass(slots=True, frozen=True)
class SoftState:
    """Volatile state worth telling the application about; not persisted."""

    lead: int
    raft_state: StateType


@dataclass(slots=True)
class Ready:
    soft_state: SoftState | None = None  # None: unchanged since the last Ready
    hard_state: HardState | None = None  # None: unchanged since the last Ready
    read_states: list[ReadState] = field(default_factory=list)
    entries: list[Entry] = field(default_factory=list)
    snapshot: Snapshot | None = None
    committed_entries: list[Entry] = field(default_factory=list)
    messages: list[Message] = field(default_factory=list)
    must_sync: bool = False  # entries, term or vote changed: persist with fsync


@dataclass(slots=True, frozen=True)
class ProgressStatus:
    match: int
    next: int
    state: str
    is_learner: bool


@dataclass(slots=True, frozen=True)
class Status:
    id: int
    term: int
    vote: int
    commit: int
    lead: int
    raft_state: StateType
    applied: int
    lead_transferee: int
    progress: dict[int, ProgressStatus]

    @property
    def role(self) -> StateType:
        return self.raft_state


class RawNode:
    def __init__(self, cfg: Config) -> None:
        storage_empty = cfg.storage.last_index() == 0 and cfg.storage.hard_state.is_empty()
        if cfg.peers and not storage_empty:
            raise ValueError("raft: peers are given only when starting a new cluster with empty storage")
        self.raft = Raft(cfg)
        if cfg.peers:
            self._bootstrap(cfg.peers, cfg.learners)
        self._prev_soft = SoftState(self.raft.lead, self.raft.state)
        self._prev_hard = self.raft.hard_state() if not cfg.peers else HardState()

    def _bootstrap(self, peers: list[int], learners: list[int]) -> None:
        """A new cluster starts with one conf change entry per member at term
        1, committed, and already applied to the tracker; the application
        sees them as committed entries like any others."""
        r = self.raft
        r.become_follower(1, 0)
        ents = []
        changes = [ConfChange(ConfChangeType.ConfChangeAddNode, p) for p in peers]
        changes += [ConfChange(ConfChangeType.ConfChangeAddLearnerNode, p) for p in learners]
        for i, cc in enumerate(changes, start=1):
            ents.append(Entry(term=1, index=i, type=EntryType.EntryConfChange, data=cc.to_bytes()))
        r.log.append(ents)
        r.log.committed = len(ents)
        r.conf_reflected = len(ents)

    # ---- inputs ---------------------------------------------------------------

    def tick(self) -> None:
        self.raft.tick()

    def campaign(self) -> None:
        """Start an election now instead of waiting for the timeout."""
        self.raft.step(Message(type=MT.MsgHup, from_=self.raft.id))

    def propose(self, data: bytes) -> None:
        """Propose data to be appended to the log. Raises ProposalDropped
        when this node cannot take it now (no leader, a transfer...)."""
        r = self.raft
        if r.state == StateType.Leader:
            r.propose_normal(data)  # the hot path: no message to build
        else:
            r.step(Message(type=MT.MsgProp, from_=r.id, entries=[Entry(data=data)]))

    def propose_conf_change(self, cc: ConfChange) -> None:
        entry = Entry(type=EntryType.EntryConfChange, data=cc.to_bytes())
        self.raft.step(Message(type=MT.MsgProp, from_=self.raft.id, entries=[entry]))

    def read_index(self, ctx: bytes) -> None:
        """Ask for a read index; the answer comes back as a ReadState with
        this ctx in a later Ready."""
        self.raft.step(Message(type=MT.MsgReadIndex, from_=self.raft.id, entries=[Entry(data=ctx)]))

    def transfer_leader(self, transferee: int) -> None:
        self.raft.step(Message(type=MT.MsgTransferLeader, from_=transferee))

    def report_unreachable(self, node_id: int) -> None:
        self.raft.step(Message(type=MT.MsgUnreachable, from_=node_id))

    def report_snapshot(self, node_id: int, ok: bool) -> None:
        self.raft.step(Message(type=MT.MsgSnapStatus, from_=node_id, reject=not ok))

    def step(self, m: Message) -> None:
        """Feed a message that arrived from a peer. Bad or unexpected
        messages are ignored with a logged reason (see bounds.py for what no
        correct peer sends); this never raises for what a peer sent, and
        nothing out of bounds reaches the hard state, the log or the WAL."""
        r = self.raft
        if m.type in _LOCAL:
            log.debug("%x ignored local message type %s from the network", r.id, m.type.name)
            return
        if m.to not in (0, r.id):
            log.debug("%x ignored a message addressed to %x", r.id, m.to)
            return
        if m.type in _RESPONSES and m.from_ not in r.prs:
            log.debug("%x ignored %s from unknown member %x", r.id, m.type.name, m.from_)
            return
        why = why_impossible(m, node_id=r.id, term=r.term, last_index=r.log.last_index(),
                             leader=r.state == StateType.Leader)
        if why is not None:
            log.warning("%x ignored a %s from %x: %s", r.id, m.type.name, m.from_, why)
            return
        try:
            r.step(m)
        except ProposalDropped as exc:
            log.info("%x dropped a forwarded request from %x: %s", r.id, m.from_, exc)

    def apply_conf_change(self, cc: ConfChange) -> ConfState:
        return self.raft.apply_conf_change(cc)

    # ---- outputs ----------------------------------------------------------------

    def has_ready(self) -> bool:
        r = self.raft
        if r.msgs or r.read_states or r.needs_bcast:
            return True
        if r.log.unstable or r.log.unstable_snapshot is not None:
            return True
        if r.log.has_next_committed():
            return True
        if SoftState(r.lead, r.state) != self._prev_soft:
            return True
        hs = r.hard_state()
        return hs != self._prev_hard and not hs.is_empty()

    def ready(self) -> Ready:
        r = self.raft
        r.flush_appends()
        rd = Ready()
        soft = SoftState(r.lead, r.state)
        if soft != self._prev_soft:
            rd.soft_state = soft
            self._prev_soft = soft
        hs = r.hard_state()
        if hs != self._prev_hard and not hs.is_empty():
            rd.hard_state = hs
            rd.must_sync = hs.term != self._prev_hard.term or hs.vote != self._prev_hard.vote
            self._prev_hard = hs
        rd.entries = r.log.unstable_entries()
        if rd.entries:
            rd.must_sync = True
        rd.snapshot = r.log.unstable_snapshot
        rd.committed_entries = r.log.next_committed()
        rd.messages, r.msgs = r.msgs, []
        rd.read_states, r.read_states = r.read_states, []
        return rd

    def advance(self, rd: Ready) -> None:
        r = self.raft
        applied = 0
        if rd.committed_entries:
            applied = rd.committed_entries[-1].index
        if rd.snapshot is not None:
            r.log.stable_snap_to(rd.snapshot.metadata.index)
            applied = max(applied, rd.snapshot.metadata.index)
        if applied:
            r.log.applied_to(applied)
        if rd.entries:
            last = rd.entries[-1]
            r.log.stable_to(last.index, last.term)
            r.on_stable(last.index, last.term)

    def status(self) -> Status:
        r = self.raft
        progress = {}
        if r.state == StateType.Leader:
            progress = {
                i: ProgressStatus(p.match, p.next, ProgressState(p.state).name, p.is_learner) for i, p in r.prs.items()
            }
        return Status(
            id=r.id,
            term=r.term,
            vote=r.vote,
            commit=r.log.committed,
            lead=r.lead,
            raft_state=r.state,
            applied=r.log.applied,
            lead_transferee=r.lead_transferee,
            progress=progress,
        )
