"""A small OpenID Connect provider for tests: discovery, JWKS, an authorize endpoint that signs in
whoever the test says, and a token endpoint issuing RS256 ID tokens (PKCE and client secret checked)."""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route


@dataclass
class Identity:
    sub: str
    email: str | None
    email_verified: bool = True
    name: str | None = None


@dataclass
class OidcProvider:
    client_id: str
    client_secret: str
    issuer: str = ""
    next_identity: Identity | None = None
    # Set to make the token endpoint sign with a key the JWKS does not publish (a forged ID token).
    sign_with_rogue_key: bool = False
    codes: dict[str, dict[str, Any]] = field(default_factory=dict)
    token_requests: int = 0

    def __post_init__(self) -> None:
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.rogue_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.kid = secrets.token_hex(4)

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/.well-known/openid-configuration", self.discovery),
                Route("/jwks", self.jwks),
                Route("/authorize", self.authorize),
                Route("/token", self.token, methods=["POST"]),
            ]
        )

    async def discovery(self, request: Request) -> Response:
        return JSONResponse(
            {
                "issuer": self.issuer,
                "authorization_endpoint": f"{self.issuer}/authorize",
                "token_endpoint": f"{self.issuer}/token",
                "jwks_uri": f"{self.issuer}/jwks",
                "response_types_supported": ["code"],
                "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": ["RS256"],
                "scopes_supported": ["openid", "email", "profile"],
                "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
                "code_challenge_methods_supported": ["S256"],
            }
        )

    async def jwks(self, request: Request) -> Response:
        jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.key.public_key()))
        jwk.update({"kid": self.kid, "use": "sig", "alg": "RS256"})
        return JSONResponse({"keys": [jwk]})

    async def authorize(self, request: Request) -> Response:
        q = request.query_params
        if q.get("client_id") != self.client_id or q.get("response_type") != "code":
            return JSONResponse({"error": "invalid_request"}, status_code=400)
        if "openid" not in (q.get("scope") or "").split():
            return JSONResponse({"error": "invalid_scope"}, status_code=400)
        redirect_uri = q["redirect_uri"]
        if self.next_identity is None:
            return RedirectResponse(
                f"{redirect_uri}?{urlencode({'error': 'access_denied', 'state': q['state']})}"
            )
        code = secrets.token_urlsafe(16)
        self.codes[code] = {
            "identity": self.next_identity,
            "nonce": q.get("nonce"),
            "redirect_uri": redirect_uri,
            "challenge": q.get("code_challenge"),
            "method": q.get("code_challenge_method"),
        }
        return RedirectResponse(
            f"{redirect_uri}?{urlencode({'code': code, 'state': q['state']})}", status_code=302
        )

    def _client_ok(self, request: Request, form: Any) -> bool:
        header = request.headers.get("authorization", "")
        if header.startswith("Basic "):
            user, _, password = base64.b64decode(header[6:]).decode().partition(":")
            return user == self.client_id and password == self.client_secret
        return form.get("client_id") == self.client_id and form.get("client_secret") == self.client_secret

    async def token(self, request: Request) -> Response:
        self.token_requests += 1
        form = await request.form()
        if not self._client_ok(request, form):
            return JSONResponse({"error": "invalid_client"}, status_code=401)
        grant = self.codes.pop(str(form.get("code")), None)
        if form.get("grant_type") != "authorization_code" or grant is None:
            return JSONResponse({"error": "invalid_grant"}, status_code=400)
        if form.get("redirect_uri") != grant["redirect_uri"]:
            return JSONResponse(
                {"error": "invalid_grant", "error_description": "redirect_uri"}, status_code=400
            )
        if grant["challenge"]:
            verifier = str(form.get("code_verifier") or "")
            digest = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).decode().rstrip("=")
            if grant["method"] != "S256" or digest != grant["challenge"]:
                return JSONResponse({"error": "invalid_grant", "error_description": "pkce"}, status_code=400)
        identity: Identity = grant["identity"]
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "sub": identity.sub,
            "aud": self.client_id,
            "iat": now,
            "exp": now + 300,
            "nonce": grant["nonce"],
            "email_verified": identity.email_verified,
        }
        if identity.email:
            claims["email"] = identity.email
        if identity.name:
            claims["name"] = identity.name
        key = self.rogue_key if self.sign_with_rogue_key else self.key
        id_token = jwt.encode(claims, key, algorithm="RS256", headers={"kid": self.kid})
        return JSONResponse(
            {
                "access_token": secrets.token_urlsafe(16),
                "token_type": "Bearer",
                "expires_in": 300,
                "id_token": id_token,
            }
        )
