"""The peer transport over TLS (petcd/server/transport/tls.py), in process over real sockets:
mutual TLS, refusal of a certificate from another CA and of the wrong common name, plain
peers on a TLS port, handshakes that stall or send garbage, rotation, and auto TLS."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import ssl
import time
from pathlib import Path
from typing import Any

import pytest

from petcd.raft import Message, MessageType, Snapshot
from petcd.server.config import ServerConfig
from petcd.server.transport import BadURLError
from petcd.server.transport.tls import PeerTLS, TLSConfigError, common_name, peer_tls_from_config
from petcd.testing.certs import CA, CertFiles
from tests.server.transport_nodes import (
    heartbeat,
    hung_up,
    link,
    make_node,
    opening,
    started,
    wait_until,
)


def tls_of(files: CertFiles, **kwargs: Any) -> PeerTLS:
    return PeerTLS(str(files.cert), str(files.key), str(files.ca), **kwargs)


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 90))


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, CertFiles]:
    d = tmp_path_factory.mktemp("pki")
    ca, rogue = CA(d / "ca"), CA(d / "rogue", "rogue CA")
    return {
        "a": ca.issue("peer", file_name="a"),
        "b": ca.issue("peer", file_name="b"),
        "other-cn": ca.issue("intruder", file_name="other-cn"),
        "wrong-host": ca.issue("peer", hosts=("10.9.9.9",), file_name="wrong-host"),
        "rogue": rogue.issue("peer", file_name="rogue"),
    }


def test_members_exchange_messages_and_snapshots_over_mutual_tls(pki: dict[str, CertFiles]) -> None:
    a = make_node(0xA1, tls_of(pki["a"], client_cert_auth=True, allowed_cn="peer"))
    b = make_node(0xB2, tls_of(pki["b"], client_cert_auth=True, allowed_cn="peer"))

    async def main() -> None:
        async with started(a, b):
            link(a, b)
            a.transport.send([heartbeat(a.id, b.id, i) for i in range(50)])
            b.transport.send([heartbeat(b.id, a.id, 7)])
            await wait_until(lambda: len(b.received) == 50 and len(a.received) == 1, what="delivery over TLS")
            assert [m.commit for m in b.received] == list(range(50))
            snap = Message(MessageType.MsgSnap, to=b.id, from_=a.id, term=3, snapshot=Snapshot(b"s" * 3_000_000))
            a.transport.send([snap])
            await wait_until(lambda: a.snapshot_status == [(b.id, True)], what="the snapshot ack")
            assert b.received[-1] == snap

    run(main())


@pytest.mark.parametrize("who", ["rogue", "other-cn"])
def test_a_peer_with_a_foreign_or_wrongly_named_certificate_is_refused(
        pki: dict[str, CertFiles], who: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="petcd.server.transport")
    b = make_node(0xB2, tls_of(pki["b"], client_cert_auth=True, allowed_cn="peer"))
    # The intruder trusts b's CA, so that only b's check of the intruder's certificate can stop it.
    intruder = make_node(0xA1, PeerTLS(str(pki[who].cert), str(pki[who].key), str(pki["b"].ca)))

    async def main() -> None:
        async with started(b, intruder):
            host, port = b.transport.addresses[0]
            # The transport's own dialer: nothing it sends is delivered.
            intruder.transport.add_peer(b.id, [b.url])
            for i in range(20):
                intruder.transport.send([heartbeat(intruder.id, b.id, i)])
                await asyncio.sleep(0.02)
            # A hand-made TLS client with the intruder's certificate: b hangs up before reading raft.
            ctx = ssl.create_default_context(cafile=str(pki["b"].ca))
            ctx.load_cert_chain(str(pki[who].cert), str(pki[who].key))
            try:
                r, w = await asyncio.open_connection(host, port, ssl=ctx, server_hostname="127.0.0.1")
            except (ssl.SSLError, ConnectionError):
                pass  # refused within the handshake (TLS 1.2); 1.3 tells the client on its first read
            else:
                w.write(opening(heartbeat(intruder.id, b.id, 99)))
                assert await hung_up(r)
                w.close()
            # And without any certificate at all.
            bare = ssl.create_default_context(cafile=str(pki["b"].ca))
            try:
                r, w = await asyncio.open_connection(host, port, ssl=bare, server_hostname="127.0.0.1")
            except (ssl.SSLError, ConnectionError):
                pass
            else:
                w.write(opening(heartbeat(intruder.id, b.id, 98)))
                assert await hung_up(r)
                w.close()
            assert b.received == []
            if who == "other-cn":
                assert any("CommonName authentication failed" in r.getMessage() for r in caplog.records)

    run(main())


@pytest.mark.parametrize(("who", "reason"), [("rogue", "certificate verify failed"),
                                           ("wrong-host", "IP address mismatch"),
                                           ("other-cn", "CommonName authentication failed")])
def test_the_dialer_checks_the_certificate_of_the_member_it_dials(
        pki: dict[str, CertFiles], who: str, reason: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="petcd.server.transport")
    a = make_node(0xA1, tls_of(pki["a"], allowed_cn="peer"))
    impostor = make_node(0xB2, PeerTLS(str(pki[who].cert), str(pki[who].key), str(pki["a"].ca)))

    async def main() -> None:
        async with started(a, impostor):
            a.transport.add_peer(impostor.id, [impostor.url])
            a.transport.send([heartbeat(a.id, impostor.id, 1)])
            await wait_until(lambda: any(reason in r.getMessage() for r in caplog.records),
                             what=f"a refusal of the {who} certificate")
            snap = Message(MessageType.MsgSnap, to=impostor.id, from_=a.id, term=3, snapshot=Snapshot(b"s"))
            a.transport.send([snap])
            await wait_until(lambda: a.snapshot_status == [(impostor.id, False)], what="the snapshot failure")
            assert impostor.received == []

    run(main())


def test_plain_peers_stalled_and_garbage_handshakes_do_not_hurt_the_listener(pki: dict[str, CertFiles]) -> None:
    a = make_node(0xA1, tls_of(pki["a"], client_cert_auth=True))
    b = make_node(0xB2, tls_of(pki["b"], client_cert_auth=True))

    async def main() -> None:
        async with started(a, b):
            host, port = b.transport.addresses[0]
            conns = []
            # plain TCP speaking the raft protocol to a TLS port
            r, w = await asyncio.open_connection(host, port)
            w.write(opening(heartbeat(a.id, b.id, 1)))
            conns.append((r, w))
            # garbage, a TLS record header followed by garbage, and an HTTP request
            for junk in (os.urandom(4096), b"\x16\x03\x01\x02\x00" + os.urandom(600), b"GET / HTTP/1.1\r\n\r\n"):
                r, w = await asyncio.open_connection(host, port)
                w.write(junk)
                conns.append((r, w))
            for r, w in conns:
                assert await hung_up(r)
                w.close()
            # connections that start a handshake (or not) and stall: they do not block the others
            stalled = []
            for i in range(20):
                r, w = await asyncio.open_connection(host, port)
                if i % 2:
                    w.write(b"\x16\x03\x01\x00\xff\x01")  # the start of a ClientHello, never finished
                stalled.append((r, w))
            link(a, b)
            a.transport.send([heartbeat(a.id, b.id, i) for i in range(10)])
            await wait_until(lambda: len(b.received) == 10, what="the real peer's messages past the stalled ones")
            # The stalled ones are dropped at the TLS handshake timeout.
            for r, w in stalled:
                assert await hung_up(r, timeout=30)
                w.close()
            assert [m.commit for m in b.received] == list(range(10))

    run(main())


def test_rotated_certificate_files_are_used_for_new_connections(tmp_path: Path, pki: dict[str, CertFiles]) -> None:
    ca2 = CA(tmp_path / "ca2", "second CA")
    live = CertFiles(tmp_path / "live.pem", tmp_path / "live.key", tmp_path / "live-ca.pem")
    for src, dst in zip((pki["b"].cert, pki["b"].key, pki["b"].ca), (live.cert, live.key, live.ca), strict=True):
        shutil.copy(src, dst)
    b = make_node(0xB2, tls_of(live, client_cert_auth=True))

    async def peer_cert_cn(host: str, port: int, ctx: ssl.SSLContext) -> str | None:
        r, w = await asyncio.open_connection(host, port, ssl=ctx, server_hostname="127.0.0.1")
        cn = common_name(w.get_extra_info("peercert"))
        w.close()
        return cn

    async def main() -> None:
        async with started(b):
            host, port = b.transport.addresses[0]
            old = ssl.create_default_context(cafile=str(pki["a"].ca))
            old.load_cert_chain(str(pki["a"].cert), str(pki["a"].key))
            assert await peer_cert_cn(host, port, old) == "peer"
            # Rotate b to a certificate (and CA) of the second CA, files replaced in place.
            new = ca2.issue("rotated", file_name="rotated")
            client = ca2.issue("client2", file_name="client2")
            for src, dst in zip((new.cert, new.key, new.ca), (live.cert, live.key, live.ca), strict=True):
                shutil.copy(src, dst)
                os.utime(dst, ns=(time.time_ns() + 10**9, time.time_ns() + 10**9))
            ctx = ssl.create_default_context(cafile=str(ca2.ca_file))
            ctx.load_cert_chain(str(client.cert), str(client.key))
            assert await peer_cert_cn(host, port, ctx) == "rotated"
            # A broken set (a key that does not match) keeps the last good one.
            shutil.copy(pki["a"].key, live.key)
            os.utime(live.key, ns=(time.time_ns() + 2 * 10**9, time.time_ns() + 2 * 10**9))
            assert await peer_cert_cn(host, port, ctx) == "rotated"

    run(main())


def test_auto_tls_members_talk_and_keep_their_certificate(tmp_path: Path) -> None:
    def cfg(name: str) -> ServerConfig:
        return ServerConfig(name=name, data_dir=str(tmp_path / name), peer_auto_tls=True,
                            listen_peer_urls=["https://127.0.0.1:0"])

    tls_a, tls_b = peer_tls_from_config(cfg("a")), peer_tls_from_config(cfg("b"))
    assert tls_a is not None and tls_b is not None
    cert = tmp_path / "a" / "fixtures" / "peer" / "cert.pem"
    first = cert.read_bytes()
    assert oct((tmp_path / "a" / "fixtures" / "peer" / "key.pem").stat().st_mode & 0o777) == "0o600"
    again = peer_tls_from_config(cfg("a"))  # a restart keeps the certificate
    assert again is not None and cert.read_bytes() == first
    a, b = make_node(0xA1, tls_a), make_node(0xB2, tls_b)

    async def main() -> None:
        async with started(a, b):
            link(a, b)
            a.transport.send([heartbeat(a.id, b.id, 5)])
            await wait_until(lambda: len(b.received) == 1, what="delivery between auto-TLS members")

    run(main())


def test_tls_settings_that_cannot_work_are_refused(tmp_path: Path, pki: dict[str, CertFiles]) -> None:
    with pytest.raises(BadURLError, match="cannot listen on TLS for 127.0.0.1:0: KeyFile and CertFile are not presented"):
        make_node(1, scheme="https")
    with pytest.raises(TLSConfigError, match=f"open {tmp_path}/missing.pem: no such file or directory"):
        PeerTLS(str(tmp_path / "missing.pem"), str(pki["a"].key))
    with pytest.raises(TLSConfigError, match="cannot load TLS files .*key values mismatch"):
        PeerTLS(str(pki["a"].cert), str(pki["b"].key))  # a key of another certificate
    # A member without peer TLS cannot dial an https peer, and says why; it does not crash.
    plain = make_node(0xA1)
    b = make_node(0xB2, tls_of(pki["b"]))

    async def main() -> None:
        async with started(plain, b):
            plain.transport.add_peer(b.id, [b.url])
            plain.transport.send([heartbeat(plain.id, b.id, 1)])
            await asyncio.sleep(0)
            plain.transport.send([heartbeat(plain.id, b.id, 2)])

    run(main())
