"""The client's guarantees under faults and contention: watches resume
across a member restart without loss or duplicates, leases survive it,
locks exclude across processes (checked with fencing tokens), and the STM
keeps a bank's total under concurrent transfers."""

from __future__ import annotations

import functools
import os
import random
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from petcd.client import STM, AuthFailed, Client, EtcdError, EventType, Isolation, LeaseLost, Unavailable
from petcd.testing.harness import Background, Server, etcdctl, free_port, wait_for


def test_watch_across_member_restart_delivers_every_event_once_in_order(
        start_server: Callable[[str], Server]) -> None:
    srv = start_server("petcd")
    n = 300
    seen: list[int] = []
    with Client(srv.endpoint, timeout=10) as c:
        lease = c.lease(30)
        with c.watch("ev/", prefix=True) as w:
            def consume() -> None:
                for ev in w:
                    assert ev.type is EventType.PUT
                    seen.append(int(ev.kv.value))
                    if len(seen) == n:
                        return

            t = threading.Thread(target=consume)
            t.start()
            for i in range(n // 2):
                c.put(f"ev/{i % 7}", str(i))
            srv.stop()  # the stream breaks; the client keeps retrying
            srv.start()
            for i in range(n // 2, n):
                while True:
                    try:
                        c.put(f"ev/{i % 7}", str(i))
                        break
                    except Unavailable:
                        time.sleep(0.05)  # a write that never reached the server: safe to repeat
            t.join(timeout=60)
            assert not t.is_alive(), f"watch stalled after {len(seen)} events"
        assert seen == list(range(n))
        assert not lease.lost
        assert lease.ttl() > 0  # the keep-alive resumed after the restart
        lease.revoke()


def test_lease_loss_is_reported(server: Server) -> None:
    with Client(server.endpoint, timeout=10) as c:
        with pytest.raises(LeaseLost), c.lease(5) as lease:
            c.put("k", "v", lease=lease)
            c.revoke_lease(lease.id)  # someone else revokes it
            wait_for(lambda: lease.lost, 30, "the keep-alive to notice the revoke")
            with pytest.raises(LeaseLost):
                lease.check()
        assert c.get("k") is None


LOCK_WORKER = r"""
import os, sys, time
from petcd.client import Client
endpoint, path, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3])
with Client(endpoint, timeout=20) as c:
    for _ in range(rounds):
        with c.lock("shared-file", ttl=10) as lock:
            tok = lock.fencing_token
            # the protected resource: refuses tokens older than the newest it saw
            with open(path, "r+") as f:
                last = int(f.read() or 0)
                assert tok > last, f"stale fencing token {tok} <= {last}"
                f.seek(0); f.write(str(tok)); f.truncate()
            start = time.monotonic_ns()
            time.sleep(0.01)
            end = time.monotonic_ns()
            with open(path + ".log", "a") as log:
                log.write(f"{tok} {start} {end} {os.getpid()}\n")
"""


def test_two_processes_contending_for_a_lock_never_overlap(server: Server, tmp_path: Path) -> None:
    shared = tmp_path / "resource"
    shared.write_text("0")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(Path(__file__).parents[2]), *sys.path]))
    procs = [subprocess.Popen([sys.executable, "-c", LOCK_WORKER, server.endpoint, str(shared), "15"], env=env)
             for _ in range(2)]
    for p in procs:
        assert p.wait(timeout=180) == 0
    rows = [tuple(int(x) for x in line.split()) for line in (tmp_path / "resource.log").read_text().splitlines()]
    assert len(rows) == 30
    assert len({r[3] for r in rows}) == 2
    rows.sort()  # by fencing token
    for a, b in zip(rows, rows[1:], strict=False):
        assert a[0] < b[0]
        assert a[2] <= b[1], f"holders overlapped: {a} and {b}"


def test_lock_excludes_etcdctl_lock(server: Server) -> None:
    """Our lock and etcdctl lock use the same keys, so they exclude each other both ways."""
    with Client(server.endpoint, timeout=10) as c:
        lock = c.lock("ctl")
        lock.acquire()
        ctl = Background(server.endpoint, "lock", "ctl")
        try:
            wait_for(lambda: len(c.get_prefix("ctl/")) == 2, 30, "etcdctl to queue for the lock")
            assert c.get_prefix("ctl/")[0].key == lock.key
            time.sleep(0.3)
            assert ctl.lines == []  # it waits behind us
            lock.release()
            got = ctl.wait_lines(1, timeout=30)  # etcdctl prints its key once it holds the lock
            assert got[0].startswith("ctl/") and got[0] != lock.key.decode()
            acquired = threading.Event()

            def take() -> None:
                with c.lock("ctl", ttl=5):
                    acquired.set()

            t = threading.Thread(target=take)
            t.start()
            assert not acquired.wait(0.5)  # now we wait behind etcdctl
            ctl.stop()  # etcdctl unlocks on SIGTERM
            t.join(timeout=60)
            assert acquired.is_set()
        finally:
            ctl.stop()


