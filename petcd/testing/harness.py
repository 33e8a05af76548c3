"""Real processes for integration tests and benchmarks: petcd members, real
etcd (the oracle), and the real etcdctl. Ports come from the OS, data lives in
the caller's temp dir, processes are stopped by PID.

It lives in the package (not under tests/) so that bench/ and other projects'
suites can start real members too. pytest is imported only where a missing
tool must become a skip or a failure, so the module imports without it."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import grpc

from petcd.proto import rpc_pb2, rpc_pb2_grpc

READY_TIMEOUT = 60.0
T = TypeVar("T")


_handed_out: set[int] = set()


def free_port() -> int:
    """A port the OS says is free and that this process has not handed out
    before: the OS may offer a just-closed port again, and a cluster's client
    and peer ports, chosen one after another, must all differ."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port not in _handed_out:
            _handed_out.add(port)
            return port


def require_binary(name: str) -> str:
    """The path of a tool the test needs: a failure in CI, a skip elsewhere."""
    path = shutil.which(name)
    if path is None:
        import pytest  # only here: the rest of the module works without pytest

        msg = f"{name} is not installed (apt-get install etcd-server etcd-client)"
        if os.environ.get("CI") == "true":
            pytest.fail(msg)
        pytest.skip(msg)
    return path


def wait_for(cond: Callable[[], T | None], timeout: float, what: str, interval: float = 0.05) -> T:
    """Poll cond until it returns something truthy; fail after timeout."""
    deadline = time.monotonic() + timeout
    last_exc: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            got = cond()
            if got:
                return got
        except Exception as exc:  # not ready yet
            last_exc = exc
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last error: {last_exc!r})")


UNHEALTHY = "etcdserver: unhealthy cluster"


def when_healthy(call: Callable[[], T], timeout: float = 60.0) -> T:
    """Make a membership change as etcd's users must: etcd (and petcd)
    refuse one with UNAVAILABLE "etcdserver: unhealthy cluster" until every
    voter has been connected for 5 s, so the call is made again until it is
    answered otherwise. Any other answer or error is the call's own."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return call()
        except grpc.RpcError as exc:
            if exc.details() != UNHEALTHY or time.monotonic() > deadline:  # type: ignore[attr-defined]
                raise
        time.sleep(0.1)


@dataclass
class Server:
    """A running petcd or etcd process with one client URL."""

    kind: str
    args: list[str]
    data_dir: Path
    client_url: str
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    channels: list[grpc.Channel] = field(default_factory=list)

    @property
    def endpoint(self) -> str:
        return self.client_url.removeprefix("http://")

    def start(self) -> Server:
        self.launch()
        try:
            self.wait_ready()
        except BaseException:
            self.kill()  # never leave a process behind a failed start
            raise
        return self

    def launch(self) -> Server:
        """Start the process without waiting for it to serve."""
        logf = open(self.log_path, "ab")  # noqa: SIM115 - kept open for the process's life
        self.proc = subprocess.Popen(self.args, stdout=logf, stderr=subprocess.STDOUT, start_new_session=True)
        logf.close()
        return self

    def channel(self) -> grpc.Channel:
        ch = grpc.insecure_channel(self.endpoint)
        self.channels.append(ch)
        return ch

    def kv(self) -> rpc_pb2_grpc.KVStub:
        return rpc_pb2_grpc.KVStub(self.channel())

    def maintenance(self) -> rpc_pb2_grpc.MaintenanceStub:
        return rpc_pb2_grpc.MaintenanceStub(self.channel())

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> None:
        stub = rpc_pb2_grpc.MaintenanceStub(grpc.insecure_channel(self.endpoint))

        def has_leader() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.kind} exited with {self.proc.returncode}: {self.log_tail()}")
            return stub.Status(rpc_pb2.StatusRequest(), timeout=2).leader != 0

        try:
            wait_for(has_leader, timeout, f"{self.kind} at {self.client_url} to elect a leader")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n--- {self.kind} log ---\n{self.log_tail()}") from None

    def log_tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def kill(self) -> None:
        """SIGKILL: the process gets no chance to flush anything."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)
        self._close_channels()

    def stop(self) -> int:
        """SIGTERM and wait for a clean exit; the exit code."""
        self._close_channels()
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=30)
        return self.proc.returncode

    def _close_channels(self) -> None:
        for ch in self.channels:
            ch.close()
        self.channels = []


def petcd_args(data_dir: Path, client_url: str, peer_url: str, name: str = "default",
               initial_cluster: str | None = None) -> list[str]:
    return [
        sys.executable, "-m", "petcd",
        "--name", name,
        "--data-dir", str(data_dir),
        "--listen-client-urls", client_url,
        "--advertise-client-urls", client_url,
        "--listen-peer-urls", peer_url,
        "--initial-advertise-peer-urls", peer_url,
        "--initial-cluster", initial_cluster or f"{name}={peer_url}",
    ]


def petcd_joiner(tmp: Path, name: str, peer_url: str, initial_cluster: str,
                 extra: list[str] | None = None) -> Server:
    """A member that joins a running cluster (``--initial-cluster-state
    existing``) once MemberAdd has added peer_url; initial_cluster is the
    list MemberAdd's answer gives (etcdctl prints it). Not started."""
    client = f"http://127.0.0.1:{free_port()}"
    data = tmp / f"{name}.petcd"
    args = petcd_args(data, client, peer_url, name, initial_cluster) + [
        "--initial-cluster-state", "existing", "--initial-cluster-token", f"test-{tmp.name}", *(extra or [])]
    return Server("petcd", args, data, client, tmp / f"{name}.log")


