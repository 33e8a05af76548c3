"""Auth tokens, as etcd 3.4 makes them: ``simple`` and ``jwt``.

What it is for: Authenticate hands out a token; every later request carries
it (gRPC metadata ``token``) and the server turns it back into the user
name and the auth revision it is checked under.

- ``simple`` (etcd's default): ``<16 random letters>.<raft index>``, the
  letters drawn by the member that received Authenticate and the index of
  the raft entry that applied it, so every member holds the same token. A
  token lives ``--auth-token-ttl`` seconds (default 300) after its last use;
  each use renews it. Changing a user's password or deleting the user, and
  disabling auth, drop its tokens. Its revision is the store's at the time
  of the check.
- ``jwt``: ``jwt,pub-key=FILE,priv-key=FILE,sign-method=RS256[,ttl=5m]``,
  claims ``username``, ``revision`` (the store's at Authenticate) and
  ``exp``; signed and checked with PyJWT. A member given only the public
  key verifies tokens but cannot issue them (etcd's verify-only mode).
  Nothing is kept per token, so nothing is dropped either: a token of a
  changed user fails later with "revision of auth store is old".

Guarantees: checking a token never blocks and never raises for a malformed
token (it is just invalid); the clock is injectable for tests.
"""

from __future__ import annotations

import logging
import re
import secrets
import string
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import jwt

from petcd.auth.errors import (
    ErrAuthFailed,
    ErrInvalidAuthMethod,
    ErrInvalidAuthOpts,
    ErrKeyMismatch,
    ErrMissingKey,
    ErrVerifyOnly,
)

log = logging.getLogger("petcd.auth")

SIMPLE_TOKEN_LENGTH = 16
DEFAULT_TOKEN_TTL = 300.0  # --auth-token-ttl, seconds
DEFAULT_JWT_TTL = 300.0  # etcd's jwt default, 5m
_LETTERS = string.ascii_lowercase + string.ascii_uppercase
_UINT64_MAX = (1 << 64) - 1
_DIGITS = re.compile(r"[0-9]+")


@dataclass(frozen=True, slots=True)
class AuthInfo:
    """Who a request runs as and the auth revision it was checked under
    (revision 0: no user given)."""

    username: str
    revision: int


class TokenProvider(Protocol):
    """What the auth store needs of a token scheme."""

    def enable(self) -> None: ...

    def disable(self) -> None: ...

    def invalidate_user(self, username: str) -> None: ...

    def gen_token_prefix(self) -> str: ...

    def assign(self, username: str, revision: int, prefix: str, index: int) -> str: ...

    def info(self, token: str, revision: int) -> AuthInfo | None: ...


def simple_token_index(token: str) -> int | None:
    """The raft index in a well-formed simple token, else None. A member
    that has not applied that index yet cannot know the token (etcd waits
    for it; the caller decides)."""
    parts = token.split(".")
    if len(parts) != 2 or not _DIGITS.fullmatch(parts[1]):
        return None
    index = int(parts[1])
    return index if index <= _UINT64_MAX else None


