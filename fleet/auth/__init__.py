"""Authentication: access tokens (JWT), refresh tokens, API keys and OpenID Connect sign-in."""
