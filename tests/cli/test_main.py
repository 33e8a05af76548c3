"""The `petcd` command as a real process: version, usage errors, exit codes,
and a member started from etcd's flags answering the real etcdctl."""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path

import pytest

from petcd.cli.main import ETCD_API_VERSION
from petcd.http2 import frames
from petcd.proto import rpc_pb2
from petcd.server import ids
from tests.http2.rawclient import RawClient

from .conftest import PetcdProcess, etcdctl, need_server_and_etcdctl, run_petcd

petcd = run_petcd


def test_version_prints_three_lines_and_exits_0() -> None:
    r = petcd("--version")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert len(lines) == 3
    assert lines[0].startswith("petcd Version: ") and len(lines[0]) > len("petcd Version: ")
    assert lines[1] == "etcd API Version: 3.4.23"
    assert lines[2] == f"Python Version: {platform.python_version()}"


def test_etcd_api_version_is_the_servers() -> None:
    try:
        from petcd.server.etcd_server import ETCD_VERSION
    except ImportError as exc:  # the server's lower layers are not all in the tree yet
        pytest.skip(f"petcd.server.etcd_server not importable: {exc}")
    assert ETCD_API_VERSION == ETCD_VERSION


def test_unknown_flag_exits_2_naming_it() -> None:
    r = petcd("--name", "x", "--no-such-flag", "1")
    assert r.returncode == 2
    assert "petcd: unknown flag: --no-such-flag" in r.stderr.splitlines()
    assert r.stdout == ""


def test_unsupported_flag_exits_2_saying_so() -> None:
    r = petcd("--client-crl-file", "/crl.pem")
    assert r.returncode == 2
    assert r.stderr.strip() == "petcd: flag --client-crl-file is not supported yet"


def test_bad_configuration_exits_1_with_etcds_message(tmp_path: Path) -> None:
    r = petcd("--data-dir", str(tmp_path / "d"), "--heartbeat-interval", "500")
    assert r.returncode == 1
    assert r.stderr.strip() == (
        "petcd: --election-timeout[1000ms] should be at least as 5 times as --heartbeat-interval[500ms]"
    )
    assert not (tmp_path / "d").exists()


def test_help_exits_0_and_lists_flags() -> None:
    r = petcd("--help")
    assert r.returncode == 0
    assert "--listen-client-urls" in r.stdout and "--initial-cluster-token" in r.stdout


def test_help_mentions_the_cluster_command_and_it_describes_its_flags() -> None:
    assert "petcd cluster" in petcd("--help").stdout
    r = petcd("cluster", "--help")
    assert r.returncode == 0
    text = " ".join(r.stdout.split())
    for described in ("--size {1,3,5} number of members", "--data-dir DATA_DIR folder for every member",
                      "--base-port BASE_PORT client port of the first member",
                      "--initial-cluster-token INITIAL_CLUSTER_TOKEN the cluster's"):
        assert described in text, described


def test_member_from_flags_and_env_serves_etcdctl(tmp_path: Path, processes: list[PetcdProcess]) -> None:
    """`petcd` with etcd's flags (one given as ETCD_*) starts a member that
    the real etcdctl writes to and reads from; its log is zap JSON lines;
    SIGTERM stops it with status 0."""
    need_server_and_etcdctl()
    m = PetcdProcess(tmp_path, "m1", tmp_path / "m1.petcd", "--unsafe-no-fsync",
                     env={"ETCD_INITIAL_CLUSTER_TOKEN": "cli-test"})
    processes.append(m)
    m.wait_ready()
    r = etcdctl(m.client, "put", "k", "v")
    assert (r.returncode, r.stdout.strip()) == (0, "OK"), r.stderr
    g = etcdctl(m.client, "get", "k", "-w", "json")
    doc = json.loads(g.stdout)
    assert doc["kvs"][0]["value"] == "dg=="  # base64 of "v"
    assert doc["header"]["member_id"] == ids.member_id(["http://localhost:2380"], "cli-test")
    assert m.stop() == 0, m.log()
    lines = [json.loads(line) for line in m.log().splitlines() if line.startswith("{")]
    assert lines and all({"level", "ts", "caller", "msg"} <= set(d) for d in lines)
    assert any(d["msg"] == "starting petcd" and d["name"] == "m1" for d in lines)
    assert any("ETCD_INITIAL_CLUSTER_TOKEN" in d["msg"] for d in lines)


def test_keepalive_min_time_flag_sets_the_ping_policy(tmp_path: Path, processes: list[PetcdProcess]) -> None:
    """--grpc-keepalive-min-time=500ms: a client with a call open may ping
    every 700 ms (etcd's default 5s would strike those), and a client pinging
    back to back gets GOAWAY ENHANCE_YOUR_CALM "too_many_pings"."""
    need_server_and_etcdctl()
    m = PetcdProcess(tmp_path, "m1", tmp_path / "m1.petcd", "--unsafe-no-fsync", "--grpc-keepalive-min-time=500ms")
    processes.append(m)
    m.wait_ready()
    host, port = m.client.removeprefix("http://").split(":")
    c = RawClient((host, int(port)))
    try:
        # a Watch stream stays open, so the policy for clients with calls applies
        create = rpc_pb2.WatchRequest(create_request=rpc_pb2.WatchCreateRequest(key=b"k"))
        c.request(1, "/etcdserverpb.Watch/Watch", create.SerializeToString(), end=False)
        c.until(frames.DATA, sid=1)  # the created response
        for i in range(4):
            time.sleep(0.7)
            c.send(frames.ping(b"%08d" % i))
            assert c.until(frames.PING).flags & frames.FLAG_ACK
        c.send(b"".join(frames.ping(b"%08d" % (10 + i)) for i in range(5)))
        _, code, debug = c.goaway()
        assert (code, debug) == (frames.ErrorCode.ENHANCE_YOUR_CALM, b"too_many_pings")
    finally:
        c.close()
    assert m.stop() == 0, m.log()


def test_serve_shortens_the_gil_switch_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    """A member's process hands the GIL around every SWITCH_INTERVAL, not
    Python's 5 ms: the WAL sync thread must get it back soon after its fsync."""
    import sys

    from petcd.embed import etcd
    from petcd.server.config import ServerConfig

    seen: list[float] = []

    async def fake_serve(cfg: ServerConfig) -> int:
        seen.append(sys.getswitchinterval())
        return 0

    monkeypatch.setattr(etcd, "_serve", fake_serve)
    before = sys.getswitchinterval()
    try:
        assert etcd.serve(ServerConfig()) == 0
    finally:
        sys.setswitchinterval(before)
    assert seen == [pytest.approx(etcd.SWITCH_INTERVAL)] and etcd.SWITCH_INTERVAL < 0.005
