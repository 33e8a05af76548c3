"""What a leader knows of each follower's log, and how it sends to it.

A follower is *probed* (one append in flight until it answers, used after a
rejection or when its state is unknown), *replicated* to (appends pipelined
optimistically, bounded by the in-flight window), or being sent a
*snapshot* (nothing else is sent until it reports back).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from enum import IntEnum


class ProgressState(IntEnum):
    Probe = 0
    Replicate = 1
    Snapshot = 2


@dataclass(slots=True)
class Progress:
    match: int = 0
    next: int = 1
    state: ProgressState = ProgressState.Probe
    pending_snapshot: int = 0
    recent_active: bool = False
    probe_sent: bool = False
    is_learner: bool = False
    max_inflight: int = 256
    # last index of each append in flight, oldest first
    inflights: deque[int] = field(default_factory=deque)

    def reset_state(self, state: ProgressState) -> None:
        self.probe_sent = False
        self.pending_snapshot = 0
        self.state = state
        self.inflights.clear()

    def become_probe(self) -> None:
        if self.state == ProgressState.Snapshot:
            pending = self.pending_snapshot
            self.reset_state(ProgressState.Probe)
            self.next = max(self.match + 1, pending + 1)
        else:
            self.reset_state(ProgressState.Probe)
            self.next = self.match + 1

    def become_replicate(self) -> None:
        self.reset_state(ProgressState.Replicate)
        self.next = self.match + 1

    def become_snapshot(self, index: int) -> None:
        self.reset_state(ProgressState.Snapshot)
        self.pending_snapshot = index

    def maybe_update(self, n: int) -> bool:
        """The follower has everything up to n; False if that is old news."""
        updated = False
        if self.match < n:
            self.match = n
            updated = True
            self.probe_sent = False
        if self.next < n + 1:
            self.next = n + 1
        return updated

    def optimistic_update(self, n: int) -> None:
        self.next = n + 1

    def maybe_decr_to(self, rejected: int, match_hint: int) -> bool:
        """A rejection of the append after index ``rejected``; False if stale."""
        if self.state == ProgressState.Replicate:
            if rejected <= self.match:
                return False
            self.next = self.match + 1
            return True
        if self.next - 1 != rejected:
            return False
        self.next = max(min(rejected, match_hint + 1), 1)
        self.probe_sent = False
        return True

    def is_paused(self) -> bool:
        if self.state == ProgressState.Probe:
            return self.probe_sent
        if self.state == ProgressState.Replicate:
            return len(self.inflights) >= self.max_inflight
        return True

    def free_le(self, index: int) -> None:
        q = self.inflights
        while q and q[0] <= index:
            q.popleft()
