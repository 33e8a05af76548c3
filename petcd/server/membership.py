"""The cluster's members as the server knows them.

This is etcd's membership store: the member list (id, name, peer and client
URLs, learner flag) and the cluster id, persisted in the backend's `members`
and `cluster` buckets as etcd stores them (JSON by member id in hex).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from petcd.proto import rpc_pb2

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
    """Members by id, the local member's id and the cluster id."""

    cluster_id: int
    local_id: int
    members: dict[int, Member] = field(default_factory=dict)

    def local(self) -> Member:
        return self.members[self.local_id]

    def voter_ids(self) -> list[int]:
        return sorted(m.id for m in self.members.values() if not m.is_learner)

    def to_pb_list(self) -> list[rpc_pb2.Member]:
        return [self.members[i].to_pb() for i in sorted(self.members)]
