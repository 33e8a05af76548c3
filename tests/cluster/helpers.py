"""Small helpers for cluster tests."""

from __future__ import annotations

from petcd.proto import rpc_pb2
from petcd.testing.harness import Server, wait_for


def status(m: Server) -> rpc_pb2.StatusResponse:
    resp: rpc_pb2.StatusResponse = m.maintenance().Status(rpc_pb2.StatusRequest(), timeout=10)
    return resp


def leader(members: list[Server], timeout: float = 60) -> Server:
    """The member every live member agrees leads."""

    def agreed() -> Server | None:
        live = [m for m in members if m.proc is not None and m.proc.poll() is None]
        leads = {status(m).leader for m in live}
        if len(leads) != 1 or 0 in leads:
            return None
        lead = leads.pop()
        return next((m for m in live if status(m).header.member_id == lead), None)

    return wait_for(agreed, timeout, "the live members to agree on a leader")


def hash_kv_converges(members: list[Server], timeout: float = 60) -> None:
    """Every live member has the same HashKV at the same revision."""

    def same() -> bool:
        live = [m for m in members if m.proc is not None and m.proc.poll() is None]
        revs = {status(m).header.revision for m in live}
        if len(revs) != 1:
            return False
        rev = revs.pop()
        hashes = {m.maintenance().HashKV(rpc_pb2.HashKVRequest(revision=rev), timeout=10).hash for m in live}
        return len(hashes) == 1

    wait_for(same, timeout, "the members to converge")
