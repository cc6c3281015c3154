"""The Grafana session cookie: a signed, short-lived pointer to a sign-in session, never an API credential.

Browsers reach Grafana under `/grafana/`, where neither the bearer access token (held by page scripts) nor
the refresh cookie (scoped to `/auth`) is sent. `GET /auth/grafana/login` turns a valid refresh cookie into
this cookie, scoped to `/grafana/`; nginx's `auth_request` then presents it to `GET /auth/grafana` on every
request. It carries the user, the session (refresh-token family) and the token version, signed with a key
derived from SECRET_KEY for this purpose only, and is checked against the database on every use: logging
out, blocking or a password change ends Grafana access on the next request.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import time
from dataclasses import dataclass

import jwt

from fleet.auth.tokens import ALGORITHM, ISSUER, LEEWAY_SEC, TokenError

COOKIE_TYPE = "grafana"
# Long enough for a working day in the dashboards; the database check makes revocation immediate anyway.
COOKIE_TTL_SEC = 12 * 3600


@functools.lru_cache(maxsize=8)
def _key(secret: str) -> bytes:
    return hmac.new(secret.encode("utf-8"), b"fleet-grafana-session", hashlib.sha256).digest()


@dataclass(frozen=True, slots=True)
class ProxySession:
    user_id: int
    session_id: str
    token_version: int
    expires_at: int


def issue(secret: str, *, user_id: int, session_id: str, token_version: int, ttl_sec: int) -> str:
    """Sign a Grafana session cookie value."""
    now = int(time.time())
    payload = {
        "iss": ISSUER,
        "typ": COOKIE_TYPE,
        "sub": str(user_id),
        "sid": session_id,
        "ver": token_version,
        "iat": now,
        "exp": now + ttl_sec,
    }
    return jwt.encode(payload, _key(secret), algorithm=ALGORITHM)


def verify(secret: str, value: str) -> ProxySession:
    """Check signature, type and expiry of a cookie value, or raise TokenError."""
    try:
        payload = jwt.decode(
            value,
            _key(secret),
            algorithms=[ALGORITHM],
            issuer=ISSUER,
            leeway=LEEWAY_SEC,
            options={"require": ["exp", "iat", "sub", "iss"]},
        )
        if payload.get("typ") != COOKIE_TYPE:
            raise TokenError("invalid_token", "not a Grafana session")
        return ProxySession(
            user_id=int(payload["sub"]),
            session_id=str(payload["sid"]),
            token_version=int(payload["ver"]),
            expires_at=int(payload["exp"]),
        )
    except jwt.ExpiredSignatureError as err:
        raise TokenError("token_expired", "the Grafana session has expired") from err
    except (jwt.PyJWTError, KeyError, TypeError, ValueError) as err:
        raise TokenError("invalid_token", "the Grafana session is not valid") from err
