"""Auth differential over the wire: one seeded sequence of user, role,
permission, enable/disable, key, txn and watch operations under several
users (some denied), sent over gRPC to real etcd 3.4 and to a petcd member;
every answer (result or error code and text, watch created/canceled and
cancel reason) must be the same."""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from petcd.proto import rpc_pb2, rpc_pb2_grpc
from petcd.testing.harness import Server, etcd_server, petcd_server
from tests.auth.test_store_vs_etcd import KEYS, USERS, EtcdSide, Outcome, _request, _reset

R = rpc_pb2
SEEDS = [int(x) for x in os.environ.get("AUTH_WIRE_SEEDS", "5,6").split(",")]


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Server]]:
    e = etcd_server(tmp_path_factory.mktemp("etcd"), ["--bcrypt-cost", "4"]).start()
    try:
        p = petcd_server(tmp_path_factory.mktemp("petcd"), extra=["--bcrypt-cost", "4"]).start()
        try:
            yield e, p
        finally:
            p.stop()
    finally:
        e.stop()


class WireSide(EtcdSide):
    def __init__(self, server: Server) -> None:
        super().__init__(server)
        self.watch_stub = rpc_pb2_grpc.WatchStub(server.channel())

    def run(self, field: str, req: Any, md: list[tuple[str, str]] | None) -> Outcome:
        if field == "txn":
            try:
                resp = self.kv.Txn(req, metadata=md, timeout=10)
            except grpc.RpcError as exc:
                return "error", (exc.code().name, exc.details())
            return "ok", resp.succeeded
        if field == "watch":
            return self._watch(req, md)
        return super().run(field, req, md)

    def _watch(self, req: rpc_pb2.WatchCreateRequest, md: list[tuple[str, str]] | None) -> Outcome:
        call = self.watch_stub.Watch(iter([R.WatchRequest(create_request=req)]), metadata=md, timeout=10)
        try:
            first = next(iter(call))
        except grpc.RpcError as exc:
            return "error", (exc.code().name, exc.details())
        finally:
            call.cancel()
        return "ok", (first.created, first.canceled, first.cancel_reason, first.watch_id if first.canceled else 0)


def _wire_request(rng: random.Random) -> tuple[str, Any]:
    roll = rng.random()
    if roll < 0.12:
        k = rng.choice(KEYS)
        end = rng.choice([b"", *(x for x in KEYS if x > k)])
        return "watch", R.WatchCreateRequest(key=k, range_end=end)
    if roll < 0.24:
        def op() -> rpc_pb2.RequestOp:
            k = rng.choice(KEYS)
            kind = rng.choice(["put", "range", "delete"])
            if kind == "put":
                return R.RequestOp(request_put=R.PutRequest(key=k, value=b"t"))
            if kind == "range":
                return R.RequestOp(request_range=R.RangeRequest(key=k))
            return R.RequestOp(request_delete_range=R.DeleteRangeRequest(key=k))
        return "txn", R.TxnRequest(
            compare=[R.Compare(key=rng.choice(KEYS), target=R.Compare.VERSION, result=R.Compare.GREATER, version=0)
                     for _ in range(rng.randint(0, 2))],
            success=[op() for _ in range(rng.randint(0, 2))],
            failure=[op() for _ in range(rng.randint(0, 2))],
        )
    return _request(rng)


@pytest.mark.parametrize("seed", SEEDS)
def test_same_answers_as_etcd_over_grpc(servers: tuple[Server, Server], seed: int, tmp_path: Path) -> None:
    etcd, petcd = servers
    rng = random.Random(seed)
    e, p = WireSide(etcd), WireSide(petcd)
    _reset(e)
    _reset(p)
    setup: list[tuple[str, Any]] = [
        *[("auth_user_add", R.AuthUserAddRequest(name=u, password=f"pw-{u}")) for u in USERS if u != "np"],
        ("auth_user_grant_role", R.AuthUserGrantRoleRequest(user="root", role="root")),
        ("auth_role_add", R.AuthRoleAddRequest(name="r1")),
        ("auth_role_add", R.AuthRoleAddRequest(name="r2")),
        ("auth_user_grant_role", R.AuthUserGrantRoleRequest(user="u1", role="r1")),
        ("auth_user_grant_role", R.AuthUserGrantRoleRequest(user="u2", role="r2")),
        ("auth_enable", R.AuthEnableRequest()),
    ]
    log: list[str] = []
    enabled = False
    for step in range(250):
        field, req = setup[step] if step < len(setup) else _wire_request(rng)
        actor = rng.choice([None, "root", "u1", "u2", "u2", "np"]) if step >= len(setup) else "root"
        who = actor if enabled else None
        e_login, e_md = e.login(who)
        p_login, p_md = p.login(who)
        assert e_login == p_login, f"step {step}: login {who}: etcd {e_login} petcd {p_login}\n" + "\n".join(log)
        if e_login is not None:
            continue
        got_e = e.run(field, req, e_md)
        got_p = p.run(field, req, p_md)
        log.append(f"{step}: {who} {field} {str(req).strip()!r} -> etcd {got_e}")
        assert got_e == got_p, f"step {step}: petcd {got_p}\n" + "\n".join(log[-30:])
        if field in ("auth_enable", "auth_disable") and got_e[0] == "ok":
            enabled = field == "auth_enable"
    if os.environ.get("AUTH_DIFF_LOG"):
        Path(os.environ["AUTH_DIFF_LOG"]).write_text("\n".join(log))
