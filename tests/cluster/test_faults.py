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
from pathlib import Path

import grpc
import pytest

from petcd.proto import rpc_pb2, rpc_pb2_grpc
from petcd.testing.harness import Server, petcd_cluster, wait_for
from petcd.testing.linearizability import Op, check
from tests.cluster.helpers import hash_kv_converges, leader
from tests.cluster.proxy import Proxy

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


class Watcher(threading.Thread):
    """Watches every workload key from the start, moving to another member
    (resuming after the last revision seen) whenever its stream breaks."""

    def __init__(self, members: list[Server], start_rev: int, stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.members, self.next_rev, self.stop = members, start_rev, stop
        self.events: list[tuple[int, str, bytes]] = []  # (revision, key, value)

    def run(self) -> None:
        i = 0
        while not self.stop.is_set():
            m = self.members[i % len(self.members)]
            i += 1
            ch = grpc.insecure_channel(m.endpoint)
            req = rpc_pb2.WatchRequest(create_request=rpc_pb2.WatchCreateRequest(
                key=b"a", range_end=b"d", start_revision=self.next_rev))
            call = rpc_pb2_grpc.WatchStub(ch).Watch(iter([req]), timeout=3)
            try:
                for resp in call:
                    for ev in resp.events:
                        self.events.append((ev.kv.mod_revision, ev.kv.key.decode(), ev.kv.value))
                        self.next_rev = ev.kv.mod_revision + 1
            except grpc.RpcError:
                pass  # broken or timed out: resume elsewhere
            finally:
                ch.close()


class Workload:
    """Six clients spread over the members, recording one history, and a
    watcher that must see every write exactly once, in order."""

    def __init__(self, members: list[Server]) -> None:
        self.history: list[Op] = []
        self.lock = threading.Lock()
        self.stop = threading.Event()
        start = members[0].kv().Range(rpc_pb2.RangeRequest(key=b"a"), timeout=30).header.revision + 1
        self.watcher = Watcher(members, start, threading.Event())
        self.watcher.start()
        self.clients = [Client(i, members[i % len(members)], self.stop, self.history, self.lock,
                               random.Random(SEED * 100 + i)) for i in range(6)]
        for c in self.clients:
            c.start()

    def finish_and_check(self, members: list[Server]) -> None:
        """Stop the clients, wait for the members to converge, and check the
        history: linearizable, and enough of it got through."""
        self.stop.set()
        for c in self.clients:
            c.join(timeout=30)
        for m in members:
            m.wait_ready()
        leader(members)
        hash_kv_converges(members)
        final = members[0].kv().Range(rpc_pb2.RangeRequest(key=b"a", range_end=b"d"), timeout=30).header.revision
        wait_for(lambda: self.watcher.next_rev > final, 60, "the watcher to see every write")
        self.watcher.stop.set()
        self.watcher.join(timeout=30)
        revs = [r for r, _, _ in self.watcher.events]
        assert revs == list(range(revs[0], revs[0] + len(revs))), "the watcher saw a gap or a duplicate"
        written = {op.value for op in self.history if op.kind in ("put", "cas")}
        assert all(v.decode() in written for _, _, v in self.watcher.events)
        done = [op for op in self.history if op.ret is not None]
        assert len(done) > 100, f"too little got through: {len(done)} operations"
        result = check(self.history, max_steps=2_000_000)  # a verdict or a CheckTimeout, never a hang
        assert result.ok, f"seed {SEED}: not linearizable on key {result.key}:\n{result.explanation}"


def test_history_stays_linearizable_through_leader_kills_and_pauses(cluster: list[Server]) -> None:
    rng = random.Random(SEED)
    work = Workload(cluster)
    deadline = time.monotonic() + SECONDS
    try:
        while time.monotonic() < deadline:
            time.sleep(rng.uniform(0.5, 1.5))
            lead = leader(cluster)
            c = rng.random()
            if c < 0.2:  # a leadership transfer under load
                target = rng.choice([m for m in cluster if m is not lead])
                tid = target.maintenance().Status(rpc_pb2.StatusRequest(), timeout=10).header.member_id
                try:
                    lead.maintenance().MoveLeader(rpc_pb2.MoveLeaderRequest(targetID=tid), timeout=10)
                except grpc.RpcError:
                    pass  # the leader changed meanwhile
            elif c < 0.6:
                victim = lead if rng.random() < 0.6 else rng.choice([m for m in cluster if m is not lead])
                victim.kill()
                time.sleep(rng.uniform(0.5, 2.0))
                victim.launch()
            else:
                follower = rng.choice([m for m in cluster if m is not lead])
                assert follower.proc is not None
                follower.proc.send_signal(signal.SIGSTOP)
                time.sleep(rng.uniform(0.5, 2.0))
                follower.proc.send_signal(signal.SIGCONT)
    finally:
        work.finish_and_check(cluster)


def test_history_stays_linearizable_through_partitions(tmp_path: Path) -> None:
    rng = random.Random(SEED)
    proxies: list[Proxy] = []

    def behind_proxy(port: int) -> str:
        proxies.append(Proxy(port))
        return proxies[-1].url

    members = petcd_cluster(tmp_path, 3, advertise=behind_proxy)
    try:
        work = Workload(members)
        deadline = time.monotonic() + SECONDS
        try:
            while time.monotonic() < deadline:
                time.sleep(rng.uniform(0.5, 1.5))
                lead = leader(members)
                # cut off the leader (half the time) or a follower from what its peers send
                victim = lead if rng.random() < 0.5 else rng.choice([m for m in members if m is not lead])
                proxy = proxies[members.index(victim)]
                proxy.block()
                time.sleep(rng.uniform(1.0, 3.0))
                proxy.heal()
        finally:
            work.finish_and_check(members)
    finally:
        for m in members:
            m.stop()
        for p in proxies:
            p.close()
