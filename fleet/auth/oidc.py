"""Google sign-in (OpenID Connect) through Authlib, and the signed cookie that carries its state.

Authlib's Starlette client keeps `state`, `nonce` and the PKCE verifier in `request.session`. Instead of
a server-side session store, that dict travels in a short-lived cookie signed with SECRET_KEY (HMAC-SHA256)
and scoped to `/auth/google`, so any API process can finish a sign-in another one started.
`OIDC_DISCOVERY_URL` points at the provider's discovery document (Google's by default); the ID token is
verified by Authlib against the provider's JWKS, issuer, audience and nonce.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import warnings
from typing import Any

from fleet.config import Settings

with warnings.catch_warnings():
    # Authlib announces that it will move from httpx to httpx2; httpx is what this project ships. Its
    # `deprecate` module installs an "always" filter on import, so our "ignore" goes in after it.
    import authlib.deprecate  # noqa: F401

    warnings.filterwarnings("ignore", message=r".*httpx module is deprecated.*")
    from authlib.integrations.starlette_client import OAuth, OAuthError  # noqa: F401 (re-exported)
    from joserfc.errors import JoseError  # noqa: F401 (re-exported: an ID token that fails verification)

PROVIDER = "google"
STATE_COOKIE = "fleet_oidc"
STATE_COOKIE_PATH = "/auth/google"
STATE_TTL_SEC = 600
SCOPE = "openid email profile"


def configured(settings: Settings) -> bool:
    return bool(settings.google_client_id and settings.google_client_secret)


def build_oauth(settings: Settings) -> OAuth:
    """The Authlib registry with the `google` client (metadata fetched lazily from the discovery URL)."""
    assert settings.google_client_secret is not None
    oauth = OAuth()
    oauth.register(
        PROVIDER,
        client_id=settings.google_client_id,
        client_secret=settings.google_client_secret.get_secret_value(),
        server_metadata_url=settings.oidc_discovery_url,
        client_kwargs={"scope": SCOPE, "code_challenge_method": "S256", "timeout": 10.0},
    )
    return oauth


def _key(secret: str) -> bytes:
    return hmac.new(secret.encode("utf-8"), b"fleet-oidc-state", hashlib.sha256).digest()


def dump_state(secret: str, data: dict[str, Any], ttl_sec: int = STATE_TTL_SEC) -> str:
    payload = (
        base64.urlsafe_b64encode(
            json.dumps({"d": data, "exp": int(time.time()) + ttl_sec}, separators=(",", ":")).encode()
        )
        .decode()
        .rstrip("=")
    )
    signature = base64.urlsafe_b64encode(hmac.new(_key(secret), payload.encode(), hashlib.sha256).digest())
    return f"{payload}.{signature.decode().rstrip('=')}"


def load_state(secret: str, value: str | None) -> dict[str, Any] | None:
    """The signed dict, or None when the cookie is missing, forged or expired."""
    if not value or len(value) > 8192:
        return None
    payload, _, signature = value.partition(".")
    expected = base64.urlsafe_b64encode(hmac.new(_key(secret), payload.encode(), hashlib.sha256).digest())
    if not hmac.compare_digest(expected.decode().rstrip("="), signature):
        return None
    try:
        decoded = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(decoded, dict) or int(decoded.get("exp", 0)) < time.time():
        return None
    data = decoded.get("d")
    return data if isinstance(data, dict) else None


def verified(value: Any) -> bool:
    """The `email_verified` claim (a boolean, or the string "true" from some providers)."""
    return value is True or (isinstance(value, str) and value.lower() == "true")
