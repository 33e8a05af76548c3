"""Bad input against a petcd member with auth on: floods of failed
Authenticate calls (bcrypt at etcd's default cost) and of random tokens
get etcd's errors while the member keeps answering other requests."""

from __future__ import annotations

import random
import string
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from petcd.proto import rpc_pb2, rpc_pb2_grpc
from petcd.testing.harness import Server, petcd_server

R = rpc_pb2


@pytest.fixture
def member(tmp_path: Path) -> Iterator[Server]:
    m = petcd_server(tmp_path).start()  # default --bcrypt-cost 10
    try:
        auth = rpc_pb2_grpc.AuthStub(m.channel())
        auth.UserAdd(R.AuthUserAddRequest(name="root", password="rootpw"), timeout=30)
        auth.UserGrantRole(R.AuthUserGrantRoleRequest(user="root", role="root"), timeout=30)
        auth.AuthEnable(R.AuthEnableRequest(), timeout=30)
        yield m
    finally:
        m.stop()


def test_failed_authenticate_flood_keeps_the_member_responsive(member: Server) -> None:
    ch = member.channel()
    auth, kv = rpc_pb2_grpc.AuthStub(ch), rpc_pb2_grpc.KVStub(ch)
    root = [("token", auth.Authenticate(R.AuthenticateRequest(name="root", password="rootpw"), timeout=30).token)]
    n = 200
    futures = [auth.Authenticate.future(R.AuthenticateRequest(name=random.choice(["root", "ghost"]),
                                                             password=f"wrong{i}"), timeout=120)
               for i in range(n)]
    worst = 0.0
    # while the bcrypt pool chews on the flood, other requests are answered
    while not all(f.done() for f in futures):
        t0 = time.monotonic()
        kv.Range(R.RangeRequest(key=b"k"), metadata=root, timeout=30)
        worst = max(worst, time.monotonic() - t0)
        time.sleep(0.05)
    for f in futures:
        exc = f.exception()
        assert isinstance(exc, grpc.RpcError)
        assert (exc.code(), exc.details()) == (
            grpc.StatusCode.INVALID_ARGUMENT, "etcdserver: authentication failed, invalid user ID or password")
    assert worst < 2.0, f"a Range took {worst:.2f}s during the flood"


def test_random_tokens_are_refused_quickly(member: Server) -> None:
    kv = rpc_pb2_grpc.KVStub(member.channel())
    rng = random.Random(5)
    for _ in range(2000):
        # no '.<digits>' tail: etcd would wait for such an index (see front.py)
        token = "".join(rng.choice(string.ascii_letters + "-_/+=") for _ in range(rng.randint(1, 64)))
        with pytest.raises(grpc.RpcError) as ei:
            kv.Range(R.RangeRequest(key=b"k"), metadata=[("token", token)], timeout=30)
        assert (ei.value.code(), ei.value.details()) == (grpc.StatusCode.UNAUTHENTICATED,
                                                         "etcdserver: invalid auth token")
    # a well-formed simple token from an index far ahead: refused when the call's deadline ends
    t0 = time.monotonic()
    with pytest.raises(grpc.RpcError) as ei:
        kv.Range(R.RangeRequest(key=b"k"), metadata=[("token", "abcdefghijklmnop.99999999")], timeout=1)
    assert ei.value.code() in (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNAUTHENTICATED)
    assert time.monotonic() - t0 < 10
    # and the member still serves
    kv.Range(R.RangeRequest(key=b"k", serializable=True),
             metadata=[("token", rpc_pb2_grpc.AuthStub(member.channel()).Authenticate(
                 R.AuthenticateRequest(name="root", password="rootpw"), timeout=30).token)], timeout=30)
