"""A WAL that lost its tail while the backend kept what was applied.

A file system that fails under the member (an aborted ext4 journal, a
repair by e2fsck) can leave the WAL ending before the backend's consistent
index. The member must then restart from the backend and take writes: before
the fix, raft handed out indexes the backend already held, the applier
skipped them as applied, and every write after the restart ended in
"request timed out" (the disk-fault test met this on a CI machine).

The lost tail is made by zeroing the WAL from a block boundary on: what a
file system returns for blocks whose writes it never made durable.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from petcd.proto import rpc_pb2
from petcd.testing.harness import Server, petcd_cluster, petcd_server, wait_for

pytestmark = pytest.mark.timeout(300)

BLOCK = 4096
VALUE = b"v" * 1024


def _lose_wal_tail(data_dir: Path, keep: float) -> None:
    """Zero the newest WAL segment from the block boundary at keep (a
    fraction of its written part) on."""
    wal = sorted((data_dir / "member" / "wal").glob("*.wal"))[-1]
    data = wal.read_bytes()
    written = len(data.rstrip(b"\0"))
    cut = int(written * keep) // BLOCK * BLOCK
    assert BLOCK <= cut < written, (cut, written)
    with open(wal, "r+b") as f:
        f.seek(cut)
        f.write(b"\0" * (written - cut))


def _put_all(server: Server, prefix: bytes, n: int) -> dict[bytes, int]:
    kv = server.kv()
    return {k: kv.Put(rpc_pb2.PutRequest(key=k, value=VALUE), timeout=30).header.revision
            for k in (prefix + b"%05d" % i for i in range(n))}


def _found(server: Server, prefix: bytes) -> dict[bytes, int]:
    resp = server.kv().Range(rpc_pb2.RangeRequest(key=prefix, range_end=prefix[:-1] + b"0"), timeout=60)
    return {kv.key: kv.mod_revision for kv in resp.kvs}


def test_a_member_whose_wal_lost_its_tail_restarts_from_its_backend_and_takes_writes(tmp_path: Path) -> None:
    server = petcd_server(tmp_path)
    server.start()
    try:
        acked = _put_all(server, b"tail/", 400)
        assert server.stop() == 0  # the backend holds every write
        _lose_wal_tail(server.data_dir, keep=0.5)

        server.start()
        assert _found(server, b"tail/") == acked
        rev = server.kv().Put(rpc_pb2.PutRequest(key=b"after/1", value=b"1"), timeout=30).header.revision
        assert rev == max(acked.values()) + 1
        assert "the WAL lost its tail" in server.log_tail(200)
        more = _put_all(server, b"more/", 50)

        # The snapshot it restarted from replays like any other.
        assert server.stop() == 0
        server.start()
        assert _found(server, b"tail/") == acked
        assert _found(server, b"more/") == more
        assert server.kv().Put(rpc_pb2.PutRequest(key=b"after/2", value=b"2"), timeout=30).header.revision \
            == max(more.values()) + 1
    finally:
        server.kill()


def test_a_follower_whose_wal_lost_its_tail_rejoins_and_follows(tmp_path: Path) -> None:
    """The leader resends what the follower's WAL lost; the follower, now
    starting from a snapshot of its backend, takes the rest in order."""
    members = petcd_cluster(tmp_path, 3)
    try:
        leader = members[0]
        acked = _put_all(leader, b"tail/", 300)
        follower = next(m for m in members
                        if m.maintenance().Status(rpc_pb2.StatusRequest(), timeout=10).leader
                        != m.maintenance().Status(rpc_pb2.StatusRequest(), timeout=10).header.member_id)
        wait_for(lambda: _serializable_count(follower, b"tail/") == len(acked), 60, "the follower to apply every write")
        assert follower.stop() == 0
        _lose_wal_tail(follower.data_dir, keep=0.5)
        follower.start()
        more = _put_all(leader, b"more/", 50)
        wait_for(lambda: _serializable_count(follower, b"more/") == len(more), 60, "the follower to follow on")
        hashes = {m.endpoint: m.maintenance().HashKV(rpc_pb2.HashKVRequest(), timeout=30).hash for m in members}
        assert len(set(hashes.values())) == 1, hashes
        assert _found(follower, b"tail/") == acked
    finally:
        for m in members:
            m.kill()


def _serializable_count(server: Server, prefix: bytes) -> int:
    req = rpc_pb2.RangeRequest(key=prefix, range_end=prefix[:-1] + b"0", count_only=True, serializable=True)
    return int(server.kv().Range(req, timeout=30).count)
