"""The lessor: which leases exist, which keys each holds, and when each expires.

Grant, revoke and checkpoint are applied from the raft log, so every member
holds the same leases and the same keys for each. Expiry and renewal are the
leader's ("primary") business only: the leader's clock decides that a lease
expired, and the leader then proposes its revocation through raft, so every
member deletes the same keys at the same revision. A member that becomes
leader gives every lease a fresh TTL (etcd's promote), so no lease expires
because leadership moved.

Keys are attached and detached by feeding the lessor the store's events
(``on_events``): a put with a lease attaches its key, a put without one or
a delete detaches it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol

from petcd import stats
from petcd.proto import kv_pb2, lease_pb2

LEASE_BUCKET = "lease"
NO_LEASE = 0
# etcd's MaxLeaseTTL: 9,000,000,000 seconds.
MAX_LEASE_TTL = 9_000_000_000


class LeaseError(Exception):
    message = "lease error"

    def __init__(self) -> None:
        super().__init__(self.message)


class ErrLeaseNotFound(LeaseError):
    message = "etcdserver: requested lease not found"


class ErrLeaseExists(LeaseError):
    message = "etcdserver: lease already exists"


class ErrLeaseTTLTooLarge(LeaseError):
    message = "etcdserver: too large lease TTL"


@dataclass(slots=True)
class Lease:
    id: int
    ttl: int  # granted TTL, seconds
    expiry: float = math.inf  # on the primary's monotonic clock; inf when not primary
    remaining_ttl: int = 0  # from a checkpoint; 0 when none
    keys: set[bytes] = field(default_factory=set)

    def to_pb(self) -> lease_pb2.Lease:
        return lease_pb2.Lease(ID=self.id, TTL=self.ttl, RemainingTTL=self.remaining_ttl)


class Buckets(Protocol):
    """Where leases persist: the backend's lease bucket."""

    def put(self, bucket: str, key: bytes, value: bytes) -> None: ...

    def delete(self, bucket: str, key: bytes) -> None: ...

    def items(self, bucket: str) -> Iterable[tuple[bytes, bytes]]: ...


def lease_key(lease_id: int) -> bytes:
    return (lease_id & ((1 << 64) - 1)).to_bytes(8, "big")


class Lessor:
    def __init__(self, store: Buckets, min_ttl: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self.min_ttl = min_ttl
        self.clock = clock
        self.leases: dict[int, Lease] = {}
        self.primary = False
        for _, raw in store.items(LEASE_BUCKET):
            m = lease_pb2.Lease()
            m.ParseFromString(raw)
            self.leases[m.ID] = Lease(m.ID, m.TTL, remaining_ttl=m.RemainingTTL)

    # ---- applied from the raft log (deterministic) -------------------------

    def grant(self, lease_id: int, ttl: int) -> Lease:
        if ttl > MAX_LEASE_TTL:
            raise ErrLeaseTTLTooLarge()
        if lease_id in self.leases:
            raise ErrLeaseExists()
        lease = Lease(lease_id, max(ttl, self.min_ttl))
        if self.primary:
            lease.expiry = self.clock() + lease.ttl
        self.leases[lease_id] = lease
        self.store.put(LEASE_BUCKET, lease_key(lease_id), lease.to_pb().SerializeToString())
        stats.LEASES.granted += 1  # etcd_debugging_lease_granted_total
        stats.LEASES.ttls.observe(lease.ttl)  # etcd_debugging_lease_ttl_total
        return lease

    def revoke(self, lease_id: int) -> list[bytes]:
        """Forget the lease; returns its keys, sorted, for the caller to delete
        in one revision (the same order on every member)."""
        lease = self.leases.pop(lease_id, None)
        if lease is None:
            raise ErrLeaseNotFound()
        self.store.delete(LEASE_BUCKET, lease_key(lease_id))
        stats.LEASES.revoked += 1  # etcd_debugging_lease_revoked_total
        return sorted(lease.keys)

    def checkpoint(self, lease_id: int, remaining_ttl: int) -> None:
        lease = self.leases.get(lease_id)
        if lease is None:
            return
        lease.remaining_ttl = remaining_ttl
        self.store.put(LEASE_BUCKET, lease_key(lease_id), lease.to_pb().SerializeToString())
        if self.primary:
            lease.expiry = self.clock() + remaining_ttl

    def on_events(self, events: Iterable[kv_pb2.Event]) -> None:
        """Attach and detach keys as the store's writes happen."""
        leases = self.leases
        for ev in events:
            old = ev.prev_kv.lease if ev.HasField("prev_kv") else NO_LEASE
            new = ev.kv.lease if ev.type == kv_pb2.Event.PUT else NO_LEASE
            if old == new:
                continue
            if old != NO_LEASE and old in leases:
                leases[old].keys.discard(ev.kv.key)
            if new != NO_LEASE and new in leases:
                leases[new].keys.add(ev.kv.key)

    def attach(self, lease_id: int, key: bytes) -> None:
        """Re-attach a key found in the store on restart."""
        lease = self.leases.get(lease_id)
        if lease is not None:
            lease.keys.add(key)

    def exists(self, lease_id: int) -> bool:
        return lease_id in self.leases

    # ---- the primary's clock -------------------------------------------------

    def promote(self, extend: float = 0.0) -> None:
        """This member became leader: every lease gets a fresh TTL."""
        self.primary = True
        now = self.clock()
        for lease in self.leases.values():
            ttl = lease.remaining_ttl or lease.ttl
            lease.expiry = now + ttl + extend

    def demote(self) -> None:
        self.primary = False
        for lease in self.leases.values():
            lease.expiry = math.inf

    def renew(self, lease_id: int) -> int:
        """Keep a lease alive for another TTL; returns the TTL (primary only)."""
        lease = self.leases.get(lease_id)
        if lease is None:
            raise ErrLeaseNotFound()
        lease.remaining_ttl = 0
        lease.expiry = self.clock() + lease.ttl
        stats.LEASES.renewed += 1  # etcd_debugging_lease_renewed_total
        return lease.ttl

    def expired(self, limit: int = 1000) -> list[int]:
        """Leases whose time is up, oldest first, at most limit of them."""
        if not self.primary:
            return []
        now = self.clock()
        due = sorted((lease.expiry, lease.id) for lease in self.leases.values() if lease.expiry <= now)
        return [lease_id for _, lease_id in due[:limit]]

    def remaining(self, lease_id: int) -> int:
        """Whole seconds left (truncated, as etcd reports them); the granted
        TTL when this member does not keep the clock."""
        lease = self.leases.get(lease_id)
        if lease is None:
            raise ErrLeaseNotFound()
        if lease.expiry == math.inf:
            return lease.remaining_ttl or lease.ttl
        return max(0, int(lease.expiry - self.clock()))

    def lookup(self, lease_id: int) -> Lease | None:
        return self.leases.get(lease_id)
