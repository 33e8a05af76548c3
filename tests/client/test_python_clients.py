"""The Python etcd clients petcd's users run, unchanged, against petcd and real etcd.

python-etcd3 (PyPI `etcd3`, grpcio) and aetcd (PyPI `aetcd`, grpc.aio) are
each driven through their whole public surface by a driver program
(etcd3_driver.py, aetcd_driver.py next to this file) that prints a JSON
transcript of every call's result or exception; the same scenario runs
against a fresh petcd and a fresh etcd, and the transcripts must be equal.
A driver runs in a process of its own: etcd3's generated protobuf modules
import only with the pure-Python protobuf, chosen before protobuf is first
imported, which petcd's own process must not use.

In CI (CI=true) a missing client or etcd is a failure, elsewhere a skip.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.on_both import on_both, start, transcript_diff

HERE = Path(__file__).parent
DRIVER_TIMEOUT = 300  # seconds for one whole scenario on a loaded machine

ETCD3_SCENARIOS = ["kv", "txn", "watch", "lease", "lock", "maintenance", "errors", "auth"]
AETCD_SCENARIOS = ["kv", "txn", "watch", "lease", "lock", "maintenance", "auth"]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION"] = "python"  # etcd3's old generated modules need it
    return env


def require_client(module: str) -> None:
    """The client must import (in a process like the driver's): fail in CI, skip elsewhere."""
    cp = subprocess.run([sys.executable, "-c", f"import {module}"], env=_env(), capture_output=True,
                        text=True, timeout=120)
    if cp.returncode != 0:
        msg = f"the Python client {module!r} is not installed (pip install -e '.[test]'): {cp.stderr[-500:]}"
        if os.environ.get("CI") == "true":
            pytest.fail(msg)
        pytest.skip(msg)


def run_driver(client: str, endpoint: str, scenario: str) -> list[list[Any]]:
    """One scenario's transcript from the client's driver against endpoint."""
    cp = subprocess.run([sys.executable, str(HERE / f"{client}_driver.py"), endpoint, scenario],
                        env=_env(), capture_output=True, text=True, timeout=DRIVER_TIMEOUT)
    assert cp.returncode == 0, f"{client} driver failed on {scenario} against {endpoint}:\n{cp.stderr[-4000:]}"
    steps: list[list[Any]] = json.loads(cp.stdout)
    return steps


def differential(client: str, scenario: str, tmp: Path) -> list[list[Any]]:
    """Run the scenario against a fresh petcd and a fresh etcd at once; the
    transcripts must be equal. Returns petcd's."""
    require_client(client)
    petcd_t, etcd_t = on_both(tmp, lambda s: run_driver(client, s.endpoint, scenario))
    if petcd_t != etcd_t:
        pytest.fail(f"{client} {scenario}: petcd differs from etcd\n" + transcript_diff(etcd_t, petcd_t))
    return petcd_t


def steps_of(transcript: list[list[Any]]) -> dict[str, Any]:
    return {name: result for name, result in transcript}


@pytest.mark.parametrize("scenario", ETCD3_SCENARIOS)
def test_etcd3_same_as_etcd(scenario: str, tmp_path: Path) -> None:
    t = steps_of(differential("etcd3", scenario, tmp_path))
    # beyond equality, what users rely on (so an oracle that changed would show)
    if scenario == "kv":
        assert t["put_if_not_exists existing"] is False and t["replace right"] is True
        assert t["get_prefix sort descend key"] == ["k/c", "k/b", "k/a"]
    elif scenario == "txn":
        assert t["txn value =="][0] is True and t["txn value !="][0] is False
        assert t["txn lease =="][0] is True
        assert t["txn too many ops"]["details"] == "etcdserver: too many operations in txn request"
    elif scenario == "watch":
        assert [e["type"] for e in t["watch events"]] == ["PutEvent", "DeleteEvent"]
        assert t["watch_prefix prev_kv"][1]["prev_value"] == "1"
        assert t["watch compacted"]["raised"] == "RevisionCompactedError"
        assert t["watch compacted"]["compacted_revision"] > 0
        assert t["watch_once timeout"]["raised"] == "WatchTimedOut"
    elif scenario == "lease":
        assert t["lease duplicate id"]["raised"] == "PreconditionFailedError"
        assert t["lease duplicate id"]["details"] == "etcdserver: lease already exists"
        assert t["keys gone"] == [] and t["expired key deleted"] is True
    elif scenario == "lock":
        assert t["acquire"] is True and t["other acquire timeout"] is False and t["other acquire"] is True
    elif scenario == "auth":
        assert t["wrong password"]["details"] == "etcdserver: authentication failed, invalid user ID or password"
        assert t["no credentials put"]["details"] == "etcdserver: user name is empty"
    elif scenario == "maintenance":
        assert t["put under NOSPACE"]["details"] == "etcdserver: mvcc: database space exceeded"
        assert t["compact again"]["code"] == "OUT_OF_RANGE"
        # a cluster whose second voter never started refuses, as etcd does, with
        # UNKNOWN (so etcd3 raises grpc's error, not PreconditionFailedError)
        for step in ("add another with quorum lost", "add duplicate with quorum lost",
                     "remove unknown with quorum lost"):
            assert t[step]["code"] == "UNKNOWN", (step, t[step])
            assert t[step]["details"] == "etcdserver: re-configuration failed due to not enough started members"


@pytest.mark.parametrize("scenario", AETCD_SCENARIOS)
def test_aetcd_same_as_etcd(scenario: str, tmp_path: Path) -> None:
    t = steps_of(differential("aetcd", scenario, tmp_path))
    if scenario == "lease":
        assert t["lease duplicate id"]["raised"] == "DuplicateLeaseError"
        assert t["revoke again"]["message"] == "etcdserver: requested lease not found"
    elif scenario == "lock":
        assert t["other acquire timeout"] is False and t["waiter acquires"] is True
    elif scenario == "watch":
        assert t["watch_once timeout"]["raised"] == "WatchTimeoutError"
        # aetcd's watch_once hands back (does not raise) the compaction error
        assert t["watch on a compacted revision"].startswith("RevisionCompactedError(")
    elif scenario == "auth":
        assert t["alice put in her prefix"] > 0 and t["alice put outside"]["code"] == "PERMISSION_DENIED"
        assert t["alice txn inside"][0] is True
    elif scenario == "maintenance":
        for step in ("add another with quorum lost", "add duplicate with quorum lost",
                     "remove unknown with quorum lost"):
            assert t[step]["raised"] == "ClientError" and t[step]["code"] == "UNKNOWN", (step, t[step])


@pytest.mark.parametrize("client", ["etcd3", "aetcd"])
def test_unreachable_server_raises_connection_failed(client: str) -> None:
    """Nothing listening: each client's ConnectionFailedError (gRPC UNAVAILABLE)."""
    require_client(client)
    t = run_driver(client, "127.0.0.1:1", "unreachable")
    assert t and all(r["raised"] == "ConnectionFailedError" and r["code"] == "UNAVAILABLE" for _, r in t), t


@pytest.mark.parametrize("client", ["etcd3", "aetcd"])
def test_client_against_petcd_alone(client: str, tmp_path: Path) -> None:
    """Where etcd is not installed (and not in CI) petcd is still exercised:
    the lock scenario's contention and hand-over, asserted outright."""
    require_client(client)
    s = start("petcd", tmp_path)
    try:
        t = steps_of(run_driver(client, s.endpoint, "lock"))
    finally:
        s.stop()
    assert t["acquire"] is True and t["is_acquired"] is True
    assert t["other acquire timeout"] is False
    assert t["release"] is True and t["release again"] is False
    assert t["context manager"] is True and t["context manager released"] is False


def test_etcd3_membership_change_without_quorum_times_out(tmp_path: Path) -> None:
    """A cluster of one grown to two voters, the second never started:
    update_member and remove_member on it cannot commit. etcd waits for the
    caller's deadline and then answers UNAVAILABLE "request timed out" or
    UNKNOWN "context deadline exceeded", unless the client's own
    DEADLINE_EXCEEDED comes first (a race in etcd itself); petcd waits for
    the caller's deadline too, and its front end or the client's own timer
    ends the call with DEADLINE_EXCEEDED. What this asserts of both: an
    answer from the timeout family, never a hang or a refusal."""
    require_client("etcd3")
    transcripts = on_both(tmp_path, lambda s: run_driver("etcd3", s.endpoint, "quorum_lost"))
    timeouts = {("ConnectionFailedError", "UNAVAILABLE", "etcdserver: request timed out"),
                ("ConnectionFailedError", "UNAVAILABLE",
                 "etcdserver: request timed out, possibly due to previous leader failure"),
                ("ConnectionTimeoutError", "DEADLINE_EXCEEDED", "Deadline Exceeded"),
                # the server's own answer at the call's deadline (petcd's front end)
                ("ConnectionTimeoutError", "DEADLINE_EXCEEDED", "context deadline exceeded"),
                # etcd's ctx error passed through as is (grpc-go makes it UNKNOWN)
                ("_InactiveRpcError", "UNKNOWN", "context deadline exceeded")}
    for server, t in zip(["petcd", "etcd"], transcripts, strict=True):
        for step, r in t:
            assert (r["raised"], r["code"], r["details"]) in timeouts, (server, step, r)
