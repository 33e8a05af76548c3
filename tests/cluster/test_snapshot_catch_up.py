"""A member that was down while the leader's log moved more than
CATCH_UP_ENTRIES past it catches up from a snapshot: the leader sends its
whole backend, the member stages it beside its own (in a worker thread,
before raft takes the snapshot), installs it by a rename, and serves the
same data as the others, with no staged file left behind."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from petcd.proto import rpc_pb2
from petcd.server.raft_storage import CATCH_UP_ENTRIES
from petcd.testing.harness import petcd_cluster, wait_for

PUTS = CATCH_UP_ENTRIES + 1500
VALUE = b"v" * 512


def test_a_member_far_behind_installs_the_leaders_staged_backend(tmp_path: Path) -> None:
    members = petcd_cluster(tmp_path, 3, extra=["--snapshot-count", "1000"])
    try:
        # a follower goes down (the leader's going would fail the writes in
        # flight to it), and the writes go to the leader itself
        ids = [m.maintenance().Status(rpc_pb2.StatusRequest(), timeout=30) for m in members]
        leader = next(m for m, st in zip(members, ids, strict=True) if st.leader == st.header.member_id)
        behind = next(m for m in members if m is not leader)
        behind.stop()
        kv = leader.kv()

        def put(i: int) -> None:
            kv.Put(rpc_pb2.PutRequest(key=b"k/%05d" % i, value=VALUE), timeout=60)

        with ThreadPoolExecutor(16) as pool:
            list(pool.map(put, range(PUTS)))
        want = kv.Range(rpc_pb2.RangeRequest(key=b"k/", range_end=b"k0", count_only=True), timeout=30)
        assert want.count == PUTS
        behind.start()
        kv2 = behind.kv()

        def caught_up() -> bool:
            got = kv2.Range(rpc_pb2.RangeRequest(key=b"k/%05d" % (PUTS - 1), serializable=True), timeout=5)
            return got.count == 1

        wait_for(caught_up, 120, "the member that was down to catch up")
        got = kv2.Range(rpc_pb2.RangeRequest(key=b"k/", range_end=b"k0", count_only=True, serializable=True),
                        timeout=30)
        assert got.count == PUTS
        log = behind.log_path.read_text()
        assert "installed the leader's backend" in log, "the member caught up from the log, not from a snapshot"
        snap_dir = behind.data_dir / "member" / "snap"
        assert not [p.name for p in snap_dir.iterdir() if ".incoming-" in p.name], "a staged backend was left"
        # and it goes on taking writes with the others
        kv2.Put(rpc_pb2.PutRequest(key=b"after", value=b"1"), timeout=30)
        wait_for(lambda: kv.Range(rpc_pb2.RangeRequest(key=b"after"), timeout=5).count == 1, 30, "the write")
    finally:
        for m in members:
            m.stop()
