"""Bootstrap and the server's life cycle: each case opens what it needs and
a failed start leaves nothing open; ``done`` says when a member stops."""

from __future__ import annotations

import asyncio
import os
import socket
from pathlib import Path

import pytest

from petcd.proto import rpc_pb2 as pb
from petcd.server.bootstrap import bootstrap
from petcd.server.config import ConfigError, ServerConfig
from petcd.server.etcd_server import EtcdServer
from petcd.server.transport import TransportError

from .conftest import Member, member_config, start_member


def open_files_under(path: Path) -> list[str]:
    """Files of this process that lie under path (by /proc/self/fd)."""
    root = str(path.resolve())
    out = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith(root):
            out.append(target)
    return out


def test_new_then_restart(tmp_path: Path) -> None:
    cfg = member_config(tmp_path / "m")

    async def open_close() -> tuple[list[int], list[int], int, int]:
        boot = await bootstrap(cfg)
        try:
            return boot.peers, boot.state.membership.voter_ids(), boot.member_id, boot.cluster_id
        finally:
            boot.close()

    peers, voters, member_id, cluster_id = asyncio.run(open_close())
    assert peers == voters and len(peers) == 1  # a new cluster starts raft with its voters
    # raft never ran: the next start begins the same way again
    assert asyncio.run(open_close()) == (peers, voters, member_id, cluster_id)
    m = start_member(cfg)
    m.kv.Put(pb.PutRequest(key=b"k", value=b"v"))
    m.stop()
    peers, voters, again_id, _ = asyncio.run(open_close())
    assert peers == [] and voters == [member_id] and again_id == member_id  # a restart: raft's members from the WAL
    assert open_files_under(tmp_path) == []


def test_a_join_that_fails_leaves_nothing_behind(tmp_path: Path) -> None:
    with socket.socket() as s:  # a peer URL where nobody listens
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    cfg = member_config(tmp_path / "j", initial_cluster_state="existing")
    cfg.initial_cluster = f"other={dead},default={cfg.initial_advertise_peer_urls[0]}"
    with pytest.raises(TransportError):
        asyncio.run(bootstrap(cfg))
    assert open_files_under(tmp_path) == []
    assert not (tmp_path / "j" / "member" / "wal").exists()  # the next start may still join


def test_a_join_of_a_member_not_added_is_refused_and_closes_everything(member: Member, tmp_path: Path) -> None:
    cfg = member_config(tmp_path / "j", initial_cluster_state="existing")
    cfg.initial_cluster = (f"default={member.cfg.initial_advertise_peer_urls[0]},"
                           f"j={cfg.initial_advertise_peer_urls[0]}")
    cfg.name = "j"
    with pytest.raises(ConfigError, match="has not been added to the cluster"):
        asyncio.run(bootstrap(cfg))
    assert open_files_under(tmp_path / "j") == []


def test_a_start_that_fails_after_bootstrap_closes_what_bootstrap_opened(tmp_path: Path) -> None:
    cfg = member_config(tmp_path / "m")
    with socket.socket() as busy:  # the peer port is taken
        busy.bind(("127.0.0.1", int(cfg.listen_peer_urls[0].rsplit(":", 1)[1])))
        busy.listen()

        async def start() -> None:
            server = await EtcdServer.create(cfg)
            await server.start()

        with pytest.raises(OSError):
            asyncio.run(start())
    assert open_files_under(tmp_path) == []
    m = start_member(cfg)  # the WAL lock was released: the member starts now
    try:
        m.kv.Put(pb.PutRequest(key=b"k", value=b"v"))
    finally:
        m.stop()


def test_done_resolves_on_stop_and_on_failure(tmp_path: Path) -> None:
    async def scenario() -> tuple[object, object]:
        cfg: ServerConfig = member_config(tmp_path / "a")
        server = await EtcdServer.create(cfg)
        await server.start()
        assert not server.done.done()
        failure = RuntimeError("disk on fire")
        server.node.failed = failure  # as a failed backend commit records it
        got_failure = await asyncio.wait_for(asyncio.shield(server.done), 30)
        await server.stop()
        other = await EtcdServer.create(member_config(tmp_path / "b"))
        await other.start()
        await other.stop()
        return got_failure, await asyncio.wait_for(other.done, 30)

    failure, stopped = asyncio.run(scenario())
    assert isinstance(failure, RuntimeError) and stopped is None
