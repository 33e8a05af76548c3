"""Auth through the gateway, against etcd 3.4: users and roles by JSON,
auth enabled, the token from /v3/auth/authenticate in the Authorization
header, refusals without it."""

from __future__ import annotations

from typing import Any

from petcd.testing.harness import Server

from .client import Http
from .test_differential import Ids, normalise


def scenario(url: str) -> list[Any]:
    h = Http(url)
    ids = Ids()
    out: list[Any] = []

    def call(path: str, body: dict[str, Any], token: str | None = None) -> Any:
        st, resp = h.post(path, body, {"Authorization": token} if token else None)
        if isinstance(resp, dict):
            resp.pop("token", None)
        out.append((path, st, normalise(resp, ids)))
        return resp

    call("/v3/auth/user/add", {"name": "root", "password": "pw"})
    call("/v3/auth/user/grant", {"user": "root", "role": "root"})
    call("/v3/auth/user/add", {"name": "alice", "password": "a"})
    call("/v3/auth/role/add", {"name": "reader"})
    call("/v3/auth/role/grant", {"name": "reader", "perm": {"permType": "READ", "key": "YQ==", "range_end": "Yg=="}})
    call("/v3/auth/user/grant", {"user": "alice", "role": "reader"})
    call("/v3/auth/enable", {})
    call("/v3/kv/put", {"key": "YQ==", "value": "eA=="})
    st, auth = h.post("/v3/auth/authenticate", {"name": "root", "password": "pw"})
    out.append(("authenticate", st, sorted(auth)))
    root = auth["token"]
    call("/v3/kv/put", {"key": "YQ==", "value": "eA=="}, root)
    call("/v3/auth/authenticate", {"name": "root", "password": "wrong"})
    alice = h.post("/v3/auth/authenticate", {"name": "alice", "password": "a"})[1]["token"]
    call("/v3/kv/range", {"key": "YQ=="}, alice)
    call("/v3/kv/put", {"key": "YQ==", "value": "eQ=="}, alice)
    call("/v3/kv/range", {"key": "YQ=="}, "not-a-token")
    call("/v3/auth/role/get", {"role": "reader"}, root)
    call("/v3/auth/user/list", {}, root)
    call("/v3/auth/disable", {}, root)
    call("/v3/kv/range", {"key": "YQ=="})
    h.close()
    return out


def test_auth_same_as_etcd(petcd_gw: str, etcd: Server) -> None:
    ours, theirs = scenario(petcd_gw), scenario(etcd.client_url)
    diffs = [(o, t) for o, t in zip(ours, theirs, strict=True) if o != t]
    assert not diffs, "\n".join(f"petcd: {o}\netcd:  {t}" for o, t in diffs)
