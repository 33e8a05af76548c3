"""Differential test: one seeded random sequence of KV operations applied to
petcd and to real etcd; every response must match field by field (except
cluster_id, member_id and raft_term), errors by code and message."""

from __future__ import annotations

import os
import random
from collections.abc import Callable
from typing import Any

import grpc
import pytest
from google.protobuf import text_format
from google.protobuf.message import Message

from petcd.proto import rpc_pb2
from petcd.testing.harness import Server

pytestmark = pytest.mark.timeout(900)

OPS = int(os.environ.get("PETCD_DIFF_OPS", "2000"))
SEED = int(os.environ.get("PETCD_DIFF_SEED", "20261124"))
KEYS = [b"a", b"ab", b"abc", b"b", b"b/1", b"b/2", b"b/3", b"c", b"d", b"\x00k", b"zz"]


class Gen:
    def __init__(self, rng: random.Random) -> None:
        self.r = rng
        self.rev_hint = 1

    def key(self) -> bytes:
        return self.r.choice(KEYS)

    def value(self) -> bytes:
        return self.r.choice([b"", b"v", b"value", b"x" * self.r.randint(1, 40), b"\xff\x00"])

    def range_end(self, key: bytes) -> bytes:
        c = self.r.random()
        if c < 0.35:
            return b""
        if c < 0.55:
            return b"\0"
        if c < 0.8:
            return _prefix_end(key)
        return self.key()

    def range_req(self) -> rpc_pb2.RangeRequest:
        r = self.r
        key = self.key()
        req = rpc_pb2.RangeRequest(key=key, range_end=self.range_end(key))
        if r.random() < 0.3:
            req.limit = r.randint(1, 4)
        if r.random() < 0.3:
            req.sort_order = r.choice([0, 1, 2])
            req.sort_target = r.choice([0, 1, 2, 3, 4])
        if r.random() < 0.15:
            req.revision = r.randint(0, self.rev_hint + 2)
        req.keys_only = r.random() < 0.15
        req.count_only = r.random() < 0.1
        if r.random() < 0.1:
            req.min_mod_revision = r.randint(0, self.rev_hint)
        if r.random() < 0.1:
            req.max_mod_revision = r.randint(0, self.rev_hint)
        if r.random() < 0.1:
            req.min_create_revision = r.randint(0, self.rev_hint)
        if r.random() < 0.1:
            req.max_create_revision = r.randint(0, self.rev_hint)
        req.serializable = r.random() < 0.3
        return req

    def put_req(self) -> rpc_pb2.PutRequest:
        return rpc_pb2.PutRequest(key=self.key(), value=self.value(), prev_kv=self.r.random() < 0.5,
                                  ignore_value=self.r.random() < 0.05)

    def delete_req(self) -> rpc_pb2.DeleteRangeRequest:
        key = self.key()
        return rpc_pb2.DeleteRangeRequest(key=key, range_end=self.range_end(key), prev_kv=self.r.random() < 0.5)

    def compare(self) -> rpc_pb2.Compare:
        r = self.r
        c = rpc_pb2.Compare(key=self.key(), result=r.randint(0, 3), target=r.randint(0, 4))
        if r.random() < 0.2:
            c.range_end = self.range_end(c.key)
        t = c.target
        if t == rpc_pb2.Compare.VERSION:
            c.version = r.randint(0, 4)
        elif t == rpc_pb2.Compare.CREATE:
            c.create_revision = r.randint(0, self.rev_hint)
        elif t == rpc_pb2.Compare.MOD:
            c.mod_revision = r.randint(0, self.rev_hint)
        elif t == rpc_pb2.Compare.VALUE:
            c.value = self.value()
        else:
            c.lease = 0
        return c

    def txn_req(self, depth: int = 0) -> rpc_pb2.TxnRequest:
        r = self.r
        t = rpc_pb2.TxnRequest(compare=[self.compare() for _ in range(r.randint(0, 3))])
        used: set[bytes] = set()
        for branch in (t.success, t.failure):
            for _ in range(r.randint(0, 3)):
                c = r.random()
                if c < 0.35:
                    branch.append(rpc_pb2.RequestOp(request_range=self.range_req()))
                elif c < 0.65:
                    p = self.put_req()
                    p.ignore_value = False
                    if p.key in used:
                        continue
                    used.add(p.key)
                    branch.append(rpc_pb2.RequestOp(request_put=p))
                elif c < 0.85 or depth >= 2:
                    d = rpc_pb2.DeleteRangeRequest(key=self.key(), prev_kv=r.random() < 0.5)
                    if d.key in used:
                        continue
                    used.add(d.key)
                    branch.append(rpc_pb2.RequestOp(request_delete_range=d))
                else:
                    branch.append(rpc_pb2.RequestOp(request_txn=self.txn_req(depth + 1)))
            used = set()
        return t


def _prefix_end(key: bytes) -> bytes:
    b = bytearray(key)
    for i in range(len(b) - 1, -1, -1):
        if b[i] < 0xFF:
            b[i] += 1
            return bytes(b[: i + 1])
    return b"\0"


def _strip(msg: Message) -> None:
    """Clear the fields that legitimately differ between two clusters."""
    for fd, value in msg.ListFields():
        if fd.name in ("cluster_id", "member_id", "raft_term"):
            msg.ClearField(fd.name)
        elif fd.message_type is not None:
            if fd.is_repeated:
                for v in value:
                    _strip(v)
            else:
                _strip(value)


def _call(fn: Callable[..., Any], req: Message) -> str:
    try:
        resp = fn(req, timeout=30)
    except grpc.RpcError as exc:
        return f"ERROR {exc.code().name}: {exc.details()}"
    _strip(resp)
    return text_format.MessageToString(resp, as_one_line=True)


def test_random_kv_operations_match_etcd(petcd: Server, etcd: Server) -> None:
    rng = random.Random(SEED)
    gen = Gen(rng)
    stubs = {name: s.kv() for name, s in (("petcd", petcd), ("etcd", etcd))}
    compacted = 0
    for n in range(OPS):
        c = rng.random()
        if c < 0.3:
            method, req = "Put", gen.put_req()
        elif c < 0.6:
            method, req = "Range", gen.range_req()
        elif c < 0.72:
            method, req = "DeleteRange", gen.delete_req()
        elif c < 0.98:
            method, req = "Txn", gen.txn_req()
        else:
            compacted = rng.randint(max(1, compacted - 1), gen.rev_hint + 1)
            method, req = "Compact", rpc_pb2.CompactionRequest(revision=compacted, physical=rng.random() < 0.5)
        got = {name: _call(getattr(stub, method), req) for name, stub in stubs.items()}
        assert got["petcd"] == got["etcd"], (
            f"seed {SEED}, operation #{n}: {method} {text_format.MessageToString(req, as_one_line=True)}\n"
            f"  petcd: {got['petcd']}\n  etcd:  {got['etcd']}"
        )
        head = stubs["etcd"].Range(rpc_pb2.RangeRequest(key=b"\0", count_only=True, serializable=True), timeout=30)
        gen.rev_hint = head.header.revision