@pytest.mark.parametrize("isolation", [Isolation.SERIALIZABLE, Isolation.REPEATABLE_READ])
def test_stm_bank_transfers_keep_the_total(server: Server, isolation: Isolation) -> None:
    accounts = [f"bank/{i}" for i in range(6)]
    with Client(server.endpoint, timeout=20) as c:
        for a in accounts:
            c.put(a, "100")
        errors: list[BaseException] = []

        def worker(seed: int) -> None:
            rnd = random.Random(seed)
            try:
                for _ in range(25):
                    src, dst = rnd.sample(accounts, 2)
                    amount = rnd.randint(1, 30)

                    def transfer(s: STM, src: str = src, dst: str = dst, amount: int = amount) -> None:
                        a = int(s.get(src) or 0)
                        b = int(s.get(dst) or 0)
                        if a >= amount:
                            s.put(src, str(a - amount))
                            s.put(dst, str(b + amount))

                    c.stm(transfer, isolation=isolation)
            except BaseException as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for _ in range(10):  # the invariant holds at every snapshot, too
            kvs = c.get_prefix("bank/")
            assert sum(int(kv.value) for kv in kvs) == 600
        for t in threads:
            t.join(timeout=300)
        assert not errors, errors
        balances = [int(kv.value) for kv in c.get_prefix("bank/")]
        assert sum(balances) == 600 and min(balances) >= 0


def test_failover_to_the_next_endpoint(server: Server) -> None:
    dead = f"127.0.0.1:{free_port()}"
    with Client([dead, server.endpoint], timeout=10) as c:
        assert c.put("fo", "1") > 0  # refused connection: never sent, so even a write moves on
        assert c.get("fo") is not None
        assert c.endpoint == server.endpoint
    with Client(dead, timeout=1) as c, pytest.raises(Unavailable):
        c.get("fo")


@pytest.mark.parametrize("kind", ["etcd", "petcd"])
def test_auth_with_username_and_password(start_server: Callable[..., Server], kind: str) -> None:
    """Tokens live one second here, so the client must log in again by itself."""
    srv = start_server(kind, ["--auth-token-ttl", "1"])
    etcdctl(srv.endpoint, "user", "add", "root:rootpw")
    etcdctl(srv.endpoint, "auth", "enable")
    with Client(srv.client_url, username="root", password="rootpw", timeout=10) as c:
        c.put("secret", "s")
        with c.watch("secret") as w:
            c.put("secret", "t")
            assert next(w).kv.value == b"t"
        for first in ("watch", "get"):  # each path must log in again by itself
            token = c._metadata
            assert token is not None
            # etcd extends a token on each use: probe less often than its TTL
            wait_for(functools.partial(_token_refused, srv, token), 60, "etcd to expire the token", interval=2.5)
            if first == "watch":
                with c.watch("secret") as w:
                    c.put("secret", "u")
                    assert next(w).kv.value == b"u"
            else:
                assert c.get("secret") is not None
            assert c._metadata != token
    with Client(srv.endpoint, timeout=10) as anon, pytest.raises(EtcdError):
        anon.get("secret")
    with Client(srv.endpoint, username="root", password="wrong", timeout=10) as bad, pytest.raises(AuthFailed):
        bad.get("secret")


def _token_refused(srv: Server, token: tuple[tuple[str, str], ...]) -> bool:
    import grpc

    from petcd.proto import rpc_pb2, rpc_pb2_grpc

    with grpc.insecure_channel(srv.endpoint) as ch:
        try:
            rpc_pb2_grpc.KVStub(ch).Range(rpc_pb2.RangeRequest(key=b"secret"), metadata=token, timeout=5)
        except grpc.RpcError as exc:
            return "invalid auth token" in (exc.details() or "")
    return False


