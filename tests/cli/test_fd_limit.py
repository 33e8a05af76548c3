"""The file-descriptor limit (issue 9, defect 5): petcd raises its soft
RLIMIT_NOFILE to the hard limit at start, as Go does for etcd, logs it, and
warns when the limit cannot keep the storage reserve. A real petcd process
started with a low inherited soft limit must then serve more connections
than that soft limit would allow, and keep writing."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import grpc
import pytest

from petcd.cli.limits import STORAGE_FD_RESERVE
from petcd.proto import rpc_pb2, rpc_pb2_grpc
from petcd.testing.harness import Server, petcd_server, wait_for

pytestmark = pytest.mark.timeout(300)

INHERITED_SOFT, HARD = 256, 4096
# More connections than the inherited soft limit has descriptors for.
CONNECTIONS = 400


def _with_nofile(s: Server, soft: int, hard: int) -> Server:
    prlimit = shutil.which("prlimit")
    if prlimit is None:
        pytest.skip("prlimit (util-linux) is not installed")
    s.args = [prlimit, f"--nofile={soft}:{hard}", *s.args]  # prlimit execs: the PID is petcd's
    return s


def _limit_lines(s: Server) -> list[dict[str, object]]:
    out = []
    for line in s.log_path.read_text(errors="replace").splitlines():
        if "file descriptor limit" in line:
            out.append(json.loads(line))
    return out


def _soft_limit(pid: int) -> int:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            return int(line.split()[3])
    raise AssertionError("no 'Max open files' in /proc/PID/limits")


def test_soft_limit_raised_to_hard_and_connections_served(tmp_path: Path) -> None:
    s = _with_nofile(petcd_server(tmp_path), INHERITED_SOFT, HARD).start()
    channels: list[grpc.Channel] = []
    try:
        assert s.proc is not None
        pid = s.proc.pid
        assert _soft_limit(pid) == HARD
        logged = _limit_lines(s)
        assert logged and logged[0]["inherited-soft-limit"] == INHERITED_SOFT and logged[0]["soft-limit"] == HARD
        assert logged[0]["storage-reserve"] == STORAGE_FD_RESERVE
        assert not any(d["level"] == "warn" for d in logged)
        # one TCP connection per channel (no shared subchannels)
        channels = [grpc.insecure_channel(s.endpoint, options=[("grpc.use_local_subchannel_pool", 1)])
                    for _ in range(CONNECTIONS)]
        for i, ch in enumerate(channels):
            rpc_pb2_grpc.KVStub(ch).Range(rpc_pb2.RangeRequest(key=b"k%d" % i), timeout=30)
        fds = wait_for(lambda: (n := len(list(Path(f"/proc/{pid}/fd").iterdir()))) > INHERITED_SOFT and n,
                       30, "the server to hold more descriptors than the inherited soft limit")
        assert fds > INHERITED_SOFT
        # writes (WAL, backend) still go through with every connection open
        kv = rpc_pb2_grpc.KVStub(channels[-1])
        for i in range(50):
            kv.Put(rpc_pb2.PutRequest(key=b"after/%d" % i, value=b"v" * 1000), timeout=30)
        assert kv.Range(rpc_pb2.RangeRequest(key=b"after/", range_end=b"after0", count_only=True),
                        timeout=30).count == 50
    finally:
        for ch in channels:
            ch.close()
        s.stop()


def test_limit_too_low_for_the_reserve_is_warned(tmp_path: Path) -> None:
    low = STORAGE_FD_RESERVE + 100  # enough to run, too few to keep the reserve and serve clients
    s = _with_nofile(petcd_server(tmp_path), low, low).start()
    try:
        warned = [d for d in _limit_lines(s) if d["level"] == "warn"]
        assert warned and warned[0]["soft-limit"] == low and warned[0]["storage-reserve"] == STORAGE_FD_RESERVE
    finally:
        s.stop()


def test_clients_never_eat_into_the_reserve(tmp_path: Path) -> None:
    """The client port owns accept(): past what the reserve allows, new
    connections wait in the backlog instead of taking storage's descriptors,
    the member keeps writing, and the waiting clients are served as others
    leave. (With grpc's server, which accepts on its own, clients did eat
    into the reserve, and only a warning said so.)"""
    limit = 600  # room for the reserve and 400-odd clients
    s = _with_nofile(petcd_server(tmp_path), limit, limit).start()
    assert s.proc is not None
    channels: list[grpc.Channel] = []
    try:
        kv = s.kv()  # a connection that is in before the crowd
        kv.Put(rpc_pb2.PutRequest(key=b"before", value=b"v"), timeout=30)
        channels = [grpc.insecure_channel(s.endpoint, options=[("grpc.use_local_subchannel_pool", 1)])
                    for _ in range(limit)]
        futures = [rpc_pb2_grpc.KVStub(ch).Range.future(rpc_pb2.RangeRequest(key=b"k%d" % i), timeout=120)
                   for i, ch in enumerate(channels)]
        served = wait_for(lambda: [f for f in futures if f.done()] if sum(f.done() for f in futures) > 300 else None,
                          60, "the connections the budget allows to be served")
        fd_dir = Path(f"/proc/{s.proc.pid}/fd")
        assert len(list(fd_dir.iterdir())) <= limit - STORAGE_FD_RESERVE + 8  # the reserve is free
        assert all(f.result().header.revision > 0 for f in served)
        assert len(served) < len(futures)  # the rest wait: the limit does not allow them all
        # the member still writes, and nothing warned that the reserve is used
        assert kv.Put(rpc_pb2.PutRequest(key=b"during", value=b"v"), timeout=30).header.revision > 1
        assert not any("reserved for storage" in str(d["msg"]) for d in _reserve_lines(s))
        # as clients leave, the waiting ones are served
        for ch in channels[:200]:
            ch.close()
        for f in futures[200:]:
            assert f.result(timeout=120).header.revision > 0
    finally:
        for ch in channels:
            ch.close()
        s.stop()


def _reserve_lines(s: Server) -> list[dict[str, object]]:
    out = []
    for line in s.log_path.read_text(errors="replace").splitlines():
        if "reserved for storage" in line or "reserve free again" in line:
            out.append(json.loads(line))
    return out
