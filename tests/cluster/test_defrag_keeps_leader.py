"""A defrag of a large backend does not cost the leader its leadership.

The members are given a large backend (PETCD_DEFRAG_DB_MB, 1024 by default)
written at the backend level while they are stopped (identical on every
member: same keys at the same revisions), then the leader is defragmented
over gRPC while a client keeps writing. Before the defrag ran off the event
loop, the copy and its fsync held the leader's loop for seconds, its
heartbeats stopped, and the followers elected a new leader.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import grpc

from petcd.proto import rpc_pb2
from petcd.testing.harness import Server, petcd_cluster, wait_for
from tests.cluster.helpers import leader, status
from tests.large_backend import fill_backend

DB_MB = int(os.environ.get("PETCD_DEFRAG_DB_MB", "1024"))


def test_defrag_of_a_large_db_keeps_the_leader(tmp_path: Path) -> None:
    members = petcd_cluster(tmp_path, 3, extra=["--election-timeout", "500"])
    try:
        _run(tmp_path, members)
    finally:
        for m in members:
            m.stop()


def _run(tmp_path: Path, members: list[Server]) -> None:
    lead = leader(members)
    lead.kv().Put(rpc_pb2.PutRequest(key=b"before", value=b"1"), timeout=10)

    def settled() -> bool:
        sts = [status(m) for m in members]
        return len({(s.header.revision, s.raftAppliedIndex) for s in sts}) == 1
    wait_for(settled, 60, "every member to apply the same entries")
    for m in members:
        assert m.stop() == 0
    started = time.monotonic()
    for m in members:
        fill_backend(m.data_dir / "member" / "snap" / "db", DB_MB)
    fill_seconds = time.monotonic() - started
    for m in members:
        m.launch()
    for m in members:
        m.wait_ready(timeout=120)
    lead = leader(members)
    terms = {m.endpoint: status(m).raftTerm for m in members}
    lead_id = status(lead).header.member_id
    db_size = status(lead).dbSize
    assert db_size >= DB_MB << 20

    stop = threading.Event()
    acks: list[float] = []  # when each put was acknowledged
    errors: list[BaseException] = []
    seen: list[tuple[str, int, int]] = []  # (member, leader, term) as polled

    def writer() -> None:
        kv = lead.kv()
        i = 0
        while not stop.is_set():
            try:
                kv.Put(rpc_pb2.PutRequest(key=b"during/%d" % i, value=b"x" * 100), timeout=10)
                acks.append(time.monotonic())
                i += 1
            except grpc.RpcError as exc:  # a put refused: recorded, the checks below say why
                errors.append(exc)
                i += 1
            time.sleep(0.02)

    def poller() -> None:
        stubs = [(m.endpoint, m.maintenance()) for m in members]
        while not stop.is_set():
            for name, stub in stubs:
                try:
                    st = stub.Status(rpc_pb2.StatusRequest(), timeout=10)
                except grpc.RpcError as exc:
                    errors.append(exc)
                    return
                seen.append((name, st.leader, st.raftTerm))
            time.sleep(0.05)

    threads = [threading.Thread(target=writer), threading.Thread(target=poller)]
    for t in threads:
        t.start()
    try:
        wait_for(lambda: len(acks) >= 5, 30, "puts to flow before the defrag")
        t0 = time.monotonic()
        lead.maintenance().Defragment(rpc_pb2.DefragmentRequest(), timeout=300)
        t1 = time.monotonic()
        # a few more puts after it, so the writer saw the swap too
        after = len(acks)
        wait_for(lambda: len(acks) >= after + 5, 30, "puts to flow after the defrag")
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=60)
    print(f"db {db_size >> 20} MiB (3 members filled in {fill_seconds:.1f}s): "
          f"defrag took {t1 - t0:.2f}s, {sum(t0 <= a <= t1 for a in acks)} puts acknowledged during it")

    # the leader never changed, on any member, and no election happened
    assert {lead for _, lead, _ in seen} == {lead_id}
    for m in members:
        assert status(m).raftTerm == terms[m.endpoint], f"{m.endpoint} saw a new term"
        assert {term for name, _, term in seen if name == m.endpoint} == {terms[m.endpoint]}
    # puts kept being acknowledged while the defrag ran: no gap as long as
    # an election timeout anywhere in it
    during = [t0, *[a for a in acks if t0 <= a <= t1], t1]
    assert len(during) > 2, "no put was acknowledged during the defrag"
    gap = max(b - a for a, b in zip(during, during[1:], strict=False))
    assert gap < 1.0, f"puts stalled for {gap:.2f}s during the defrag"
    assert not errors, errors
    # nothing lost: the big keys and the puts made during the defrag are there
    kv = lead.kv()
    got = kv.Range(rpc_pb2.RangeRequest(key=b"big/%05d" % (DB_MB - 1)), timeout=30)
    assert got.kvs[0].value[:4] == (DB_MB - 1).to_bytes(4, "big")
    n = kv.Range(rpc_pb2.RangeRequest(key=b"during/", range_end=b"during0", count_only=True), timeout=30).count
    assert n >= len(acks)
