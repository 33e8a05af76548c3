"""The cluster's members as the server knows them.

This is etcd's membership store: the member list (id, name, peer and client
URLs, learner flag), the cluster id and the cluster version, persisted in the
backend's `members` and `cluster` buckets as etcd stores them (JSON by member
id in hex; the version under `clusterVersion`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Protocol

from petcd.proto import rpc_pb2
from petcd.raft import ConfChange, ConfChangeType
from petcd.server.errors import ServerError

MEMBERS_BUCKET = "members"


@dataclass(slots=True)
class Member:
    id: int
    name: str
    peer_urls: list[str]
    client_urls: list[str] = field(default_factory=list)
    is_learner: bool = False

    def to_pb(self) -> rpc_pb2.Member:
        return rpc_pb2.Member(
            ID=self.id,
            name=self.name,
            peerURLs=self.peer_urls,
            clientURLs=self.client_urls,
            isLearner=self.is_learner,
        )

    def to_json(self) -> bytes:
        doc: dict[str, object] = {"id": self.id, "peerURLs": self.peer_urls}
        if self.name:
            doc["name"] = self.name
        if self.client_urls:
            doc["clientURLs"] = self.client_urls
        if self.is_learner:
            doc["isLearner"] = True
        return json.dumps(doc, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> Member:
        doc = json.loads(raw)
        return cls(
            id=int(doc["id"]),
            name=str(doc.get("name", "")),
            peer_urls=list(doc.get("peerURLs", [])),
            client_urls=list(doc.get("clientURLs", [])),
            is_learner=bool(doc.get("isLearner", False)),
        )


@dataclass(slots=True)
class Membership:
    """Members by id, the local member's id, the cluster id and the cluster
    version (None until the first leader's entry setting it is applied)."""

    cluster_id: int
    local_id: int
    members: dict[int, Member] = field(default_factory=dict)
    removed: set[int] = field(default_factory=set)
    cluster_version: str | None = None

    def local(self) -> Member:
        return self.members[self.local_id]

    def voter_ids(self) -> list[int]:
        return sorted(m.id for m in self.members.values() if not m.is_learner)

    def to_pb_list(self) -> list[rpc_pb2.Member]:
        return [self.members[i].to_pb() for i in sorted(self.members)]

    def peers(self) -> dict[int, list[str]]:
        """Every other member's peer URLs."""
        return {m.id: list(m.peer_urls) for m in self.members.values() if m.id != self.local_id}

    def is_learner(self) -> bool:
        m = self.members.get(self.local_id)
        return m is not None and m.is_learner

    def with_peer_url(self, urls: list[str]) -> Member | None:
        for m in self.members.values():
            if set(m.peer_urls) & set(urls):
                return m
        return None


MEMBERS_REMOVED_BUCKET = "members_removed"


class MembershipError(ServerError):
    """A membership change etcd would refuse; str() is etcd's message."""


class ErrMemberNotFound(MembershipError):
    message = "etcdserver: member not found"


class ErrMemberIDExists(MembershipError):
    message = "etcdserver: member ID already exist"


class ErrPeerURLExists(MembershipError):
    message = "etcdserver: Peer URLs already exists"


class ErrMemberNotLearner(MembershipError):
    message = "etcdserver: can only promote a learner member"


class ErrLearnerNotReady(MembershipError):
    message = "etcdserver: can only promote a learner member which is in sync with leader"


class ErrTooManyLearners(MembershipError):
    message = "etcdserver: too many learner members in cluster"


class ErrNotEnoughStartedMembers(MembershipError):
    message = "etcdserver: re-configuration failed due to not enough started members"


class ErrBadURLs(MembershipError):
    message = "etcdserver: given member URLs are invalid"


# etcd 3.4 allows one learner at a time
MAX_LEARNERS = 1


class Buckets(Protocol):
    def put(self, bucket: str, key: bytes, value: bytes) -> None: ...
    def delete(self, bucket: str, key: bytes) -> None: ...


def member_key(member_id: int) -> bytes:
    return f"{member_id:x}".encode()


def apply_change(ms: Membership, cc: ConfChange, store: Buckets) -> Member | None:
    """Apply a committed conf change to the member list and persist it; the
    member added, updated, promoted or removed (None if nothing changed)."""
    t = cc.type
    mid = cc.node_id
    if t in (ConfChangeType.ConfChangeAddNode, ConfChangeType.ConfChangeAddLearnerNode):
        existing = ms.members.get(mid)
        if existing is not None:
            if t == ConfChangeType.ConfChangeAddNode and existing.is_learner:
                existing.is_learner = False  # a promotion
                store.put(MEMBERS_BUCKET, member_key(mid), existing.to_json())
                return existing
            return None  # a bootstrap entry for a member we already know
        if not cc.context:
            return None
        m = Member.from_json(cc.context)
        m.is_learner = t == ConfChangeType.ConfChangeAddLearnerNode
        ms.members[mid] = m
        store.put(MEMBERS_BUCKET, member_key(mid), m.to_json())
        return m
    if t == ConfChangeType.ConfChangeRemoveNode:
        gone = ms.members.pop(mid, None)
        ms.removed.add(mid)
        store.delete(MEMBERS_BUCKET, member_key(mid))
        store.put(MEMBERS_REMOVED_BUCKET, member_key(mid), b"removed")
        return gone
    if t == ConfChangeType.ConfChangeUpdateNode:
        updated = ms.members.get(mid)
        if updated is None or not cc.context:
            return None
        # the raft attributes (peer URLs and the learner flag) are replaced
        # as a whole, as etcd does
        attrs = Member.from_json(cc.context)
        updated.peer_urls = attrs.peer_urls
        updated.is_learner = attrs.is_learner
        store.put(MEMBERS_BUCKET, member_key(mid), updated.to_json())
        return updated
    return None
