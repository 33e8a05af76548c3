"""What a raft message from a peer may carry: the bounds every field is held to
before it can move a node's state.

A message that breaks one of these is not a message any correct member sends:
a forged, corrupted or buggy one. RawNode.step ignores it with a logged
reason, so nothing from it reaches the hard state, the log or the WAL.
Well-formedness on the wire (sizes, enum values, who is on the other end of
the connection) is the transport's business; these are the rules that need
raft's own state.

The limits:

- **terms** (``term``, ``log_term``, entry terms, snapshot term) are at most
  ``MAX_TERM`` = 2**63 - 1. A term grows by one per election; a real cluster
  never gets near 2**63 (at one election per millisecond that is 290 million
  years), so a larger one is forged. The bound leaves room for term + 1 (a
  campaign, a pre-vote's next term) to fit the uint64 of the wire and the WAL,
  and keeps terms inside int64 for clients that read ``raft_term`` signed. A
  node at ``MAX_TERM`` never campaigns (it logs why) rather than overflow.
- **term jumps** (applied in Raft.step, not here): a node never moves its
  term up by more than ``MAX_TERM_STEP`` = 2**32 for one message. Only
  elections move terms, and no member misses four billion of them; a message
  further ahead moves the node up by ``MAX_TERM_STEP`` (as a campaign would:
  a higher term, no vote, no leader) and is otherwise dropped. Without the
  limit one forged message could pin the cluster at ``MAX_TERM``, where no
  member may campaign again; with it that takes 2**31 of them. Members that
  forged messages have pushed apart still converge (each message from the
  higher one lifts the lower one), which a rule that ignored far-ahead terms
  would not give: they would stop hearing each other for good.
- **indexes** (``index``, ``commit``, ``reject_hint``, entry and snapshot
  indexes) are at most ``MAX_INDEX`` = 2**63 - 1, for the same reason: one
  index per entry, and index + len(entries) must still fit.
- ``log_term`` is never above the message's own term (a leader at term T has
  no entry of a later term; a voter's last term is at most its term).
- the entries of a MsgApp are consecutive from ``index + 1``, their terms do
  not decrease, start at or above ``log_term`` and never exceed the message's
  term (Raft's log matching: terms along a log only grow, and a leader's log
  holds nothing newer than its term).
- a MsgSnap carries a snapshot whose index and term are in range, whose term
  is not above the message's, and whose configuration has at least one voter
  and no member id 0.
- a MsgAppResp never acknowledges an index past the leader's last entry (a
  follower cannot hold entries its leader does not).
- ``from`` is a member id: never 0 (raft's "none"), and never the node
  itself but on a forwarded message.
- ``term`` is 0 only on what a follower forwards (MsgProp, MsgReadIndex,
  MsgTransferLeader): raft takes a term of 0 for a local message of the
  current term, so a MsgApp or MsgHeartbeat without a term would otherwise
  pass for the current leader's without the sender knowing the term.
"""

from __future__ import annotations

from petcd.raft.types import Message, MessageType

MT = MessageType

UINT64_MAX = (1 << 64) - 1
MAX_TERM = (1 << 63) - 1
MAX_INDEX = (1 << 63) - 1
MAX_TERM_STEP = 1 << 32
# Entries one message may carry. A leader's MsgApp holds at most
# max_size_per_msg bytes of entries (1 MiB in petcd; entry overhead counted as
# 12 bytes: at most ~87,000 entries) plus one; a proposal or read index, one.
MAX_ENTRIES_PER_MESSAGE = 1 << 17
# Members one configuration may name: etcd recommends up to 7, nobody runs
# thousands; a bigger list in a snapshot is forged.
MAX_CONF_MEMBERS = 1 << 12
# Messages a follower forwards to its leader as they were made locally: without
# a term, and naming whoever made them (which may be a third member, or the
# receiver itself, when a follower that has just lost its leadership forwards
# them again). Every other message a member sends carries its term (at least 1)
# and its own id.
FORWARDED = frozenset({MT.MsgProp, MT.MsgReadIndex, MT.MsgTransferLeader})


def why_impossible(m: Message, *, node_id: int, term: int, last_index: int, leader: bool) -> str | None:
    """Why no correct member could have sent m to this node, or None if it could have.

    node_id, term and last_index are the receiving node's; leader whether it
    leads. Pure: the same message and state give the same answer."""
    if m.from_ == 0:
        return "it names no sender"
    if m.from_ == node_id and m.type not in FORWARDED:
        return "it claims to come from this node"
    for name, value, limit in (
        ("term", m.term, MAX_TERM),
        ("log term", m.log_term, MAX_TERM),
        ("index", m.index, MAX_INDEX),
        ("commit", m.commit, MAX_INDEX),
        ("reject hint", m.reject_hint, MAX_INDEX),
        ("vote", m.vote, UINT64_MAX),
    ):
        if not 0 <= value <= limit:
            return f"its {name} {value} is out of range [0, {limit}]"
    if m.term == 0 and m.type not in FORWARDED:
        return "it carries no term (raft would take it for a local message of the current term)"
    if m.term and m.log_term > m.term:
        return f"its log term {m.log_term} is above its term {m.term}"
    if len(m.entries) > MAX_ENTRIES_PER_MESSAGE:
        return f"it carries {len(m.entries)} entries (at most {MAX_ENTRIES_PER_MESSAGE})"
    t = m.type
    if t == MT.MsgApp:
        return _check_append(m)
    if t == MT.MsgSnap:
        return _check_snapshot(m)
    if t == MT.MsgAppResp and leader and not m.reject and m.index > last_index:
        return f"it acknowledges index {m.index} past this leader's last index {last_index}"
    return None


def _check_append(m: Message) -> str | None:
    ents = m.entries
    if not ents:
        return None
    if m.index + len(ents) > MAX_INDEX:
        return f"its entries would end past index {MAX_INDEX}"
    # Whole-list comparisons run in C: this is on every append a follower takes.
    indexes = [e.index for e in ents]
    if indexes != list(range(m.index + 1, m.index + 1 + len(ents))):
        return f"its entries' indexes {_brief(indexes)} do not follow its index {m.index}"
    terms = [e.term for e in ents]
    if terms != sorted(terms):
        return f"its entries' terms {_brief(terms)} go down"
    if terms[0] < max(m.log_term, 1):
        return f"its first entry has term {terms[0]}, below {max(m.log_term, 1)} (the term before it, at least 1)"
    if terms[-1] > m.term:
        return f"its last entry has term {terms[-1]}, above the message's term {m.term}"
    return None


def _brief(values: list[int]) -> str:
    return str(values) if len(values) <= 4 else f"[{values[0]}, {values[1]}, ..., {values[-1]}]"


def _check_snapshot(m: Message) -> str | None:
    snap = m.snapshot
    if snap is None:
        return "it is a snapshot message without a snapshot"
    md = snap.metadata
    if not 0 < md.index <= MAX_INDEX:
        return f"its snapshot index {md.index} is out of range [1, {MAX_INDEX}]"
    if not 0 < md.term <= m.term:
        return f"its snapshot term {md.term} is out of range [1, {m.term}]"
    cs = md.conf_state
    ids = [*cs.voters, *cs.learners, *cs.voters_outgoing, *cs.learners_next]
    if not cs.voters:
        return "its snapshot's configuration has no voter"
    if len(ids) > MAX_CONF_MEMBERS:
        return f"its snapshot's configuration names {len(ids)} members (at most {MAX_CONF_MEMBERS})"
    if any(not 0 < i <= UINT64_MAX for i in ids):
        return "its snapshot's configuration names member 0 or an id out of range"
    return None
