"""The applier: carries out one committed InternalRaftRequest against the
state machine (mvcc, alarms) and returns the response or the error.

Every member applies the same entries in the same order, so everything here
is deterministic: no clocks, no randomness, no reads of local-only state
beyond what the log itself built.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from petcd.lease.lessor import Lessor
from petcd.mvcc.kvstore import Compaction, KVStore
from petcd.proto import raft_internal_pb2, rpc_pb2
from petcd.server import txn, txn_ops
from petcd.server.alarms import ALARM_BUCKET, AlarmStore
from petcd.server.errors import ErrNoSpace, ErrNotSupported
from petcd.server.membership import MEMBERS_BUCKET, Member, Membership, member_key
from petcd.storage.backend import Backend

log = logging.getLogger("petcd.server.apply")


@dataclass(slots=True)
class CompactResult:
    """A compaction's response, with the backend job the server finishes."""

    response: rpc_pb2.CompactionResponse
    job: Compaction | None


class Applier:
    def __init__(
        self, kv: KVStore, backend: Backend, alarms: AlarmStore, lessor: Lessor, membership: Membership
    ) -> None:
        self.kv = kv
        self.backend = backend
        self.alarms = alarms
        self.lessor = lessor
        self.membership = membership

    def apply(self, r: raft_internal_pb2.InternalRaftRequest) -> Any:
        """The response message (or CompactResult), or the exception to
        hand back to the caller. Never raises for a client's error."""
        try:
            return self._dispatch(r)
        except Exception as exc:  # the request's own failure, for its caller
            return exc

    def _dispatch(self, r: raft_internal_pb2.InternalRaftRequest) -> Any:
        which = _which(r)
        if which == "put":
            self._check_space()
            return txn.put(self.kv, r.put, self.lessor.exists)
        if which == "delete_range":
            return txn.delete_range(self.kv, r.delete_range)
        if which == "txn":
            if txn_ops.has_puts(r.txn):  # deletes free space, so etcd lets them through
                self._check_space()
            return txn.txn(self.kv, r.txn, self.lessor.exists)
        if which == "range":
            return txn.range_(self.kv, r.range)
        if which == "compaction":
            job = self.kv.compact(r.compaction.revision)
            resp = rpc_pb2.CompactionResponse()
            resp.header.revision = self.kv.rev
            return CompactResult(resp, job)
        if which == "alarm":
            return self._alarm(r.alarm)
        if which == "lease_grant":
            self._check_space()
            lease = self.lessor.grant(r.lease_grant.ID, r.lease_grant.TTL)
            grant = rpc_pb2.LeaseGrantResponse(ID=lease.id, TTL=lease.ttl)
            grant.header.revision = self.kv.rev
            return grant
        if which == "lease_revoke":
            return self._lease_revoke(r.lease_revoke.ID)
        if which == "cluster_member_attr_set":
            return self._member_attr_set(r.cluster_member_attr_set)
        if which == "lease_checkpoint":
            for cp in r.lease_checkpoint.checkpoints:
                self.lessor.checkpoint(cp.ID, cp.remaining_TTL)
            return rpc_pb2.LeaseCheckpointResponse()
        raise ErrNotSupported(f"petcd: {which or 'empty request'} is not supported yet")

    def _member_attr_set(self, r: raft_internal_pb2.ClusterMemberAttrSetRequest) -> Member | None:
        m = self.membership.members.get(r.member_ID)
        if m is None:  # removed meanwhile
            return None
        m.name = r.member_attributes.name
        m.client_urls = list(r.member_attributes.client_urls)
        self.backend.put(MEMBERS_BUCKET, member_key(m.id), m.to_json())
        return m

    def _check_space(self) -> None:
        if self.alarms.is_active(rpc_pb2.NOSPACE):
            raise ErrNoSpace()

    def _lease_revoke(self, lease_id: int) -> rpc_pb2.LeaseRevokeResponse:
        keys = self.lessor.revoke(lease_id)
        if keys:  # all of a lease's keys go in one revision
            txn.delete_keys(self.kv, keys)
        resp = rpc_pb2.LeaseRevokeResponse()
        resp.header.revision = self.kv.rev
        return resp

    def _alarm(self, a: rpc_pb2.AlarmRequest) -> rpc_pb2.AlarmResponse:
        resp = rpc_pb2.AlarmResponse()
        resp.header.revision = self.kv.rev
        if a.action == rpc_pb2.AlarmRequest.GET:
            resp.alarms.extend(self.alarms.list(a.alarm))
        elif a.action == rpc_pb2.AlarmRequest.ACTIVATE:
            if a.alarm == rpc_pb2.NONE:
                return resp
            if self.alarms.activate(a.memberID, a.alarm):
                self.backend.put(ALARM_BUCKET, AlarmStore.key(a.memberID, a.alarm), b"")
            resp.alarms.append(rpc_pb2.AlarmMember(memberID=a.memberID, alarm=a.alarm))
        elif a.action == rpc_pb2.AlarmRequest.DEACTIVATE:
            if self.alarms.deactivate(a.memberID, a.alarm):
                self.backend.delete(ALARM_BUCKET, AlarmStore.key(a.memberID, a.alarm))
                resp.alarms.append(rpc_pb2.AlarmMember(memberID=a.memberID, alarm=a.alarm))
        return resp


_REQUEST_FIELDS = (
    "put",
    "range",
    "delete_range",
    "txn",
    "compaction",
    "alarm",
    "lease_grant",
    "lease_revoke",
    "lease_checkpoint",
    "cluster_member_attr_set",
)


def _which(r: raft_internal_pb2.InternalRaftRequest) -> str:
    for name in _REQUEST_FIELDS:
        if r.HasField(name):
            return name
    return ""
