"""The README's "Moving from etcd" commands, run as printed (with $ETCD,
$PETCD and $PETCD_PEER set to this test's ports, and `petcd` being this
tree's), against a real etcd: each step's result is checked."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from petcd.proto import rpc_pb2, rpc_pb2_grpc
from petcd.testing.harness import etcd_server, free_port, require_binary, wait_for

pytestmark = pytest.mark.timeout(600)

REPO = Path(__file__).resolve().parents[2]


def readme_blocks() -> list[list[str]]:
    """The section's sh blocks, each a list of commands (continuations joined)."""
    text = (REPO / "README.md").read_text()
    section = text.split("## Moving from etcd", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```sh\n(.*?)```", section, re.S)
    return [[c for c in (line.strip() for line in b.replace("\\\n", " ").splitlines()) if c] for b in blocks]


def _pairs(endpoint: str) -> list[tuple[bytes, bytes, int, int, int]]:
    import grpc

    with grpc.insecure_channel(endpoint) as ch:
        got = rpc_pb2_grpc.KVStub(ch).Range(rpc_pb2.RangeRequest(key=b"\0", range_end=b"\0"), timeout=30)
    return [(kv.key, kv.value, kv.create_revision, kv.mod_revision, kv.version) for kv in got.kvs]


class Shell:
    """Runs README lines in one directory with the test's environment; lines
    ending in '&' become background processes, stopped by process group."""

    def __init__(self, cwd: Path, env: dict[str, str]) -> None:
        self.cwd = cwd
        self.env = env
        self.background: list[subprocess.Popen[bytes]] = []

    def run(self, line: str) -> str:
        if line.endswith("&"):
            log = open(self.cwd / f"bg{len(self.background)}.log", "wb")  # noqa: SIM115 - the process's lifetime
            self.background.append(subprocess.Popen(["bash", "-c", "exec " + line[:-1]], cwd=self.cwd, env=self.env,
                                                    stdout=log, stderr=subprocess.STDOUT, start_new_session=True))
            log.close()
            return ""
        cp = subprocess.run(["bash", "-c", line], cwd=self.cwd, env=self.env, capture_output=True, text=True,
                            timeout=120)
        assert cp.returncode == 0, f"{line!r} failed: {cp.stderr}{cp.stdout}"
        return cp.stdout

    def stop_background(self) -> None:
        for p in self.background:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
                try:
                    p.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.killpg(p.pid, signal.SIGKILL)
                    p.wait(timeout=30)
        self.background = []


def _ready(endpoint: str) -> bool:
    import grpc

    with grpc.insecure_channel(endpoint) as ch:
        return rpc_pb2_grpc.MaintenanceStub(ch).Status(rpc_pb2.StatusRequest(), timeout=2).leader != 0


def test_readme_moving_from_etcd(tmp_path: Path) -> None:
    require_binary("etcdctl")
    snapshot_block, back_block, mirror_block, migrate_block = readme_blocks()
    bindir = tmp_path / "bin"
    bindir.mkdir()
    shim = bindir / "petcd"
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m petcd "$@"\n')
    shim.chmod(0o755)
    work = tmp_path / "work"
    work.mkdir()

    etcd = etcd_server(tmp_path)
    etcd.data_dir = work / "default.etcd"
    etcd.args[etcd.args.index("--data-dir") + 1] = str(etcd.data_dir)
    etcd.start()
    petcd_ep = f"127.0.0.1:{free_port()}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ETCD")}
    env.update(PATH=f"{bindir}{os.pathsep}{os.environ['PATH']}", ETCDCTL_API="3", ETCD=etcd.endpoint,
               PETCD=petcd_ep, PETCD_PEER=f"127.0.0.1:{free_port()}",
               PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    sh = Shell(work, env)
    try:
        kv = etcd.kv()
        for i in range(200):
            kv.Put(rpc_pb2.PutRequest(key=b"app/%03d" % (i % 150), value=b"v%d" % i), timeout=30)

        # etcd -> petcd from a snapshot
        out = ""
        for line in snapshot_block:
            out = sh.run(line)
            if line.endswith("&"):
                wait_for(lambda: _ready(petcd_ep), 60, "the restored petcd to serve")
        assert out.split() == [k.decode() for k, *_ in _pairs(etcd.endpoint)]
        assert _pairs(petcd_ep) == _pairs(etcd.endpoint)

        # petcd -> etcd
        for line in back_block:
            sh.run(line)
        (tmp_path / "back").mkdir()
        back = etcd_server(tmp_path / "back")  # started as the README's comment says
        back.data_dir = work / "back.etcd"
        back.args[back.args.index("--data-dir") + 1] = str(back.data_dir)
        back.start()
        try:
            assert _pairs(back.endpoint) == _pairs(petcd_ep)
        finally:
            back.stop()

        # a continuous mirror while etcd takes new writes
        for i in range(50):
            kv.Put(rpc_pb2.PutRequest(key=b"mirror/%02d" % i, value=b"m"), timeout=30)
        [mirror_line] = mirror_block
        sh.run(mirror_line + " &")
        want = {k for k, *_ in _pairs(etcd.endpoint)}
        wait_for(lambda: {k for k, *_ in _pairs(petcd_ep)} >= want, 120, "make-mirror to copy the new keys")
        sh.stop_background()

        # migrate etcd's own data dir in place, and serve it
        final = _pairs(etcd.endpoint)
        sh.stop_background()  # the restored petcd gives its ports to the migrated member
        etcd.stop()
        for line in migrate_block:
            sh.run(line)
            if line.endswith("&"):
                wait_for(lambda: _ready(petcd_ep), 60, "the migrated petcd to serve")
        assert (work / "default.etcd.etcd-backup" / "member" / "snap" / "db").is_file()
        assert _pairs(petcd_ep) == final
    finally:
        sh.stop_background()
        etcd.stop()


def test_readme_blocks_are_where_the_test_expects() -> None:
    blocks = readme_blocks()
    assert len(blocks) == 4
    assert blocks[0][0].startswith("etcdctl --endpoints=$ETCD snapshot save")
    assert blocks[3][0] == "petcd migrate --data-dir default.etcd"
