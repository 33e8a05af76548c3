"""Tokens: etcd's simple tokens (format, TTL renewed on use, invalidation)
and JWTs (signing methods, expiry, tampering, verify-only keys, options)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from petcd.auth import errors as E
from petcd.auth.tokens import (
    AuthInfo,
    JWTTokenProvider,
    NopTokenProvider,
    SimpleTokenProvider,
    new_token_provider,
    simple_token_index,
)
from tests.auth.conftest import Clock


def test_simple_token_format_and_index() -> None:
    p = SimpleTokenProvider()
    prefix = p.gen_token_prefix()
    assert re.fullmatch(r"[a-zA-Z]{16}", prefix)
    assert prefix != p.gen_token_prefix()
    token = p.assign("u", 3, prefix, 42)
    assert token == f"{prefix}.42"
    assert simple_token_index(token) == 42
    for bad in ["abc", "a.b.c", "a.-1", "a.+1", "a.", "a.1x", f"a.{1 << 64}", ""]:
        assert simple_token_index(bad) is None, bad
    assert p.info(token, 9) == AuthInfo("u", 9)  # the store's revision at the check
    assert p.info("unknown.42", 9) is None


def test_simple_token_ttl_is_renewed_by_use() -> None:
    clock = Clock()
    p = SimpleTokenProvider(ttl=300, clock=clock)
    t = p.assign("u", 1, "a" * 16, 1)
    clock.now += 299
    assert p.info(t, 1) is not None  # renewed: 300 s from now
    clock.now += 299
    assert p.info(t, 1) is not None
    clock.now += 300
    assert p.info(t, 1) is None
    assert len(p) == 0


def test_expired_tokens_are_swept_on_assign() -> None:
    clock = Clock()
    p = SimpleTokenProvider(ttl=10, clock=clock)
    for i in range(100):
        p.assign("u", 1, "b" * 16, i)
    clock.now += 11
    p.assign("v", 1, "c" * 16, 1000)
    assert len(p) == 1


def test_invalidate_user_and_disable() -> None:
    p = SimpleTokenProvider()
    a1 = p.assign("a", 1, "x" * 16, 1)
    a2 = p.assign("a", 1, "y" * 16, 2)
    b = p.assign("b", 1, "z" * 16, 3)
    p.invalidate_user("a")
    assert p.info(a1, 1) is None and p.info(a2, 1) is None
    assert p.info(b, 1) is not None
    p.disable()
    assert p.info(b, 1) is None


def test_nop_provider() -> None:
    p = new_token_provider("")
    assert isinstance(p, NopTokenProvider)
    with pytest.raises(E.ErrAuthFailed):
        p.assign("u", 1, "", 1)
    assert p.info("x.1", 1) is None


def _write_keys(tmp: Path, kind: str) -> tuple[Path, Path]:
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
    key = rsa.generate_private_key(65537, 2048) if kind == "rsa" else ec.generate_private_key(ec.SECP256R1())
    priv = tmp / f"{kind}.key"
    pub = tmp / f"{kind}.pub"
    priv.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    pub.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                  serialization.PublicFormat.SubjectPublicKeyInfo))
    return priv, pub


@pytest.mark.parametrize("kind,method", [("rsa", "RS256"), ("rsa", "PS512"), ("ec", "ES256")])
def test_jwt_round_trip(tmp_path: Path, kind: str, method: str) -> None:
    priv, pub = _write_keys(tmp_path, kind)
    clock = Clock()
    clock.now = 1_700_000_000.0
    p = new_token_provider(f"jwt,pub-key={pub},priv-key={priv},sign-method={method},ttl=1m", clock=clock)
    assert isinstance(p, JWTTokenProvider) and p.ttl == 60
    token = p.assign("alice", 7, "", 0)
    header = jwt.get_unverified_header(token)
    claims = jwt.decode(token, options={"verify_signature": False})
    assert header["alg"] == method
    assert claims == {"username": "alice", "revision": 7, "exp": 1_700_000_060}
    # the store's revision is not used: the token carries its own
    assert p.info(token, 99) == AuthInfo("alice", 7)


def test_jwt_expired_tampered_and_wrong_alg(tmp_path: Path) -> None:
    priv, pub = _write_keys(tmp_path, "rsa")
    p = new_token_provider(f"jwt,pub-key={pub},priv-key={priv},sign-method=RS256")
    assert isinstance(p, JWTTokenProvider) and p.ttl == 300  # etcd's default, 5m
    good = p.assign("alice", 1, "", 0)
    assert p.info(good, 0) is not None
    head, body, sig = good.split(".")
    forged_body = jwt.utils.base64url_encode(b'{"username":"root","revision":1,"exp":9999999999}').decode()
    assert p.info(f"{head}.{forged_body}.{sig}", 0) is None
    assert p.info(good[:-4] + ("AAAA" if not good.endswith("AAAA") else "BBBB"), 0) is None
    old = JWTTokenProvider("RS256", p._sign_key, p._verify_key, ttl=-10)
    assert p.info(old.assign("alice", 1, "", 0), 0) is None  # expired
    none_key: Any = None
    none_alg = jwt.encode({"username": "root", "revision": 1, "exp": 9999999999}, none_key, algorithm="none")
    assert p.info(none_alg, 0) is None
    hs = jwt.encode({"username": "root", "revision": 1, "exp": 9999999999}, "s" * 32, algorithm="HS256")
    assert p.info(hs, 0) is None
    sign_key: Any = p._sign_key
    # as in etcd 3.4 (jwt-go v3), exp is checked when present, not required
    no_exp = jwt.encode({"username": "root", "revision": 1}, sign_key, algorithm="RS256")
    assert p.info(no_exp, 0) == AuthInfo("root", 1)
    future = jwt.encode({"username": "root", "revision": 1, "nbf": 9999999999}, sign_key, algorithm="RS256")
    assert p.info(future, 0) is None
    no_user = jwt.encode({"revision": 1, "exp": 9999999999}, sign_key, algorithm="RS256")
    assert p.info(no_user, 0) is None
    for junk in ["", "a.b.c", "x" * 10000, "...."]:
        assert p.info(junk, 0) is None


def test_jwt_hmac(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_bytes(b"0123456789abcdef0123456789abcdef")
    # unknown options are ignored with a warning, as in etcd
    p = new_token_provider(f"jwt,priv-key={secret},sign-method=HS256,colour=blue")
    assert p.info(p.assign("u", 2, "", 0), 0) == AuthInfo("u", 2)
    with pytest.raises(E.ErrMissingKey):
        new_token_provider("jwt,sign-method=HS256")


def test_jwt_verify_only_and_key_checks(tmp_path: Path) -> None:
    priv, pub = _write_keys(tmp_path, "rsa")
    signer = new_token_provider(f"jwt,priv-key={priv},sign-method=RS256")
    verifier = new_token_provider(f"jwt,pub-key={pub},sign-method=RS256")
    assert verifier.info(signer.assign("u", 3, "", 0), 0) == AuthInfo("u", 3)
    with pytest.raises(E.ErrVerifyOnly):
        verifier.assign("u", 3, "", 0)
    other = tmp_path / "other"
    other.mkdir()
    _, other_pub = _write_keys(other, "rsa")
    with pytest.raises(E.ErrKeyMismatch):
        new_token_provider(f"jwt,pub-key={other_pub},priv-key={priv},sign-method=RS256")
    with pytest.raises(E.ErrMissingKey):
        new_token_provider("jwt,sign-method=RS256")
    ec_priv, _ = _write_keys(tmp_path, "ec")
    with pytest.raises(E.ErrInvalidAuthOpts):
        new_token_provider(f"jwt,priv-key={ec_priv},sign-method=RS256")
    with pytest.raises(E.ErrInvalidAuthOpts):
        new_token_provider(f"jwt,priv-key={tmp_path / 'missing'},sign-method=RS256")


def test_token_option_errors() -> None:
    assert isinstance(new_token_provider("simple", 10), SimpleTokenProvider)
    for bad in ["bogus", "simple,x", "jwt,sign-method=RS256,sign-method=RS256", "jwt,a=b=c", "jwt",
                "jwt,sign-method=XX999", "jwt,sign-method=none"]:
        with pytest.raises(E.ErrInvalidAuthOpts):
            new_token_provider(bad)
    with pytest.raises(E.ErrInvalidAuthOpts):
        new_token_provider("jwt,sign-method=RS256,ttl=forever")


def test_random_tokens_are_all_invalid_and_cheap() -> None:
    import random
    import time

    p = SimpleTokenProvider()
    real = p.assign("u", 1, "a" * 16, 7)
    rng = random.Random(11)
    alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-+/=\x00é"
    start = time.monotonic()
    for _ in range(200_000):
        token = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40)))
        assert token == real or p.info(token, 1) is None
    assert time.monotonic() - start < 60
    assert p.info(real, 1) == AuthInfo("u", 1)
