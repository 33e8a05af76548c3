"""Rule B of issue 9: a committed entry the applier cannot decode or apply
never stops the member; it is applied as an error result (nothing changes),
logged at error level with the entry's index, and the client waiting on it
gets an error. An in-process member, so the test can be the proposer."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from petcd.mvcc.kvstore import TxnWrite
from petcd.proto import kv_pb2, raft_internal_pb2, rpc_pb2
from petcd.server.apply import ErrUnappliable
from petcd.server.etcd_server import EtcdServer
from petcd.testing.harness import wait_for
from tests.server.conftest import Member, member_config, start_member

pytestmark = pytest.mark.timeout(300)


@pytest.fixture
def member(tmp_path: Path) -> Iterator[Member]:
    m = start_member(member_config(tmp_path / "default.petcd"))
    yield m
    m.stop()


def on_loop(m: Member, coro: Any) -> Any:
    return asyncio.run_coroutine_threadsafe(coro, m.loop).result(60)


async def _propose_raw(s: EtcdServer, data_without_header: bytes) -> BaseException | object:
    """Propose bytes as this member's own request and wait for its result,
    as raft_request does, but with no check on the way in."""
    req_id = s.ids.next()
    header = raft_internal_pb2.InternalRaftRequest(header=raft_internal_pb2.RequestHeader(ID=req_id))
    fut = s.wait.register(req_id)
    s.node.propose(data_without_header + header.SerializeToString())
    s.node.notify()
    try:
        return await asyncio.wait_for(fut, 30)
    except Exception as exc:  # the applier's answer
        return exc


def test_an_undecodable_request_fails_its_waiter_and_changes_nothing(
        member: Member, caplog: pytest.LogCaptureFixture) -> None:
    s = member.etcd.server
    member.kv.Put(rpc_pb2.PutRequest(key=b"k", value=b"v"), timeout=30)
    rev = s.kv.rev
    with caplog.at_level(logging.ERROR, logger="petcd.server"):
        got = on_loop(member, _propose_raw(s, b"\x32\x04\xff\xff\xff\xff"))  # a TxnRequest that does not decode
    assert isinstance(got, ErrUnappliable)
    assert s.kv.rev == rev and s.node.failed is None
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert any(f"raft entry {s.applied_index}" in r.getMessage() for r in errors), [r.getMessage() for r in errors]
    assert member.kv.Put(rpc_pb2.PutRequest(key=b"k", value=b"still"), timeout=30).header.revision == rev + 1


def test_a_failure_nobody_foresaw_is_an_error_result_not_a_dead_member(
        member: Member, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    """The applier's safety net: a defect inside apply (here a fault injected
    into the store's put) answers the client with INTERNAL and is logged;
    the member goes on serving."""
    s = member.etcd.server
    rev = s.kv.rev
    real_put = TxnWrite.put

    def broken_put(w: TxnWrite, key: bytes, value: bytes, lease: int, want_prev: bool = True) -> kv_pb2.KeyValue | None:
        if key == b"boom":
            raise RecursionError("an applier defect")
        return real_put(w, key, value, lease, want_prev)

    monkeypatch.setattr(TxnWrite, "put", broken_put)
    with caplog.at_level(logging.ERROR, logger="petcd.server.apply"), pytest.raises(grpc.RpcError) as err:
        member.kv.Put(rpc_pb2.PutRequest(key=b"boom", value=b"v"), timeout=30)
    assert (err.value.code(), err.value.details()) == (
        grpc.StatusCode.INTERNAL, "etcdserver: request could not be applied")
    assert any("applying raft entry" in r.getMessage() and "RecursionError" in r.getMessage()
               for r in caplog.records)
    assert s.kv.rev == rev and s.node.failed is None
    assert member.kv.Put(rpc_pb2.PutRequest(key=b"fine", value=b"v"), timeout=30).header.revision == rev + 1


def test_a_storage_failure_is_not_swallowed_as_a_client_error(member: Member, monkeypatch: pytest.MonkeyPatch) -> None:
    """A failure of this member's own disk is not the entry's: applying the
    entry as an error here alone would fork the state, so it stops the
    member's writes instead (the node loop fails)."""
    from petcd.storage.errors import BackendError

    s = member.etcd.server
    real_put = TxnWrite.put

    def failing_disk(w: TxnWrite, key: bytes, value: bytes, lease: int, want_prev: bool = True) -> kv_pb2.KeyValue | None:
        if key == b"disk":
            raise BackendError("backend: write failed: EIO")
        return real_put(w, key, value, lease, want_prev)

    monkeypatch.setattr(TxnWrite, "put", failing_disk)
    with pytest.raises(grpc.RpcError):  # no answer comes: the member stopped applying
        member.kv.Put(rpc_pb2.PutRequest(key=b"disk", value=b"v"), timeout=2)
    wait_for(lambda: s.node.failed is not None, 30, "the node loop to stop")
    assert isinstance(s.node.failed, BackendError)
