"""Faults under load: concurrent clients do puts, linearizable gets and
compare-and-set on a few keys through every member while the leader is
killed and restarted and a follower is paused; the recorded history must be
linearizable, no acknowledged write lost, and the members must converge."""

from __future__ import annotations

import os
import random
import signal
import threading
import time

import grpc
import pytest

from petcd.proto import rpc_pb2, rpc_pb2_grpc
from petcd.testing.linearizability import Op, check
from tests.cluster.helpers import hash_kv_converges, leader
from tests.harness import Server

pytestmark = pytest.mark.timeout(900)

KEYS = ["a", "b", "c"]
SEED = int(os.environ.get("PETCD_FAULT_SEED", "7"))
SECONDS = float(os.environ.get("PETCD_FAULT_SECONDS", "12"))


class Client(threading.Thread):
    def __init__(self, cid: int, member: Server, stop: threading.Event, history: list[Op],
                 lock: threading.Lock, rng: random.Random) -> None:
        super().__init__(daemon=True)
        self.cid, self.member, self.stop, self.history, self.lock, self.rng = cid, member, stop, history, lock, rng

    def run(self) -> None:
        ch = grpc.insecure_channel(self.member.endpoint)
        kv = rpc_pb2_grpc.KVStub(ch)
        n = 0
        while not self.stop.is_set():
            n += 1
            key = self.rng.choice(KEYS)
            kind = self.rng.choice(["put", "get", "cas"])
            value = f"{self.cid}-{n}"
            expected = None
            call = time.monotonic()
            try:
                if kind == "put":
                    kv.Put(rpc_pb2.PutRequest(key=key.encode(), value=value.encode()), timeout=3)
                    output: object = None
                elif kind == "get":
                    r = kv.Range(rpc_pb2.RangeRequest(key=key.encode()), timeout=3)
                    output = r.kvs[0].value.decode() if r.kvs else None
                else:
                    with self.lock:
                        seen = [op.value for op in self.history if op.key == key and op.kind != "get"]
                    expected = self.rng.choice(seen[-3:]) if seen and self.rng.random() < 0.8 else None
                    cmp = (rpc_pb2.Compare(key=key.encode(), target=rpc_pb2.Compare.VALUE,
                                           result=rpc_pb2.Compare.EQUAL, value=expected.encode())
                           if expected is not None else
                           rpc_pb2.Compare(key=key.encode(), target=rpc_pb2.Compare.VERSION,
                                           result=rpc_pb2.Compare.EQUAL, version=0))
                    r2 = kv.Txn(rpc_pb2.TxnRequest(compare=[cmp], success=[rpc_pb2.RequestOp(
                        request_put=rpc_pb2.PutRequest(key=key.encode(), value=value.encode()))]), timeout=3)
                    output = r2.succeeded
                ret: float | None = time.monotonic()
            except grpc.RpcError:
                if kind == "get":
                    continue  # a failed read constrains nothing
                ret, output = None, None  # the write may or may not have happened
                time.sleep(0.05)
            with self.lock:
                self.history.append(Op(client=self.cid, kind=kind, key=key, call=call, ret=ret, value=value
                                       if kind != "get" else None, expected=expected, output=output))
        ch.close()


def test_history_stays_linearizable_through_leader_kills_and_pauses(cluster: list[Server]) -> None:
    rng = random.Random(SEED)
    history: list[Op] = []
    lock = threading.Lock()
    stop = threading.Event()
    clients = [Client(i, cluster[i % 3], stop, history, lock, random.Random(SEED * 100 + i)) for i in range(6)]
    for c in clients:
        c.start()
    deadline = time.monotonic() + SECONDS
    try:
        while time.monotonic() < deadline:
            time.sleep(rng.uniform(0.5, 1.5))
            lead = leader(cluster)
            if rng.random() < 0.6:
                lead.kill()
                time.sleep(rng.uniform(0.5, 2.0))
                lead.launch()
            else:
                follower = rng.choice([m for m in cluster if m is not lead])
                assert follower.proc is not None
                follower.proc.send_signal(signal.SIGSTOP)
                time.sleep(rng.uniform(0.5, 2.0))
                follower.proc.send_signal(signal.SIGCONT)
    finally:
        stop.set()
        for c in clients:
            c.join(timeout=30)
    for m in cluster:
        m.wait_ready()
    leader(cluster)
    hash_kv_converges(cluster)
    done = [op for op in history if op.ret is not None]
    assert len(done) > 100, f"too little got through: {len(done)} operations"
    result = check(history)
    assert result.ok, f"seed {SEED}: not linearizable on key {result.key}:\n{result.explanation}"