class SimpleTokenProvider:
    """etcd's simple tokens: random prefix + raft index, kept in memory with
    a TTL renewed on every use."""

    def __init__(self, ttl: float = DEFAULT_TOKEN_TTL, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl if ttl > 0 else DEFAULT_TOKEN_TTL
        self._clock = clock
        self._enabled = False
        # token -> (user, deadline); user -> its tokens (for invalidation).
        self._tokens: dict[str, tuple[str, float]] = {}
        self._by_user: dict[str, set[str]] = {}
        self._next_sweep = 0.0

    def __len__(self) -> int:
        return len(self._tokens)

    def enable(self) -> None:
        self._enabled = True

    def disable(self) -> None:
        """Auth disabled: every token is dropped."""
        self._enabled = False
        self._tokens.clear()
        self._by_user.clear()

    def gen_token_prefix(self) -> str:
        return "".join(secrets.choice(_LETTERS) for _ in range(SIMPLE_TOKEN_LENGTH))

    def assign(self, username: str, revision: int, prefix: str, index: int) -> str:
        token = f"{prefix}.{index}"
        now = self._clock()
        self._sweep(now)
        old = self._tokens.get(token)
        if old is not None:
            # The same prefix drawn twice for the same index cannot happen
            # for one Authenticate (etcd panics); keep the map consistent.
            self._by_user.get(old[0], set()).discard(token)
        self._tokens[token] = (username, now + self.ttl)
        self._by_user.setdefault(username, set()).add(token)
        return token

    def info(self, token: str, revision: int) -> AuthInfo | None:
        hit = self._tokens.get(token)
        if hit is None:
            return None
        user, deadline = hit
        now = self._clock()
        if now >= deadline:
            self._drop(token)
            return None
        self._tokens[token] = (user, now + self.ttl)
        return AuthInfo(user, revision)

    def invalidate_user(self, username: str) -> None:
        for token in self._by_user.pop(username, set()):
            self._tokens.pop(token, None)

    def _drop(self, token: str) -> None:
        hit = self._tokens.pop(token, None)
        if hit is not None:
            users = self._by_user.get(hit[0])
            if users is not None:
                users.discard(token)
                if not users:
                    del self._by_user[hit[0]]

    def _sweep(self, now: float) -> None:
        """Drop expired tokens, at most once a second (amortised over assigns)."""
        if now < self._next_sweep:
            return
        self._next_sweep = now + 1.0
        for token in [t for t, (_, deadline) in self._tokens.items() if now >= deadline]:
            self._drop(token)


class NopTokenProvider:
    """``--auth-token ""``: no token can be issued or checked."""

    def enable(self) -> None:
        pass

    def disable(self) -> None:
        pass

    def invalidate_user(self, username: str) -> None:
        pass

    def gen_token_prefix(self) -> str:
        return ""

    def assign(self, username: str, revision: int, prefix: str, index: int) -> str:
        raise ErrAuthFailed()

    def info(self, token: str, revision: int) -> AuthInfo | None:
        return None


# The methods of Go's jwt-go v3 that etcd 3.4 accepts, by family.
_HMAC = {"HS256", "HS384", "HS512"}
_RSA = {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"}
_EC = {"ES256", "ES384", "ES512"}


class JWTTokenProvider:
    """etcd's JWT tokens, signed with the configured key and method."""

    def __init__(self, sign_method: str, sign_key: Any | None, verify_key: Any,
                 ttl: float = DEFAULT_JWT_TTL, clock: Callable[[], float] = time.time) -> None:
        self.sign_method = sign_method
        self._sign_key = sign_key
        self._verify_key = verify_key
        self.ttl = ttl
        self._clock = clock

    def enable(self) -> None:
        pass

    def disable(self) -> None:
        pass

    def invalidate_user(self, username: str) -> None:
        pass

    def gen_token_prefix(self) -> str:
        return ""

    def assign(self, username: str, revision: int, prefix: str, index: int) -> str:
        if self._sign_key is None:
            raise ErrVerifyOnly()
        claims = {"username": username, "revision": revision, "exp": int(self._clock() + self.ttl)}
        return jwt.encode(claims, self._sign_key, algorithm=self.sign_method)

    def info(self, token: str, revision: int) -> AuthInfo | None:
        try:
            # Only the configured method is accepted (etcd refuses any other
            # alg in the header, "none" included). The time claims are
            # checked below against this provider's clock.
            claims = jwt.decode(token, self._verify_key, algorithms=[self.sign_method],
                                options={"verify_exp": False, "verify_nbf": False, "verify_iat": False})
        except (jwt.PyJWTError, ValueError, TypeError) as exc:
            log.warning("failed to parse a JWT token: %s", exc)
            return None
        if not isinstance(claims, dict) or not self._times_ok(claims):
            return None
        username = claims.get("username")
        rev = claims.get("revision")
        if not isinstance(username, str) or not isinstance(rev, int | float) or isinstance(rev, bool):
            return None
        if rev < 0 or rev > _UINT64_MAX:
            return None
        return AuthInfo(username, int(rev))

    def _times_ok(self, claims: dict[str, Any]) -> bool:
        """jwt-go v3's checks (etcd 3.4): exp, iat and nbf each optional;
        when present, now <= exp, now >= iat, now >= nbf."""
        now = self._clock()
        for name, ok in (("exp", lambda t: now <= t), ("iat", lambda t: now >= t), ("nbf", lambda t: now >= t)):
            if name not in claims:
                continue
            t = claims[name]
            if not isinstance(t, int | float) or isinstance(t, bool) or not ok(t):
                log.warning("a JWT token failed its %s check", name)
                return False
        return True


def _parse_duration(text: str) -> float:
    """Go's time.ParseDuration, for the units a ttl uses."""
    units = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
    if text in ("0", "+0", "-0"):
        return 0.0
    m = re.fullmatch(r"([+-]?)((?:[0-9]*\.?[0-9]+(?:ns|us|µs|ms|s|m|h))+)", text)
    if m is None:
        raise _invalid(f"time: invalid duration {text!r}")
    total = sum(float(n) * units[u] for n, u in re.findall(r"([0-9]*\.?[0-9]+)(ns|us|µs|ms|s|m|h)", m.group(2)))
    return -total if m.group(1) == "-" else total


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as exc:
        raise _invalid(f"cannot read {path}: {exc.strerror}") from exc


def _invalid(detail: str) -> ErrInvalidAuthOpts:
    return ErrInvalidAuthOpts(f"{ErrInvalidAuthOpts.message} ({detail})")


def _jwt_provider(opts: dict[str, str], clock: Callable[[], float]) -> JWTTokenProvider:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    unknown = sorted(k for k in opts if k not in ("pub-key", "priv-key", "sign-method", "ttl"))
    if unknown:
        log.warning("unknown JWT options %s (ignored, as etcd ignores them)", unknown)
    ttl = _parse_duration(opts["ttl"]) if opts.get("ttl") else DEFAULT_JWT_TTL
    method = opts.get("sign-method", "")
    if method not in _HMAC | _RSA | _EC:
        raise _invalid(f"{ErrInvalidAuthMethod.message}: {method!r}")
    priv = _read(opts["priv-key"]) if opts.get("priv-key") else b""
    pub = _read(opts["pub-key"]) if opts.get("pub-key") else b""
    if method in _HMAC:
        if not priv:
            raise ErrMissingKey()
        return JWTTokenProvider(method, priv, priv, ttl, clock)
    want: type[Any] = rsa.RSAPrivateKey if method in _RSA else ec.EllipticCurvePrivateKey
    want_pub: type[Any] = rsa.RSAPublicKey if method in _RSA else ec.EllipticCurvePublicKey
    sign_key: Any = None
    verify_key: Any = None
    try:
        if priv:
            sign_key = serialization.load_pem_private_key(priv, password=None)
            if not isinstance(sign_key, want):
                raise _invalid(f"the private key does not fit {method}")
        if pub:
            verify_key = serialization.load_pem_public_key(pub)
            if not isinstance(verify_key, want_pub):
                raise _invalid(f"the public key does not fit {method}")
    except (ValueError, TypeError) as exc:
        raise _invalid(f"cannot load the key: {exc}") from exc
    if sign_key is None:
        if verify_key is None:
            raise ErrMissingKey()
        return JWTTokenProvider(method, None, verify_key, ttl, clock)  # verify only
    derived = sign_key.public_key()
    if verify_key is not None and verify_key.public_numbers() != derived.public_numbers():
        raise ErrKeyMismatch()
    return JWTTokenProvider(method, sign_key, derived, ttl, clock)


def new_token_provider(spec: str, ttl: float = DEFAULT_TOKEN_TTL, *,
                       clock: Callable[[], float] | None = None) -> TokenProvider:
    """The provider for a ``--auth-token`` value (``simple``, ``jwt,...``, or
    empty for none); ``ttl`` is ``--auth-token-ttl`` (simple tokens).
    Raises an :class:`~petcd.auth.errors.AuthError` for what etcd refuses."""
    parts = spec.split(",")
    kind = parts[0]
    opts: dict[str, str] = {}
    for part in parts[1:]:
        pair = part.split("=")
        if len(pair) != 2 or pair[0] in opts:
            raise ErrInvalidAuthOpts()
        opts[pair[0]] = pair[1]
    if kind == "simple":
        return SimpleTokenProvider(ttl, clock or time.monotonic)
    if kind == "jwt":
        return _jwt_provider(opts, clock or time.time)
    if kind == "":
        return NopTokenProvider()
    raise ErrInvalidAuthOpts()
