"""Helpers for running `python -m petcd` and the real etcdctl as processes."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def petcd_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The test's environment without ETCD_* variables, petcd importable."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ETCD_")}
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra or {})
    return env


def run_petcd(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "petcd", *args], capture_output=True, text=True,
                          env=petcd_env(env), timeout=timeout, cwd=REPO)


def etcdctl(endpoint: str, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["etcdctl", "--endpoints", endpoint, "--command-timeout=5s", *args],
                          capture_output=True, text=True, env={**os.environ, "ETCDCTL_API": "3"}, timeout=timeout)


def need_server_and_etcdctl() -> None:
    """Skip (fail in CI for etcdctl) when a member cannot be started here."""
    try:
        import petcd.embed  # noqa: F401
    except ImportError as exc:
        pytest.skip(f"the server layers are not all in the tree yet: {exc}")
    if not shutil.which("etcdctl"):
        if os.environ.get("CI") == "true":
            pytest.fail("etcdctl is needed in CI (Debian's etcd-client)")
        pytest.skip("etcdctl not installed")


class PetcdProcess:
    """One `python -m petcd` member on free ports; its output goes to a log file."""

    def __init__(self, tmp_path: Path, name: str, data_dir: Path, *extra: str,
                 env: dict[str, str] | None = None) -> None:
        self.client = f"http://127.0.0.1:{free_port()}"
        self.peer = f"http://127.0.0.1:{free_port()}"
        self.log_path = tmp_path / f"{name}-{free_port()}.log"
        args = [sys.executable, "-m", "petcd", "--name", name, "--data-dir", str(data_dir),
                "--listen-client-urls", self.client, "--advertise-client-urls", self.client,
                "--listen-peer-urls", self.peer, *extra]
        with open(self.log_path, "wb") as logf:
            self.proc = subprocess.Popen(args, stdout=logf, stderr=subprocess.STDOUT, env=petcd_env(env),
                                         cwd=tmp_path)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout: float = 60) -> None:
        """Returns once a linearizable read succeeds through etcdctl."""
        deadline = time.monotonic() + timeout
        while True:
            r = etcdctl(self.client, "get", "--prefix", "petcd-ready-probe")
            if r.returncode == 0:
                return
            assert self.proc.poll() is None, f"petcd exited early:\n{self.log()}"
            assert time.monotonic() < deadline, f"petcd did not answer within {timeout} s: {r.stderr}\n{self.log()}"
            time.sleep(0.2)

    def stop(self) -> int:
        """SIGTERM, then the exit status (SIGKILL after 60 s, and fail)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"petcd did not stop on SIGTERM within 60 s:\n{self.log()}") from None


@pytest.fixture
def processes() -> Iterator[list[PetcdProcess]]:
    """Members started by a test; any still running at the end are stopped."""
    started: list[PetcdProcess] = []
    yield started
    for p in started:
        if p.proc.poll() is None:
            p.proc.kill()
            p.proc.wait()
