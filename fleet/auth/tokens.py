"""Credentials the server issues: access JWTs, refresh tokens and per-user API keys.

Access tokens are short-lived HS256 JWTs signed with SECRET_KEY. They carry the user's token version
(`ver`) and the session they belong to (`sid`, the refresh-token family), and every request checks both
against the database, so blocking a user (which bumps `users.token_version`) or logging a session out
(which revokes its family) takes effect on the very next request, not when the token expires.

Refresh tokens and API keys are random secrets; the database stores only their SHA-256 (they are
high-entropy, so a slow hash adds nothing) and looks them up by a public identifier.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import secrets
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass

import jwt

ALGORITHM = "HS256"
ISSUER = "fleet"
ACCESS_TOKEN_TYPE = "access"
# Clock skew tolerated between processes that share SECRET_KEY.
LEEWAY_SEC = 5

API_KEY_SCHEME = "flt"
REFRESH_TOKEN_SEPARATOR = "."


class TokenError(Exception):
    """A bearer credential is malformed, forged, expired or revoked."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class AccessClaims:
    """The verified content of an access token."""

    user_id: int
    role: str
    jti: str
    session_id: str
    token_version: int
    issued_at: int
    expires_at: int


@functools.lru_cache(maxsize=8)
def signing_key(secret: str) -> bytes:
    """The HS256 key derived from SECRET_KEY: always 32 bytes, and used for access tokens only."""
    return hmac.new(secret.encode("utf-8"), b"fleet-access-token", hashlib.sha256).digest()


def sha256_hex(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8")).hexdigest()


def issue_access_token(
    secret: str,
    *,
    user_id: int,
    role: str,
    token_version: int,
    session_id: str,
    ttl_sec: int,
    now: float | None = None,
) -> tuple[str, AccessClaims]:
    """Sign an access token; returns the token and its claims."""
    issued = int(now if now is not None else time.time())
    claims = AccessClaims(
        user_id=user_id,
        role=role,
        jti=uuid.uuid4().hex,
        session_id=session_id,
        token_version=token_version,
        issued_at=issued,
        expires_at=issued + ttl_sec,
    )
    payload = {
        "iss": ISSUER,
        "typ": ACCESS_TOKEN_TYPE,
        "sub": str(user_id),
        "role": role,
        "jti": claims.jti,
        "sid": session_id,
        "ver": token_version,
        "iat": claims.issued_at,
        "exp": claims.expires_at,
    }
    return jwt.encode(payload, signing_key(secret), algorithm=ALGORITHM), claims


# Verified tokens, so that a client sending the same token on every request pays for the signature
# check once. Only the signature/shape result is cached: expiry is checked on every use, and revocation
# is the database's business (see fleet.api.deps.open_session).
_VERIFIED: OrderedDict[tuple[bytes, str], AccessClaims] = OrderedDict()
_VERIFIED_MAX = 4096


def decode_access_token(secret: str, token: str) -> AccessClaims:
    """Verify signature, expiry and shape of an access token, or raise TokenError."""
    cache_key = (signing_key(secret), token)
    claims = _VERIFIED.get(cache_key)
    if claims is not None:
        if claims.expires_at + LEEWAY_SEC <= time.time():
            raise TokenError("token_expired", "the access token has expired; refresh it")
        return claims
    claims = _decode(secret, token)
    _VERIFIED[cache_key] = claims
    if len(_VERIFIED) > _VERIFIED_MAX:
        _VERIFIED.popitem(last=False)
    return claims


def _decode(secret: str, token: str) -> AccessClaims:
    try:
        payload = jwt.decode(
            token,
            signing_key(secret),
            algorithms=[ALGORITHM],
            issuer=ISSUER,
            leeway=LEEWAY_SEC,
            options={"require": ["exp", "iat", "sub", "jti", "iss"]},
        )
    except jwt.ExpiredSignatureError as err:
        raise TokenError("token_expired", "the access token has expired; refresh it") from err
    except jwt.PyJWTError as err:
        raise TokenError("invalid_token", "the bearer token is not valid") from err
    try:
        if payload.get("typ") != ACCESS_TOKEN_TYPE or payload["role"] not in ("superuser", "owner"):
            raise ValueError("not an access token")
        return AccessClaims(
            user_id=int(payload["sub"]),
            role=str(payload["role"]),
            jti=str(payload["jti"]),
            session_id=str(payload["sid"]),
            token_version=int(payload["ver"]),
            issued_at=int(payload["iat"]),
            expires_at=int(payload["exp"]),
        )
    except (KeyError, TypeError, ValueError) as err:
        raise TokenError("invalid_token", "the bearer token is not valid") from err


@dataclass(frozen=True, slots=True)
class RefreshToken:
    """A new refresh token: `value` goes to the client once, the rest to `refresh_tokens`."""

    token_id: str
    value: str
    token_hash: str


def new_refresh_token() -> RefreshToken:
    token_id = secrets.token_urlsafe(16)
    secret = secrets.token_urlsafe(32)
    return RefreshToken(token_id, f"{token_id}{REFRESH_TOKEN_SEPARATOR}{secret}", sha256_hex(secret))


def split_refresh_token(value: str) -> tuple[str, str]:
    """Return (token id, hash of the secret part), or raise TokenError for a malformed value."""
    token_id, sep, secret = value.partition(REFRESH_TOKEN_SEPARATOR)
    if not sep or not token_id or not secret or len(value) > 200:
        raise TokenError("invalid_refresh_token", "the refresh token is not valid")
    return token_id, sha256_hex(secret)


def new_session_id() -> str:
    return uuid.uuid4().hex


@dataclass(frozen=True, slots=True)
class ApiKey:
    """A new per-user API key `flt_<prefix>_<secret>`: shown once, stored as prefix + SHA-256."""

    prefix: str
    value: str
    key_hash: str


def new_api_key() -> ApiKey:
    prefix = secrets.token_hex(6)
    value = f"{API_KEY_SCHEME}_{prefix}_{secrets.token_urlsafe(32)}"
    return ApiKey(prefix, value, sha256_hex(value))


def api_key_prefix(value: str) -> str | None:
    """The lookup prefix of something shaped like a per-user API key, else None."""
    scheme, sep, rest = value.partition("_")
    if scheme != API_KEY_SCHEME or not sep:
        return None
    prefix, sep, secret = rest.partition("_")
    if not sep or len(prefix) != 12 or not secret or len(value) > 200:
        return None
    return prefix


def same_secret(given: str, expected: str) -> bool:
    """Constant-time comparison of two secrets (or their hashes)."""
    return hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))
