"""Two Patroni members (Debian's patroni, PostgreSQL) with an etcd3 DCS at
a given gateway URL, run as the postgres user in a temp dir; roles read
from Patroni's REST API."""

from __future__ import annotations

import glob
import json
import os
import pwd
import shutil
import signal
import subprocess
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from petcd.testing.harness import free_port


def _pg_bin() -> str:
    """Debian's newest PostgreSQL server binaries."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"), key=lambda p: int(p.split("/")[4]))
    return os.path.dirname(found[-1]) if found else "/usr/lib/postgresql/15/bin"


PG_BIN = _pg_bin()


def available() -> str | None:
    """Why Patroni cannot run here, or None."""
    if shutil.which("patroni") is None:
        return "patroni is not installed (apt-get install patroni)"
    if not os.path.exists(os.path.join(PG_BIN, "postgres")):
        return f"PostgreSQL is not installed in {PG_BIN}"
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        return "no postgres user"
    return None


class PatroniMember:
    def __init__(self, root: Path, name: str, dcs_url: str, scope: str) -> None:
        self.name = name
        self.api_port = free_port()
        self.pg_port = free_port()
        self.dir = root / name
        self.dir.mkdir(parents=True)
        self.log = root / f"{name}.log"
        hostport = dcs_url.removeprefix("http://")
        cfg: dict[str, Any] = {
            "scope": scope,
            "name": name,
            "log": {"level": "INFO"},
            "restapi": {"listen": f"127.0.0.1:{self.api_port}", "connect_address": f"127.0.0.1:{self.api_port}"},
            "etcd3": {"hosts": [hostport], "protocol": "http", "use_proxies": True},
            "bootstrap": {
                "dcs": {"ttl": 20, "loop_wait": 2, "retry_timeout": 5, "maximum_lag_on_failover": 1048576,
                        "postgresql": {"use_pg_rewind": False, "parameters": {"wal_level": "replica",
                                                                               "hot_standby": "on"}}},
                "initdb": [{"encoding": "UTF8"}, "data-checksums"],
                "pg_hba": ["local all all trust", "host replication replicator 127.0.0.1/32 trust",
                           "host all all 127.0.0.1/32 trust"],
            },
            "postgresql": {
                "listen": f"127.0.0.1:{self.pg_port}",
                "connect_address": f"127.0.0.1:{self.pg_port}",
                "data_dir": str(self.dir / "data"),
                "bin_dir": PG_BIN,
                "pgpass": str(self.dir / "pgpass"),
                "authentication": {"replication": {"username": "replicator", "password": "rep"},
                                   "superuser": {"username": "postgres", "password": "pg"}},
                "parameters": {"unix_socket_directories": str(self.dir), "max_connections": 20,
                               "shared_buffers": "16MB"},
            },
        }
        self.config = self.dir / "patroni.yml"
        self.config.write_text(yaml.safe_dump(cfg))
        pw = pwd.getpwnam("postgres")
        for p in (root, self.dir, self.config):
            os.chown(p, pw.pw_uid, pw.pw_gid)
        os.chmod(self.dir, 0o700)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> PatroniMember:
        logf = open(self.log, "ab")  # noqa: SIM115 - kept for the process's life
        pw = pwd.getpwnam("postgres")
        env = {"PATH": "/usr/bin:/bin", "HOME": str(self.dir), "LANG": "C.UTF-8"}
        self.proc = subprocess.Popen(["/usr/bin/patroni", str(self.config)], stdout=logf, stderr=subprocess.STDOUT,
                                     user=pw.pw_uid, group=pw.pw_gid, env=env, cwd=str(self.dir),
                                     start_new_session=True)
        logf.close()
        return self

    def status(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.api_port}/patroni", timeout=5) as r:
            return dict(json.loads(r.read()))

    def role(self) -> str | None:
        try:
            st = self.status()
        except Exception:
            return None
        if st.get("state") != "running":
            return None
        return str(st.get("role"))

    def kill_patroni(self) -> None:
        """SIGKILL Patroni alone (its PostgreSQL is stopped separately)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(30)

    def stop(self) -> None:
        """Patroni and its PostgreSQL, whatever state they are in."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(30)
        self.stop_postgres()

    def stop_postgres(self) -> None:
        data = self.dir / "data"
        pidfile = data / "postmaster.pid"
        if pidfile.exists():
            try:
                pid = int(pidfile.read_text().split()[0])
                os.kill(pid, signal.SIGQUIT)  # immediate shutdown
            except (OSError, ValueError, IndexError):
                pass

    def log_tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""
