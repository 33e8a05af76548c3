"""The auth flags: --auth-token, --auth-token-ttl, --bcrypt-cost (etcd's
names, defaults and ETCD_* variables)."""

from __future__ import annotations

from petcd.server.config import ServerConfig
from petcd.server.flags import FLAGS, UNSUPPORTED, parse


def test_defaults_are_etcds() -> None:
    c = ServerConfig()
    assert (c.auth_token, c.auth_token_ttl, c.bcrypt_cost) == ("simple", 300, 10)
    for name in ("auth-token", "auth-token-ttl", "bcrypt-cost"):
        assert name in FLAGS and name not in UNSUPPORTED


def test_flags_and_environment() -> None:
    inv = parse(["--auth-token", "jwt,pub-key=/p,priv-key=/k,sign-method=RS256", "--bcrypt-cost=4",
                 "--auth-token-ttl", "60"], {})
    assert inv.config is not None
    c = inv.config
    assert (c.auth_token, c.auth_token_ttl, c.bcrypt_cost) == ("jwt,pub-key=/p,priv-key=/k,sign-method=RS256", 60, 4)
    env = parse([], {"ETCD_BCRYPT_COST": "5", "ETCD_AUTH_TOKEN_TTL": "7"}).config
    assert env is not None and (env.bcrypt_cost, env.auth_token_ttl) == (5, 7)