def test_tls_with_client_certificates_against_etcd(tmp_path: Path) -> None:
    from petcd.testing.certs import CA
    from petcd.testing.harness import etcd_server

    node = CA(tmp_path / "pki").issue("node", hosts=("127.0.0.1",))
    ca, cert, key = node.ca, node.cert, node.key
    srv = etcd_server(tmp_path, extra=["--cert-file", str(cert), "--key-file", str(key),
                                       "--client-cert-auth", "--trusted-ca-file", str(ca)])
    srv.client_url = srv.client_url.replace("http://", "https://")
    srv.args = [a.replace("http://127.0.0.1:" + srv.endpoint.rsplit(":", 1)[1],
                          "https://127.0.0.1:" + srv.endpoint.rsplit(":", 1)[1]) for a in srv.args]
    srv.launch()
    try:
        with Client(srv.client_url, ca_cert=ca, cert=cert, key=key.read_bytes(), timeout=10) as c:
            wait_for(lambda: c.status().leader != 0, 60, "etcd over TLS to elect itself")
            assert c.put("tls", "yes") > 0
            assert c.get("tls") is not None
        with Client(srv.client_url, ca_cert=ca, timeout=3) as no_cert, pytest.raises(EtcdError):
            no_cert.get("tls")  # the server demands a client certificate
    finally:
        srv.kill()


def test_watch_and_lease_survive_a_leader_change(tmp_path: Path) -> None:
    """The leader is killed: the client moves to another member; the watch
    resumes there and delivers every event once, in order; the lease kept
    alive through it is still alive."""
    from petcd.client import Compare, Op
    from petcd.testing.harness import petcd_cluster

    members = petcd_cluster(tmp_path, 3)
    try:
        def member_id(m: Server) -> int:
            with Client(m.endpoint, timeout=10) as one:
                return int(one.status().header.member_id)

        with Client(members[0].endpoint, timeout=10) as probe:
            leader_id = probe.status().leader
        leader = next(m for m in members if member_id(m) == leader_id)
        others = [m for m in members if m is not leader]
        # the watching client talks to the leader first, so killing it forces a failover
        with Client([leader.endpoint] + [m.endpoint for m in others], timeout=10) as c, \
                Client([m.endpoint for m in others], timeout=10) as writer:
            lease = c.lease(5)
            n = 120
            seen: list[int] = []
            with c.watch("lc/", prefix=True) as w:
                def consume() -> None:
                    for ev in w:
                        seen.append(int(ev.kv.value))
                        if len(seen) == n:
                            return

                t = threading.Thread(target=consume)
                t.start()

                def write(i: int) -> None:
                    key = f"lc/{i:04d}"
                    while True:  # create-if-absent: repeating after an unknown outcome cannot write twice
                        try:
                            writer.txn([Compare.create_revision(key) == 0], [Op.put(key, str(i))])
                            return
                        except EtcdError:
                            time.sleep(0.1)

                for i in range(n // 2):
                    write(i)
                leader.kill()
                for i in range(n // 2, n):
                    write(i)
                t.join(timeout=120)
                assert not t.is_alive(), f"watch stalled after {len(seen)} events"
            assert seen == list(range(n))
            assert c.endpoint != leader.endpoint
            time.sleep(6)  # longer than the lease's TTL: only keep-alives on the new leader keep it
            assert not lease.lost
            assert lease.ttl() > 0
            lease.revoke()
    finally:
        for m in members:
            m.kill()


def test_async_watch_across_member_restart(start_server: Callable[..., Server]) -> None:
    import asyncio

    from petcd.client import AsyncClient

    srv = start_server("petcd")
    n = 100

    async def main() -> list[int]:
        seen: list[int] = []
        async with AsyncClient(srv.endpoint, timeout=10) as c, c.watch("aev/", prefix=True) as w:
            async def consume() -> None:
                async for ev in w:
                    seen.append(int(ev.kv.value))
                    if len(seen) == n:
                        return

            task = asyncio.create_task(consume())
            for i in range(n // 2):
                await c.put(f"aev/{i % 5}", str(i))
            await asyncio.to_thread(srv.stop)
            await asyncio.to_thread(srv.start)
            for i in range(n // 2, n):
                while True:
                    try:
                        await c.put(f"aev/{i % 5}", str(i))
                        break
                    except Unavailable:
                        await asyncio.sleep(0.05)
            await asyncio.wait_for(task, 60)
        return seen

    assert asyncio.run(main()) == list(range(n))


def test_lease_unrenewable_past_its_ttl_is_reported_lost(server: Server) -> None:
    import signal

    assert server.proc is not None
    with Client(server.endpoint) as c:  # no client timeout: the keep-alive bounds its own calls
        lease = c.lease(2)
        server.proc.send_signal(signal.SIGSTOP)  # the member hangs: keep-alives get no answer
        try:
            wait_for(lambda: lease.lost, 20, "the client to give the lease up")
        finally:
            server.proc.send_signal(signal.SIGCONT)
        with pytest.raises(LeaseLost):
            lease.check()
