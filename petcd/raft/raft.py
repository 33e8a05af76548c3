"""The Raft state machine of one node: roles, elections, replication, commit,
read index, leadership transfer, membership. No I/O: messages to send pile up
in ``msgs`` and read results in ``read_states``; RawNode turns them into a
Ready.

Rules follow the Raft paper and thesis (section numbers in comments), with
etcd's refinements: pre-vote (§9.6), check-quorum and leader stickiness,
fast log backtracking, and a leader that counts its own entries toward
commitment only once they are durable (it may send them to followers first).
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from petcd.raft.bounds import MAX_ENTRIES_PER_MESSAGE, MAX_TERM, MAX_TERM_STEP
from petcd.raft.log import RaftLog
from petcd.raft.progress import Progress, ProgressState
from petcd.raft.storage import MemoryStorage
from petcd.raft.types import (
    ENTRY_OVERHEAD,
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
NONE = 0
# context of a vote request that comes from a leadership transfer: it must
# not be ignored for leader stickiness
CAMPAIGN_TRANSFER = b"CampaignTransfer"


class ProposalDropped(Exception):
    """A proposal (or read index request) this node cannot take now; the
    message says why. The caller may retry, for instance once a leader is known."""


@dataclass(slots=True)
class Config:
    """How a node is set up. ``peers`` only when bootstrapping a new
    cluster; a node restarting from storage takes its members from there."""

    id: int
    storage: MemoryStorage
    peers: list[int] = field(default_factory=list)
    learners: list[int] = field(default_factory=list)
    election_tick: int = 10
    heartbeat_tick: int = 1
    applied: int = 0
    rng: random.Random | None = None
    pre_vote: bool = False
    check_quorum: bool = False
    max_inflight_msgs: int = 256
    max_size_per_msg: int = 1 << 20
    max_committed_size_per_ready: int = 16 << 20
    disable_proposal_forwarding: bool = False

    def validate(self) -> None:
        if self.id <= 0:
            raise ValueError("raft: id must be a positive integer")
        if self.heartbeat_tick <= 0:
            raise ValueError("raft: heartbeat tick must be greater than 0")
        if self.election_tick <= self.heartbeat_tick:
            raise ValueError("raft: election tick must be greater than heartbeat tick")
        if self.max_inflight_msgs <= 0:
            raise ValueError("raft: max inflight messages must be greater than 0")


@dataclass(slots=True)
class ReadState:
    """A read index result: reads issued with request_ctx may be served once
    the application has applied up to index."""

    index: int
    request_ctx: bytes


@dataclass(slots=True)
class _ReadRequest:
    index: int
    req: Message
    acks: set[int]


class Raft:
    def __init__(self, cfg: Config) -> None:
        cfg.validate()
        self.id = cfg.id
        self.cfg = cfg
        self.rng = cfg.rng if cfg.rng is not None else random.Random(cfg.id)
        self.log = RaftLog(cfg.storage, cfg.max_committed_size_per_ready)
        self.max_inflight = cfg.max_inflight_msgs
        self.max_msg_size = cfg.max_size_per_msg
        self.election_timeout = cfg.election_tick
        self.heartbeat_timeout = cfg.heartbeat_tick
        self.pre_vote = cfg.pre_vote
        self.check_quorum = cfg.check_quorum
        self.term = 0
        self.vote = NONE
        self.lead = NONE
        self.state = StateType.Follower
        self.prs: dict[int, Progress] = {}
        self.votes: dict[int, bool] = {}
        self.msgs: list[Message] = []
        # The MsgProp last queued for the leader and its entries' size, while
        # it is still the newest of self.msgs: proposals that follow join it.
        self._forwarding: tuple[Message, int] | None = None
        self.read_states: list[ReadState] = []
        self.pending_reads: dict[bytes, _ReadRequest] = {}
        self.read_queue: list[bytes] = []
        self.pending_read_msgs: list[Message] = []  # until an entry of this term commits
        self.pending_conf_index = 0
        self.lead_transferee = NONE
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self.randomized_election_timeout = self.election_timeout
        self.needs_bcast = False
        # conf change entries up to here are already reflected in prs
        # (bootstrap applies its own at once)
        self.conf_reflected = 0
        self.verified = 0
        self._step: Callable[[Message], None] = self._step_follower

        hs, cs = cfg.storage.initial_state()
        if cs.voters or cs.learners:
            if cfg.peers or cfg.learners:
                raise ValueError("raft: cannot take peers when restarting from storage with a configuration")
            voters, learners = cs.voters, cs.learners
        else:
            voters, learners = cfg.peers, cfg.learners
        for v in voters:
            self._add_progress(v, learner=False)
        for lid in learners:
            self._add_progress(lid, learner=True)
        if not hs.is_empty():
            self._load_state(hs)
        if cfg.applied > 0:
            self.log.applied_to(cfg.applied)
        self.become_follower(self.term, NONE)
        # Restarted within a term, the log is taken as matched: the leader may well know this
        # node's tail is its own (its match for it) and will send no append to say so again.
        self.verified = self.log.last_index()

    # ---- state ---------------------------------------------------------------

    def hard_state(self) -> HardState:
        return HardState(self.term, self.vote, self.log.committed)

    def _load_state(self, hs: HardState) -> None:
        if hs.commit < self.log.committed or hs.commit > self.log.last_index():
            raise ValueError(f"raft: commit {hs.commit} is out of range [{self.log.committed}, {self.log.last_index()}]")
        self.log.committed = hs.commit
        self.term = hs.term
        self.vote = hs.vote

    def conf_state(self) -> ConfState:
        voters = sorted(i for i, p in self.prs.items() if not p.is_learner)
        learners = sorted(i for i, p in self.prs.items() if p.is_learner)
        return ConfState(voters=voters, learners=learners)

    def promotable(self) -> bool:
        pr = self.prs.get(self.id)
        return pr is not None and not pr.is_learner

    def voters(self) -> list[int]:
        return [i for i, p in self.prs.items() if not p.is_learner]

    def quorum(self) -> int:
        return len(self.voters()) // 2 + 1

    def _add_progress(self, node_id: int, learner: bool) -> None:
        last = self.log.last_index()
        pr = Progress(next=last + 1, is_learner=learner, max_inflight=self.max_inflight, recent_active=True)
        if node_id == self.id:
            pr.match = self.log.last_stable_index()
        self.prs[node_id] = pr

    # ---- role changes ----------------------------------------------------------

    def _reset(self, term: int) -> None:
        if self.term != term:
            self.term = term
            self.vote = NONE
            # How far this node's log is known to match the leader of this term's: what
            # it has committed, then what that leader's appends have matched. A heartbeat
            # commits no further (_handle_heartbeat).
            self.verified = self.log.committed
        self.lead = NONE
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self.randomized_election_timeout = self.election_timeout + self.rng.randrange(self.election_timeout)
        self.lead_transferee = NONE
        self.votes = {}
        last = self.log.last_index()
        for node_id, pr in self.prs.items():
            learner = pr.is_learner
            self.prs[node_id] = Progress(next=last + 1, is_learner=learner, max_inflight=self.max_inflight)
            if node_id == self.id:
                self.prs[node_id].match = self.log.last_stable_index()
        self.pending_conf_index = 0
        self.pending_reads = {}
        self.read_queue = []
        self.pending_read_msgs = []
        self.needs_bcast = False

    def become_follower(self, term: int, lead: int) -> None:
        self._reset(term)
        self._step = self._step_follower
        self.lead = lead
        self.state = StateType.Follower

    def become_candidate(self) -> None:
        self._reset(self.term + 1)
        self._step = self._step_candidate
        self.vote = self.id
        self.state = StateType.Candidate
        log.debug("%x became candidate at term %d", self.id, self.term)

    def become_pre_candidate(self) -> None:
        # neither the term nor the vote changes: a pre-vote that fails
        # leaves no trace (thesis §9.6)
        self._step = self._step_candidate
        self.votes = {}
        self.lead = NONE
        self.state = StateType.PreCandidate

    def become_leader(self) -> None:
        self._reset(self.term)
        self._step = self._step_leader
        self.lead = self.id
        self.state = StateType.Leader
        self.prs[self.id].become_replicate()
        # conservatively, a configuration change may be pending somewhere in
        # the uncommitted tail
        self.pending_conf_index = self.log.last_index()
        # §5.4.2: commit an entry of the new term to learn what is committed
        self._append_entries([Entry()])
        log.info("%x became leader at term %d", self.id, self.term)

    # ---- ticks -----------------------------------------------------------------

    def tick(self) -> None:
        if self.state == StateType.Leader:
            self._tick_heartbeat()
        else:
            self._tick_election()

    def _tick_election(self) -> None:
        self.election_elapsed += 1
        if self.promotable() and self.election_elapsed >= self.randomized_election_timeout:
            self.election_elapsed = 0
            self.step(Message(type=MT.MsgHup, from_=self.id))

    def _tick_heartbeat(self) -> None:
        self.heartbeat_elapsed += 1
        self.election_elapsed += 1
        if self.election_elapsed >= self.election_timeout:
            self.election_elapsed = 0
            if self.check_quorum:
                self.step(Message(type=MT.MsgCheckQuorum, from_=self.id))
            if self.state == StateType.Leader and self.lead_transferee != NONE:
                self._abort_transfer()
        if self.state != StateType.Leader:
            return
        if self.heartbeat_elapsed >= self.heartbeat_timeout:
            self.heartbeat_elapsed = 0
            self.step(Message(type=MT.MsgBeat, from_=self.id))

    # ---- elections -------------------------------------------------------------

    def _hup(self, transfer: bool = False) -> None:
        if self.state == StateType.Leader or not self.promotable():
            return
        if self.term >= MAX_TERM:
            # term + 1 would be a term no peer accepts (bounds.py); staying a
            # follower beats overflowing the term on the wire and in the WAL
            log.error("%x cannot campaign: its term %d is at the limit %d", self.id, self.term, MAX_TERM)
            return
        if self._pending_conf_unapplied():
            log.warning("%x cannot campaign at term %d: configuration changes are not yet applied", self.id, self.term)
            return
        if self.pre_vote and not transfer:
            self._campaign(pre=True)
        else:
            self._campaign(pre=False, transfer=transfer)

    def _pending_conf_unapplied(self) -> bool:
        if self.log.committed <= self.log.applied:
            return False
        lo = max(self.log.applied, self.conf_reflected) + 1
        if lo > self.log.committed:
            return False
        ents = self.log.slice(lo, self.log.committed + 1, 0) or []
        return any(e.type != EntryType.EntryNormal for e in ents)

    def _campaign(self, pre: bool, transfer: bool = False) -> None:
        if pre:
            self.become_pre_candidate()
            vote_type, term = MT.MsgPreVote, self.term + 1
        else:
            self.become_candidate()
            vote_type, term = MT.MsgVote, self.term
        if self._poll(self.id, True) == 1:
            # a cluster of one wins at once
            if pre:
                self._campaign(pre=False)
            else:
                self.become_leader()
            return
        ctx = CAMPAIGN_TRANSFER if transfer else b""
        last, last_term = self.log.last_index(), self.log.last_term()
        for v in sorted(self.voters()):
            if v == self.id:
                continue
            self._send(Message(type=vote_type, to=v, term=term, log_term=last_term, index=last, context=ctx))

    def _poll(self, node_id: int, granted: bool) -> int:
        """Record a vote; 1 when won, -1 when lost, 0 while undecided."""
        if node_id not in self.votes:
            self.votes[node_id] = granted
        voters = self.voters()
        yes = sum(1 for v in voters if self.votes.get(v) is True)
        no = sum(1 for v in voters if self.votes.get(v) is False)
        q = len(voters) // 2 + 1
        if yes >= q:
            return 1
        if no > len(voters) - q:
            return -1
        return 0

    # ---- step: the entry point for every message --------------------------------

    def step(self, m: Message) -> None:
        if m.term == 0:
            pass  # a local message
        elif m.term > self.term:
            if m.type in (MT.MsgVote, MT.MsgPreVote):
                force = m.context == CAMPAIGN_TRANSFER
                in_lease = self.check_quorum and self.lead != NONE and self.election_elapsed < self.election_timeout
                if not force and in_lease:
                    # leader stickiness: a live leader is known, so this is
                    # a disruptive node; ignore it
                    return
            if m.type == MT.MsgPreVote:
                pass  # a pre-vote never changes our term
            elif m.type == MT.MsgPreVoteResp and not m.reject:
                pass  # the term moves when the pre-vote wins
            elif m.term - self.term > MAX_TERM_STEP:
                # No run of elections explains such a jump (bounds.py): move toward the term as a
                # campaign would, by MAX_TERM_STEP at most, and drop the message. A cluster pushed
                # apart still converges; pinning it at MAX_TERM takes billions of forged messages.
                term = min(self.term + MAX_TERM_STEP, MAX_TERM)
                log.warning("%x moved from term %d to %d only, on a %s from %x at term %d",
                            self.id, self.term, term, m.type.name, m.from_, m.term)
                self.become_follower(term, NONE)
                return
            elif m.type in (MT.MsgApp, MT.MsgHeartbeat, MT.MsgSnap):
                self.become_follower(m.term, m.from_)
            else:
                self.become_follower(m.term, NONE)
        elif m.term < self.term:
            if (self.check_quorum or self.pre_vote) and m.type in (MT.MsgHeartbeat, MT.MsgApp):
                # a stale leader, perhaps cut off from us by a partition: tell
                # it our term so it steps down
                self._send(Message(type=MT.MsgAppResp, to=m.from_))
            elif m.type == MT.MsgPreVote:
                self._send(Message(type=MT.MsgPreVoteResp, to=m.from_, term=self.term, reject=True))
            return

        t = m.type
        if t == MT.MsgHup:
            self._hup()
        elif t in (MT.MsgVote, MT.MsgPreVote):
            can_vote = (
                self.vote == m.from_
                or (self.vote == NONE and self.lead == NONE)
                or (t == MT.MsgPreVote and m.term > self.term)
            )
            resp = MT.MsgVoteResp if t == MT.MsgVote else MT.MsgPreVoteResp
            if can_vote and self.log.is_up_to_date(m.index, m.log_term):
                self._send(Message(type=resp, to=m.from_, term=m.term))
                if t == MT.MsgVote:
                    self.election_elapsed = 0
                    self.vote = m.from_
            else:
                self._send(Message(type=resp, to=m.from_, term=self.term, reject=True))
        else:
            self._step(m)

    # ---- leader ------------------------------------------------------------------

    def _step_leader(self, m: Message) -> None:
        t = m.type
        if t == MT.MsgBeat:
            # Every heartbeat carries the newest pending read's context: a read
            # whose acks were lost is confirmed by the next heartbeat, not never.
            self._bcast_heartbeat(self.read_queue[-1] if self.read_queue else b"")
            return
        if t == MT.MsgCheckQuorum:
            if not self._quorum_active():
                log.warning("%x stepped down at term %d: no quorum is active", self.id, self.term)
                self.become_follower(self.term, NONE)
            return
        if t == MT.MsgProp:
            self._propose(m)
            return
        if t == MT.MsgReadIndex:
            self._read_index(m)
            return
        pr = self.prs.get(m.from_)
        if pr is None:
            return
        if t == MT.MsgAppResp:
            self._handle_app_resp(m, pr)
        elif t == MT.MsgHeartbeatResp:
            self._handle_heartbeat_resp(m, pr)
        elif t == MT.MsgSnapStatus:
            if pr.state != ProgressState.Snapshot:
                return
            if m.reject:
                pr.pending_snapshot = 0
            pr.become_probe()
            # wait for the follower's answer before probing again
            pr.probe_sent = True
        elif t == MT.MsgUnreachable:
            if pr.state == ProgressState.Replicate:
                pr.become_probe()
        elif t == MT.MsgTransferLeader:
            self._transfer(m.from_, pr)

    def _propose(self, m: Message) -> None:
        if not m.entries:
            raise ProposalDropped("raft: empty proposal")
        if self.id not in self.prs:
            raise ProposalDropped("raft: this node was removed from the cluster")
        if self.lead_transferee != NONE:
            raise ProposalDropped(f"raft: leadership is being transferred to {self.lead_transferee:x}")
        entries: list[Entry] = []
        for e in m.entries:
            if e.type != EntryType.EntryNormal:
                if not _valid_conf_change(e.data):
                    log.warning("%x dropped a malformed configuration change", self.id)
                    e = Entry()
                elif self.pending_conf_index > self.log.applied:
                    if m.from_ == self.id:
                        raise ProposalDropped("raft: a configuration change is already pending")
                    log.info("%x dropped a configuration change: another one is pending", self.id)
                    e = Entry()
                else:
                    self.pending_conf_index = self.log.last_index() + len(entries) + 1
            entries.append(Entry(data=e.data, type=e.type))
        self._append_entries(entries)

    def propose_normal(self, data: bytes) -> None:
        """A leader's own proposal of a normal entry: what _propose does for
        one, without a message around it."""
        if self.lead_transferee != NONE:
            raise ProposalDropped(f"raft: leadership is being transferred to {self.lead_transferee:x}")
        if self.id not in self.prs:
            raise ProposalDropped("raft: this node was removed from the cluster")
        self.log.append([Entry(self.term, self.log.last_index() + 1, EntryType.EntryNormal, data)])
        self.needs_bcast = True

    def _append_entries(self, entries: list[Entry]) -> None:
        index = self.log.last_index()
        term = self.term
        for e in entries:
            index += 1
            e.term = term
            e.index = index
        self.log.append(entries)
        # sent once per Ready, so proposals that arrive together travel together
        self.needs_bcast = True

    def flush_appends(self) -> None:
        """Send the entries proposed since the last Ready to every follower."""
        if self.needs_bcast:
            self.needs_bcast = False
            if self.state == StateType.Leader:
                self._bcast_append()

    def on_stable(self, index: int, term: int) -> None:
        """Entries up to index (of term) are durable here: as leader, they
        now count toward commitment (thesis §10.2.1)."""
        if self.state != StateType.Leader or self.log.term(index) != term:
            return
        pr = self.prs.get(self.id)
        if pr is not None and pr.maybe_update(index) and self._maybe_commit():
            self._bcast_append()

    def _handle_app_resp(self, m: Message, pr: Progress) -> None:
        pr.recent_active = True
        if m.reject:
            hint = m.reject_hint
            if m.log_term > 0:
                hint = self.log.find_conflict_by_term(m.reject_hint, m.log_term, floor=pr.match)[0]
            if pr.maybe_decr_to(m.index, hint):
                if pr.state == ProgressState.Replicate:
                    pr.become_probe()
                self._send_append(m.from_)
            return
        old_paused = pr.is_paused()
        if not pr.maybe_update(m.index):
            return
        if pr.state == ProgressState.Probe:
            pr.become_replicate()
        elif pr.state == ProgressState.Snapshot and pr.match >= pr.pending_snapshot:
            pr.become_probe()
            pr.become_replicate()
        elif pr.state == ProgressState.Replicate:
            pr.free_le(m.index)
        if self._maybe_commit():
            self._bcast_append()
        elif old_paused:
            self._send_append(m.from_)
        while self._maybe_send_append(m.from_, send_if_empty=False):
            pass
        if m.from_ == self.lead_transferee and pr.match == self.log.last_index():
            self._send(Message(type=MT.MsgTimeoutNow, to=m.from_))

    def _handle_heartbeat_resp(self, m: Message, pr: Progress) -> None:
        pr.recent_active = True
        pr.probe_sent = False
        if pr.state == ProgressState.Replicate and len(pr.inflights) >= pr.max_inflight:
            pr.inflights.popleft()
        if pr.match < self.log.last_index():
            self._send_append(m.from_)
        if not m.context:
            return
        rr = self.pending_reads.get(m.context)
        if rr is None:
            return
        rr.acks.add(m.from_)
        if sum(1 for v in self.voters() if v in rr.acks) < self.quorum():
            return
        # every read queued up to and including this one is now safe
        k = self.read_queue.index(m.context)
        done, self.read_queue = self.read_queue[: k + 1], self.read_queue[k + 1 :]
        for ctx in done:
            r = self.pending_reads.pop(ctx)
            self._answer_read(r.req, r.index)

    def _transfer(self, target: int, pr: Progress) -> None:
        if pr.is_learner:
            log.info("%x ignored a transfer to learner %x", self.id, target)
            return
        if self.lead_transferee != NONE:
            if self.lead_transferee == target:
                return
            self._abort_transfer()
        if target == self.id:
            return
        # the transfer must finish within an election timeout
        self.election_elapsed = 0
        self.lead_transferee = target
        if pr.match == self.log.last_index():
            self._send(Message(type=MT.MsgTimeoutNow, to=target))
        else:
            self._send_append(target)

    def _abort_transfer(self) -> None:
        self.lead_transferee = NONE

    def _read_index(self, m: Message) -> None:
        if len(self.voters()) == 1 and self.id in self.prs and not self.prs[self.id].is_learner:
            if self._committed_in_term():
                self._answer_read(m, self.log.committed)
            else:
                self.pending_read_msgs.append(m)
            return
        if not self._committed_in_term():
            # until an entry of this term commits, our commit index may be
            # behind what an earlier leader committed (thesis §6.4)
            self.pending_read_msgs.append(m)
            return
        self._start_read(m)

    def _start_read(self, m: Message) -> None:
        ctx = m.entries[0].data if m.entries else b""
        if len(self.voters()) == 1:
            self._answer_read(m, self.log.committed)
            return
        if ctx in self.pending_reads:
            return
        self.pending_reads[ctx] = _ReadRequest(self.log.committed, m, {self.id})
        self.read_queue.append(ctx)
        self._bcast_heartbeat(ctx)

    def _answer_read(self, req: Message, index: int) -> None:
        ctx = req.entries[0].data if req.entries else b""
        if req.from_ in (NONE, self.id):
            self.read_states.append(ReadState(index, ctx))
        else:
            self._send(Message(type=MT.MsgReadIndexResp, to=req.from_, index=index, entries=list(req.entries)))

    def _committed_in_term(self) -> bool:
        return self.log.term(self.log.committed) == self.term

    def _release_pending_reads(self) -> None:
        if self.pending_read_msgs and self._committed_in_term():
            msgs, self.pending_read_msgs = self.pending_read_msgs, []
            for m in msgs:
                self._start_read(m)

    def _maybe_commit(self) -> bool:
        matches = sorted((p.match for p in self.prs.values() if not p.is_learner), reverse=True)
        if not matches:
            return False
        mci = matches[len(matches) // 2]
        if self.log.maybe_commit(mci, self.term):  # §5.4.2: only entries of our term
            self._release_pending_reads()
            return True
        return False

    def _quorum_active(self) -> bool:
        active = 0
        for node_id, pr in self.prs.items():
            if node_id == self.id:
                if not pr.is_learner:
                    active += 1
                continue
            if pr.recent_active and not pr.is_learner:
                active += 1
            pr.recent_active = False
        return active >= self.quorum()

    # ---- sending -------------------------------------------------------------------

    def _send(self, m: Message) -> None:
        m.from_ = self.id
        if m.type not in (MT.MsgVote, MT.MsgVoteResp, MT.MsgPreVote, MT.MsgPreVoteResp):
            # vote messages carry their own term (a pre-vote's is the next one)
            if m.type != MT.MsgProp and m.type != MT.MsgReadIndex:
                m.term = self.term
        self.msgs.append(m)

    def _bcast_append(self) -> None:
        for node_id in self.prs:
            if node_id != self.id:
                self._send_append(node_id)

    def _send_append(self, to: int) -> None:
        self._maybe_send_append(to, send_if_empty=True)

    def _maybe_send_append(self, to: int, send_if_empty: bool) -> bool:
        pr = self.prs[to]
        if pr.is_paused():
            return False
        prev = pr.next - 1
        term = self.log.term(prev)
        ents = self.log.entries_from(pr.next, self.max_msg_size)
        if term is None or ents is None:
            return self._send_snapshot(to, pr)
        if not ents and not send_if_empty:
            return False
        if ents:
            last = ents[-1].index
            if pr.state == ProgressState.Replicate:
                pr.optimistic_update(last)
                pr.inflights.append(last)
            elif pr.state == ProgressState.Probe:
                pr.probe_sent = True
        self._send(Message(type=MT.MsgApp, to=to, index=prev, log_term=term, entries=ents, commit=self.log.committed))
        return True

    def _send_snapshot(self, to: int, pr: Progress) -> bool:
        if not pr.recent_active:
            return False
        snap = self.log.snapshot()
        if snap.is_empty():
            log.warning("%x needs a snapshot for %x but has none", self.id, to)
            return False
        pr.become_snapshot(snap.metadata.index)
        self._send(Message(type=MT.MsgSnap, to=to, snapshot=snap))
        return True

    def _bcast_heartbeat(self, ctx: bytes) -> None:
        for node_id, pr in self.prs.items():
            if node_id == self.id:
                continue
            commit = min(pr.match, self.log.committed)
            self._send(Message(type=MT.MsgHeartbeat, to=node_id, commit=commit, context=ctx))

    # ---- candidate -------------------------------------------------------------------

    def _step_candidate(self, m: Message) -> None:
        t = m.type
        if t == MT.MsgProp:
            raise ProposalDropped("raft: no leader (an election is in progress)")
        if t == MT.MsgApp:
            self.become_follower(m.term, m.from_)
            self._handle_append(m)
        elif t == MT.MsgHeartbeat:
            self.become_follower(m.term, m.from_)
            self._handle_heartbeat(m)
        elif t == MT.MsgSnap:
            self.become_follower(m.term, m.from_)
            self._handle_snapshot(m)
        elif t in (MT.MsgVoteResp, MT.MsgPreVoteResp):
            mine = MT.MsgPreVoteResp if self.state == StateType.PreCandidate else MT.MsgVoteResp
            if t != mine:
                return
            result = self._poll(m.from_, not m.reject)
            if result == 1:
                if self.state == StateType.PreCandidate:
                    self._campaign(pre=False)
                else:
                    self.become_leader()
            elif result == -1:
                self.become_follower(self.term, NONE)
        elif t == MT.MsgReadIndex:
            raise ProposalDropped("raft: no leader (an election is in progress)")

    # ---- follower ----------------------------------------------------------------------

    def _forward_proposal(self, m: Message) -> None:
        """Queue a proposal for the leader. Proposals made before the next
        Ready travel in one MsgProp (up to max_size_per_msg bytes of entries):
        the leader decodes and steps one message per batch, not one per client
        request, and appends the batch's entries in the order they came."""
        size = sum(len(e.data) for e in m.entries) + ENTRY_OVERHEAD * len(m.entries)
        held = self._forwarding
        if held is not None and self.msgs and self.msgs[-1] is held[0]:
            prev, prev_size = held
            if (prev.to == m.to and prev.from_ == m.from_ and prev_size + size <= self.max_msg_size
                    and len(prev.entries) + len(m.entries) <= MAX_ENTRIES_PER_MESSAGE):
                prev.entries.extend(m.entries)
                self._forwarding = (prev, prev_size + size)
                return
        m.entries = list(m.entries)  # its own list: later proposals are added to it
        self.msgs.append(m)
        self._forwarding = (m, size)

    def _step_follower(self, m: Message) -> None:
        t = m.type
        if t == MT.MsgProp:
            if self.lead == NONE:
                raise ProposalDropped("raft: no leader")
            if self.cfg.disable_proposal_forwarding:
                raise ProposalDropped("raft: proposal forwarding is disabled")
            m.to = self.lead
            self._forward_proposal(m)
        elif t == MT.MsgApp:
            self.election_elapsed = 0
            self.lead = m.from_
            self._handle_append(m)
        elif t == MT.MsgHeartbeat:
            self.election_elapsed = 0
            self.lead = m.from_
            self._handle_heartbeat(m)
        elif t == MT.MsgSnap:
            self.election_elapsed = 0
            self.lead = m.from_
            self._handle_snapshot(m)
        elif t == MT.MsgTransferLeader:
            if self.lead != NONE:
                m.to = self.lead
                self.msgs.append(m)
        elif t == MT.MsgTimeoutNow:
            if m.from_ != self.lead:
                # only the leader hands over leadership; anyone else would just force an election
                log.warning("%x ignored MsgTimeoutNow from %x: the leader is %x", self.id, m.from_, self.lead)
            elif self.promotable():
                log.info("%x starts a transfer election at term %d", self.id, self.term)
                self._hup(transfer=True)
        elif t == MT.MsgReadIndex:
            if self.lead == NONE:
                raise ProposalDropped("raft: no leader")
            m.to = self.lead
            self.msgs.append(m)
        elif t == MT.MsgReadIndexResp:
            if len(m.entries) == 1 and m.from_ == self.lead:
                self.read_states.append(ReadState(m.index, m.entries[0].data))

    def _handle_append(self, m: Message) -> None:
        if m.index < self.log.committed:
            self._send(Message(type=MT.MsgAppResp, to=m.from_, index=self.log.committed))
            return
        last_new = self.log.maybe_append(m.index, m.log_term, m.commit, m.entries)
        if last_new is not None:
            self.verified = max(self.verified, last_new)
            self._send(Message(type=MT.MsgAppResp, to=m.from_, index=last_new))
            return
        hint_index = min(m.index, self.log.last_index())
        hint_index, hint_term = self.log.find_conflict_by_term(hint_index, m.log_term, floor=self.log.committed)
        self._send(
            Message(
                type=MT.MsgAppResp, to=m.from_, index=m.index, reject=True, reject_hint=hint_index, log_term=hint_term
            )
        )

    def _handle_heartbeat(self, m: Message) -> None:
        # A leader's heartbeat commits at most what the follower has matched with it
        # (min(match, commit)). Entries past `verified` are not known to be this term's
        # leader's: a stale tail from an earlier term must not be committed on the word
        # of a heartbeat (a forged one, say); the leader's first append in its term,
        # which every follower gets, verifies what is really its own.
        self.log.commit_to(min(m.commit, self.verified, self.log.last_index()))
        self._send(Message(type=MT.MsgHeartbeatResp, to=m.from_, context=m.context))

    def _handle_snapshot(self, m: Message) -> None:
        if m.snapshot is not None and self._restore(m.snapshot):
            self._send(Message(type=MT.MsgAppResp, to=m.from_, index=self.log.last_index()))
        else:
            self._send(Message(type=MT.MsgAppResp, to=m.from_, index=self.log.committed))

    def _restore(self, snap: Snapshot) -> bool:
        md = snap.metadata
        if md.index <= self.log.committed:
            return False
        cs = md.conf_state
        if self.id not in cs.voters and self.id not in cs.learners:
            log.warning("%x ignored a snapshot whose configuration does not include it", self.id)
            return False
        if self.log.match_term(md.index, md.term):
            # we have the snapshot's last entry: just move the commit index
            self.log.commit_to(md.index)
            return False
        self.log.restore(snap)
        self.verified = md.index
        self.prs = {}
        for v in cs.voters:
            self._add_progress(v, learner=False)
        for lid in cs.learners:
            self._add_progress(lid, learner=True)
        log.info("%x restored a snapshot at index %d, term %d", self.id, md.index, md.term)
        return True

    # ---- membership ----------------------------------------------------------------------

    def apply_conf_change(self, cc: ConfChange) -> ConfState:
        node_id = cc.node_id
        if node_id == NONE:
            return self.conf_state()
        t = cc.type
        if t == ConfChangeType.ConfChangeAddNode:
            pr = self.prs.get(node_id)
            if pr is None:
                self._add_progress(node_id, learner=False)
            else:
                pr.is_learner = False
        elif t == ConfChangeType.ConfChangeAddLearnerNode:
            if node_id in self.prs:
                if not self.prs[node_id].is_learner:
                    log.warning("%x ignored demoting voter %x to a learner", self.id, node_id)
            else:
                self._add_progress(node_id, learner=True)
        elif t == ConfChangeType.ConfChangeRemoveNode:
            self.prs.pop(node_id, None)
            if node_id == self.id and self.state == StateType.Leader:
                log.info("%x was removed from the cluster and steps down", self.id)
                self.become_follower(self.term, NONE)
                return self.conf_state()
        if self.state == StateType.Leader and self.voters():
            if self._maybe_commit():
                self._bcast_append()
            if self.lead_transferee != NONE and self.lead_transferee not in self.prs:
                self._abort_transfer()
        return self.conf_state()


def _valid_conf_change(data: bytes) -> bool:
    try:
        cc = ConfChange.from_bytes(data)
    except Exception:  # malformed bytes of any kind
        return False
    return cc.type in ConfChangeType.__members__.values()