def petcd_server(tmp: Path, name: str = "default", extra: list[str] | None = None,
                 data_dir: Path | None = None) -> Server:
    client = f"http://127.0.0.1:{free_port()}"
    peer = f"http://127.0.0.1:{free_port()}"
    data = data_dir or tmp / f"{name}.petcd"
    args = petcd_args(data, client, peer, name) + (extra or [])
    return Server("petcd", args, data, client, tmp / f"petcd-{name}-{client.rsplit(':', 1)[1]}.log")


def petcd_cluster(tmp: Path, size: int, extra: list[str] | None = None,
                  advertise: Callable[[int], str] | None = None) -> list[Server]:
    """size members of one new cluster, started together; returns once
    every member knows the leader. advertise(listen_port) gives the peer URL
    a member advertises for its peer port (a proxy in front of it, say)."""
    names = [f"m{i}" for i in range(size)]
    clients = {n: f"http://127.0.0.1:{free_port()}" for n in names}
    listen = {n: free_port() for n in names}
    peers = {n: advertise(listen[n]) if advertise else f"http://127.0.0.1:{listen[n]}" for n in names}
    initial = ",".join(f"{n}={peers[n]}" for n in names)
    members = []
    for n in names:
        args = [
            sys.executable, "-m", "petcd", "--name", n, "--data-dir", str(tmp / f"{n}.petcd"),
            "--listen-client-urls", clients[n], "--advertise-client-urls", clients[n],
            "--listen-peer-urls", f"http://127.0.0.1:{listen[n]}", "--initial-advertise-peer-urls", peers[n],
            "--initial-cluster", initial, "--initial-cluster-token", f"test-{tmp.name}",
            *(extra or []),
        ]
        members.append(Server("petcd", args, tmp / f"{n}.petcd", clients[n], tmp / f"{n}.log"))
    return start_together(members)


def start_together(members: list[Server]) -> list[Server]:
    """Launch every member, then wait for each to be ready (members of one
    new cluster need each other to elect); on a failed start kill them all."""
    for m in members:
        m.launch()
    try:
        for m in members:
            m.wait_ready()
    except BaseException:
        for m in members:
            m.kill()  # never leave processes behind a failed start
        raise
    return members


def etcd_cluster(tmp: Path, size: int) -> list[Server]:
    """size real etcd members of one new cluster, started together; returns
    once every member knows the leader (the counterpart of petcd_cluster)."""
    binary = require_binary("etcd")
    names = [f"e{i}" for i in range(size)]
    clients = {n: f"http://127.0.0.1:{free_port()}" for n in names}
    peers = {n: f"http://127.0.0.1:{free_port()}" for n in names}
    initial = ",".join(f"{n}={peers[n]}" for n in names)
    members = [Server("etcd", [binary, "--name", n, "--data-dir", str(tmp / n), "--listen-client-urls", clients[n],
                               "--advertise-client-urls", clients[n], "--listen-peer-urls", peers[n],
                               "--initial-advertise-peer-urls", peers[n], "--initial-cluster", initial,
                               "--initial-cluster-token", f"bench-{tmp.name}"], tmp / n, clients[n], tmp / f"{n}.log")
               for n in names]
    return start_together(members)


def etcd_server(tmp: Path, extra: list[str] | None = None) -> Server:
    binary = require_binary("etcd")
    client = f"http://127.0.0.1:{free_port()}"
    peer = f"http://127.0.0.1:{free_port()}"
    data = tmp / "etcd.data"
    args = [
        binary, "--name", "default", "--data-dir", str(data),
        "--listen-client-urls", client, "--advertise-client-urls", client,
        "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
        "--initial-cluster", f"default={peer}",
    ] + (extra or [])
    return Server("etcd", args, data, client, tmp / "etcd.log")


def etcdctl(endpoint: str, *args: str, stdin: str | None = None, check: bool = True,
            timeout: float = 60) -> subprocess.CompletedProcess[str]:
    binary = require_binary("etcdctl")
    env = dict(os.environ, ETCDCTL_API="3")
    cmd = [binary, f"--endpoints={endpoint}", "--dial-timeout=10s", "--command-timeout=20s", *args]
    cp = subprocess.run(cmd, input=stdin, capture_output=True, text=True, env=env, timeout=timeout)
    if check and cp.returncode != 0:
        raise AssertionError(f"etcdctl {' '.join(args)} failed ({cp.returncode}): {cp.stderr}{cp.stdout}")
    return cp


def etcdctl_when_healthy(endpoint: str, *args: str) -> subprocess.CompletedProcess[str]:
    """`etcdctl member add/remove/promote ...` made again while it is refused
    as "unhealthy cluster" (see when_healthy); any other failure is raised
    as etcdctl's."""
    cp = wait_for(lambda: None if UNHEALTHY in (got := etcdctl(endpoint, *args, check=False)).stderr else got,
                  60, f"etcdctl {' '.join(args)} to find the cluster healthy")
    if cp.returncode != 0:
        raise AssertionError(f"etcdctl {' '.join(args)} failed ({cp.returncode}): {cp.stderr}{cp.stdout}")
    return cp


class Background:
    """A long-running etcdctl (watch, lock, elect, keep-alive): its output
    lines are collected by a thread so tests can wait for them."""

    def __init__(self, endpoint: str, *args: str, stdin: bool = False) -> None:
        binary = require_binary("etcdctl")
        env = dict(os.environ, ETCDCTL_API="3")
        self.proc = subprocess.Popen(
            [binary, f"--endpoints={endpoint}", "--dial-timeout=10s", *args],
            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, start_new_session=True,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def send(self, text: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(text)
        self.proc.stdin.flush()

    def wait_lines(self, n: int, timeout: float = 30.0) -> list[str]:
        wait_for(lambda: len(self.lines) >= n, timeout, f"{n} lines of output (have {self.lines})")
        return list(self.lines)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=30)
