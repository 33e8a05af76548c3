"""Member and Cluster: petcd members for Python programs and test suites,
with a temporary data dir and ports from the OS, as context managers.

``with Member() as m: Client(m.endpoint)``. A member runs in-process (its
own thread and event loop: the fastest start) or, with ``subprocess=True``,
as ``python -m petcd`` (isolated from the caller's threads and GIL).
``unsafe_no_fsync=True`` skips fsync, as etcd's --unsafe-no-fsync does: for
tests, never for data that matters."""

from __future__ import annotations

import asyncio
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

from petcd.testing.harness import Server, free_port

READY_TIMEOUT = 60.0


class EmbedError(Exception):
    """The member could not be started or stopped."""


class Member:
    """One petcd member. ``endpoint`` is "127.0.0.1:PORT", ``client_url``
    the same as a URL. The data dir is removed on stop when this object
    created it."""

    def __init__(self, *, name: str = "default", data_dir: str | Path | None = None,
                 subprocess: bool = False, unsafe_no_fsync: bool = False, host: str = "127.0.0.1",
                 client_port: int = 0, peer_port: int = 0, initial_cluster: str | None = None,
                 cluster_token: str = "etcd-cluster", extra_args: Sequence[str] = (),
                 log_level: str = "warn") -> None:
        self.name = name
        self._own_dir = data_dir is None
        self.data_dir = Path(data_dir) if data_dir is not None else Path(tempfile.mkdtemp(prefix="petcd-"))
        self.subprocess = subprocess
        self.unsafe_no_fsync = unsafe_no_fsync
        self.host = host
        self.client_port = client_port or free_port()
        self.peer_port = peer_port or free_port()
        self.initial_cluster = initial_cluster or f"{name}={self.peer_url}"
        self.cluster_token = cluster_token
        self.extra_args = list(extra_args)
        self.log_level = log_level
        self._proc: Server | None = None  # subprocess mode, while running
        self._thread: threading.Thread | None = None  # in-process mode, while running
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_requested: asyncio.Event | None = None
        self._started = threading.Event()
        self._error: BaseException | None = None

    @property
    def endpoint(self) -> str:
        return f"{self.host}:{self.client_port}"

    @property
    def client_url(self) -> str:
        return f"http://{self.host}:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://{self.host}:{self.peer_port}"

    @property
    def running(self) -> bool:
        return self._proc is not None or self._thread is not None

    def args(self) -> list[str]:
        """The petcd command line of this member."""
        args = [
            "--name", self.name, "--data-dir", str(self.data_dir / f"{self.name}.petcd"),
            "--listen-client-urls", self.client_url, "--advertise-client-urls", self.client_url,
            "--listen-peer-urls", self.peer_url, "--initial-advertise-peer-urls", self.peer_url,
            "--initial-cluster", self.initial_cluster, "--initial-cluster-token", self.cluster_token,
            "--log-level", self.log_level,
        ]
        if self.unsafe_no_fsync:
            args.append("--unsafe-no-fsync")
        return args + self.extra_args

    def launch(self) -> Member:
        """Start without waiting for a leader (members of one cluster start together)."""
        if self.running:
            raise EmbedError(f"member {self.name} is already running")
        if self.subprocess:
            log = self.data_dir / f"{self.name}.log"
            self._proc = Server("petcd", [sys.executable, "-m", "petcd", *self.args()],
                                self.data_dir / f"{self.name}.petcd", self.client_url, log).launch()
        else:
            self._started.clear()
            self._error = None
            self._thread = threading.Thread(target=self._serve, name=f"petcd-member-{self.name}", daemon=True)
            self._thread.start()
            if not self._started.wait(READY_TIMEOUT) or self._error is not None:
                self._thread.join(timeout=10)
                self._thread = None
                raise EmbedError(f"member {self.name} failed to start: {self._error!r}") from self._error
        return self

    def _serve(self) -> None:
        from petcd.embed.etcd import Etcd
        from petcd.server import flags

        try:
            cfg = flags.parse(self.args(), {}).config
            assert cfg is not None
            try:
                import uvloop

                loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
            except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
                loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            self._loop = loop
            etcd = Etcd(cfg)
            loop.run_until_complete(etcd.start())
            stop = asyncio.Event()
            self._stop_requested = stop
        except BaseException as exc:
            self._error = exc
            self._started.set()
            return
        self._started.set()
        try:
            loop.run_until_complete(stop.wait())
            loop.run_until_complete(etcd.stop())
        finally:
            loop.close()

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> None:
        """Return once this member knows a leader."""
        from petcd.client import Client, EtcdError

        deadline = time.monotonic() + timeout
        with Client(self.endpoint, timeout=2) as c:
            while True:
                try:
                    if c.status().leader != 0:
                        return
                except EtcdError:
                    pass
                if self._proc is not None and self._proc.proc is not None and self._proc.proc.poll() is not None:
                    raise EmbedError(f"petcd exited with {self._proc.proc.returncode}: {self._proc.log_tail()}")
                if time.monotonic() > deadline:
                    raise EmbedError(f"member {self.name} has no leader after {timeout}s")
                time.sleep(0.01)

    def start(self) -> Member:
        self.launch()
        try:
            self.wait_ready()
        except BaseException:
            self.stop(remove=False)
            raise
        return self

    def stop(self, *, remove: bool | None = None) -> None:
        """Stop the member (SIGTERM for a subprocess); the data dir is kept
        when remove is False, removed by default when this object made it."""
        if self._proc is not None:
            self._proc.stop()
            self._proc = None
        if self._thread is not None:
            loop, stop = self._loop, self._stop_requested
            if loop is not None and stop is not None and not loop.is_closed():
                loop.call_soon_threadsafe(stop.set)
            self._thread.join(timeout=60)
            self._thread = None
        if (self._own_dir if remove is None else remove) and self.data_dir.exists():
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def restart(self) -> None:
        """Stop and start again on the same ports and data."""
        self.stop(remove=False)
        self.start()

    def __enter__(self) -> Member:
        return self.start()

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()


class Cluster:
    """``size`` members of one new cluster (subprocesses by default: three
    servers in one interpreter would share one GIL). ``endpoints`` lists
    every member's "host:port"."""

    def __init__(self, size: int = 3, *, subprocess: bool = True, unsafe_no_fsync: bool = False,
                 data_dir: str | Path | None = None, extra_args: Sequence[str] = ()) -> None:
        self._own_dir = data_dir is None
        self.data_dir = Path(data_dir) if data_dir is not None else Path(tempfile.mkdtemp(prefix="petcd-cluster-"))
        names = [f"m{i}" for i in range(size)]
        peers = {n: free_port() for n in names}
        initial = ",".join(f"{n}=http://127.0.0.1:{peers[n]}" for n in names)
        token = f"petcd-embed-{self.data_dir.name}"
        self.members = [
            Member(name=n, data_dir=self.data_dir, subprocess=subprocess, unsafe_no_fsync=unsafe_no_fsync,
                   peer_port=peers[n], initial_cluster=initial, cluster_token=token, extra_args=extra_args)
            for n in names
        ]

    @property
    def endpoints(self) -> list[str]:
        return [m.endpoint for m in self.members]

    def start(self) -> Cluster:
        try:
            for m in self.members:
                m.launch()
            for m in self.members:
                m.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for m in self.members:
            m.stop(remove=False)
        if self._own_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def __enter__(self) -> Cluster:
        return self.start()

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()
