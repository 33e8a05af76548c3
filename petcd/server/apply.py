"""The applier: carries out one committed InternalRaftRequest against the
state machine (mvcc, alarms) and returns the response or the error.

Every member applies the same entries in the same order, so everything here
is deterministic: no clocks, no randomness, no reads of local-only state
beyond what the log itself built.

A committed entry never stops the member because of what it holds (issue 9):
an entry that does not decode, or whose request fails in a way the applier
did not foresee, is applied as an error result: every member logs it at
error level with its index and answers its waiting client with
ErrUnappliable, and WAL replay does the same again. An entry that does not
decode changes nothing; a defect that strikes in the middle of a write
leaves what was written so far, the same on every member (the applier is
deterministic), so the members still agree. Only failures of this member's
own storage (StorageError, OSError, MemoryError) propagate: they are not
the entry's, and applying the entry as an error on one member alone would
fork the state.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from google.protobuf.message import DecodeError

from petcd.auth import checks as auth_checks
from petcd.auth.errors import AuthError
from petcd.auth.store import AUTH_REQUESTS, AuthStore
from petcd.auth.tokens import AuthInfo
from petcd.lease.lessor import LeaseError, Lessor
from petcd.mvcc.errors import MvccError
from petcd.mvcc.kvstore import Compaction, KVStore
from petcd.proto import raft_internal_pb2, rpc_pb2
from petcd.raft import ConfChange, ConfChangeType
from petcd.server import txn, txn_ops
from petcd.server.alarms import ALARM_BUCKET, AlarmStore
from petcd.server.decoding import field_bytes, parse_deep
from petcd.server.errors import ErrNoSpace, ErrNotSupported, ServerError
from petcd.server.membership import MEMBERS_BUCKET, Member, Membership, MembershipError, member_key
from petcd.server.urls import PEER_SCHEMES, parse_url
from petcd.storage.backend import Backend
from petcd.storage.errors import StorageError
from petcd.storage.etcd_format import CLUSTER_BUCKET, CLUSTER_VERSION_KEY

log = logging.getLogger("petcd.server.apply")


# Failures of this member, not of the entry: they must stop the member
# rather than be applied as an error result on this member alone.
LOCAL_FAILURES: tuple[type[BaseException], ...] = (StorageError, OSError, MemoryError)

# InternalRaftRequest's header field (a RequestHeader holding the request id).
_HEADER_FIELD = raft_internal_pb2.InternalRaftRequest.DESCRIPTOR.fields_by_name["header"].number


class ErrUnappliable(ServerError):
    """A committed request that could not be decoded or applied; every
    member answered it the same way."""

    message = "etcdserver: request could not be applied"


def conf_change_problem(data: bytes) -> tuple[int, str | None]:
    """(the change's id or 0, why it cannot be applied or None) for a
    committed configuration change entry. A change that decodes but names a
    member whose record does not decode, or whose peer URLs the transport
    cannot dial, would fail every member that applies it and then every
    start (the transport is given each member's URLs), so it is applied as
    a no-op instead. etcd's applier refuses a member whose id is not the
    change's node id the same way."""
    try:
        cc = ConfChange.from_bytes(data)
    except Exception as exc:  # DecodeError, or ValueError for an unknown change type
        return 0, f"it does not decode ({exc})"
    if cc.node_id == 0 or not cc.context or cc.type == ConfChangeType.ConfChangeRemoveNode:
        return cc.id, None
    try:
        m = Member.from_json(cc.context)
        for url in m.peer_urls:
            parse_url(url, PEER_SCHEMES)
    except Exception as exc:  # JSON, missing fields, types, BadURLError
        return cc.id, f"its member record is unusable ({exc!r})"
    if m.id != cc.node_id:
        return cc.id, f"its member record is for member {m.id:x}, not {cc.node_id:x}"
    return cc.id, None


def decode_request(data: bytes) -> raft_internal_pb2.InternalRaftRequest:
    """A committed entry's request, nested as deep as anything the api lets
    through (txn_ops.MAX_MESSAGE_DEPTH); DecodeError otherwise."""
    return parse_deep(raft_internal_pb2.InternalRaftRequest, data, txn_ops.MAX_MESSAGE_DEPTH)


def request_id(data: bytes) -> int:
    """The request id in an entry that does not decode as a whole, when its
    header still does; 0 when not even that."""
    try:
        raw = field_bytes(data, _HEADER_FIELD)
        if raw is None:
            return 0
        header = raft_internal_pb2.RequestHeader()
        header.ParseFromString(raw)
        return header.ID
    except DecodeError:
        return 0


# What a request's apply answers its caller with.
Response = (
    rpc_pb2.RangeResponse
    | rpc_pb2.PutResponse
    | rpc_pb2.DeleteRangeResponse
    | rpc_pb2.TxnResponse
    | rpc_pb2.CompactionResponse
    | rpc_pb2.AlarmResponse
    | rpc_pb2.LeaseGrantResponse
    | rpc_pb2.LeaseRevokeResponse
    | rpc_pb2.LeaseCheckpointResponse
    | Member
    | None
)


@dataclass(slots=True)
class Applied:
    """What applying one request gave: its response, or the error its
    caller gets instead (then ``response`` is None); and, for a compaction,
    the job that removes the old revisions, which the server runs on."""

    response: Response = None
    error: Exception | None = None
    compaction: Compaction | None = None


class Applier:
    def __init__(
        self, kv: KVStore, backend: Backend, alarms: AlarmStore, lessor: Lessor, membership: Membership,
        auth: AuthStore,
    ) -> None:
        self.kv = kv
        self.backend = backend
        self.alarms = alarms
        self.lessor = lessor
        self.membership = membership
        self.auth = auth

    def apply(self, r: raft_internal_pb2.InternalRaftRequest, index: int = 0) -> Applied:
        """The request's response, or the error to hand back to its caller.
        Raises only LOCAL_FAILURES; a failure nobody foresaw is logged (with
        the entry's index) and answered with ErrUnappliable."""
        try:
            if r.HasField("compaction"):
                return self._compact(r.compaction)
            return Applied(self._dispatch(r, index))
        except LOCAL_FAILURES:
            raise
        except _EXPECTED as exc:  # the request's own failure, for its caller
            return Applied(error=exc)
        except Exception as exc:  # a poison pill: the same on every member
            log.error("applying raft entry %d failed, applied as an error (nothing changed): %r",
                      index, exc, exc_info=exc)
            return Applied(error=ErrUnappliable())

    def _lease_keys(self, lease_id: int) -> list[bytes]:
        lease = self.lessor.lookup(lease_id)
        return sorted(lease.keys) if lease is not None else []

    def _check_auth(self, which: str, r: raft_internal_pb2.InternalRaftRequest, info: AuthInfo) -> None:
        """etcd's auth applier: a write runs as the user in the entry's
        header, checked against the auth store as of this entry."""
        if which == "put":
            auth_checks.check_put(self.auth, info, r.put, self._lease_keys)
        elif which == "delete_range":
            auth_checks.check_delete_range(self.auth, info, r.delete_range)
        elif which == "txn":
            auth_checks.check_txn(self.auth, info, r.txn)
        elif which == "range":
            auth_checks.check_range(self.auth, info, r.range)
        elif which == "lease_revoke":
            auth_checks.check_lease_revoke(self.auth, info, r.lease_revoke.ID, self._lease_keys)

    def _compact(self, r: rpc_pb2.CompactionRequest) -> Applied:
        job = self.kv.compact(r.revision)
        resp = rpc_pb2.CompactionResponse()
        resp.header.revision = self.kv.rev
        return Applied(resp, compaction=job)

    def _dispatch(self, r: raft_internal_pb2.InternalRaftRequest, index: int = 0) -> Response:
        which = _which(r)
        info = AuthInfo(r.header.username, r.header.auth_revision)
        if which in AUTH_REQUESTS:
            return self.auth.apply(which, getattr(r, which), info, index)
        if self.auth.enabled:
            self._check_auth(which, r, info)
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
        if which == "cluster_version_set":
            self._cluster_version_set(r.cluster_version_set.ver)
            return None
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

    def _cluster_version_set(self, ver: str) -> None:
        if self.membership.cluster_version is None:
            log.info("set the initial cluster version to %s", ver.rsplit(".", 1)[0])
        self.membership.cluster_version = ver
        self.backend.put(CLUSTER_BUCKET, CLUSTER_VERSION_KEY, ver.encode())

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


# The errors a request may end in by etcd's rules: ours, each with etcd's
# message. Anything else out of the applier is a defect.
_EXPECTED: tuple[type[Exception], ...] = (ServerError, LeaseError, MvccError, MembershipError, AuthError)

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
    "cluster_version_set",
    *sorted(AUTH_REQUESTS),
)


def _which(r: raft_internal_pb2.InternalRaftRequest) -> str:
    for name in _REQUEST_FIELDS:
        if r.HasField(name):
            return name
    return ""
