"""Security headers on every answer: no caching of private data, no MIME sniffing, no framing, and a
Content-Security-Policy per kind of page.

* JSON, CSV, GPX and every other dynamic answer: `Cache-Control: no-store` (unless the handler chose its own
  caching), and a CSP that allows nothing (`default-src 'none'`): an answer opened directly in a browser runs
  no script and loads nothing.
* Web UI pages under `/ui/`: the policy agreed with the web UI (INTERFACES.md §3), built from `MAP_TILE_URL`
  and `GRAFANA_URL` so that tiles and the Grafana iframe are the only foreign origins.
* `/docs` and `/redoc`: the same-origin assets they need (see `fleet.api.docs`), with inline styles and blob
  workers for ReDoc, and no inline script.
* Static assets (CSS, JavaScript, images, fonts) keep whatever caching their handler set.

Everything gets `X-Content-Type-Options: nosniff`, `X-Frame-Options: DENY` (and `frame-ancestors 'none'`),
and `Referrer-Policy: no-referrer`.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fleet.config import Settings

UI_PREFIX = "/ui"
DOCS_PATHS = ("/docs", "/redoc")

API_CSP = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
DOCS_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; "
    "font-src 'self' data:; connect-src 'self'; worker-src 'self' blob:; frame-src 'none'; "
    "frame-ancestors 'none'; base-uri 'self'; form-action 'self'"
)
# Content types that are static assets: their caching is the handler's decision, not `no-store`.
_STATIC_TYPES = (
    b"text/css",
    b"text/javascript",
    b"application/javascript",
    b"image/",
    b"font/",
    b"application/wasm",
)


def url_origin(url: str | None) -> str | None:
    """`scheme://host[:port]` of an absolute http(s) URL (a `{s}` subdomain template becomes `*`), else None.

    A relative URL (tiles served by this server) needs no origin of its own: `'self'` covers it.
    """
    if not url:
        return None
    templated = url.replace("{s}", "SUBDOMAIN")
    parts = urlsplit(templated)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    host = parts.netloc.rsplit("@", 1)[-1].replace("SUBDOMAIN", "*")
    host = host.replace("{", "").replace("}", "")  # any other template in the host: not a usable origin
    return f"{parts.scheme}://{host}"


def ui_csp(settings: Settings) -> str:
    """The Content-Security-Policy of web UI pages (INTERFACES.md §3)."""
    tiles = url_origin(settings.map_tile_url)
    extra_tiles = f" {tiles}" if tiles else ""
    grafana = settings.grafana_url
    # Grafana published under this site's own path (`/grafana/`) is same-origin; else its origin; else none.
    frames = (
        ("'self'" if grafana.startswith("/") else url_origin(grafana) or "'none'") if grafana else "'none'"
    )
    return (
        "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
        f"img-src 'self' data: blob:{extra_tiles}; connect-src 'self' ws: wss:{extra_tiles}; "
        f"worker-src 'self' blob:; frame-src {frames}; frame-ancestors 'none'; "
        "base-uri 'self'; form-action 'self'"
    )


class SecurityHeaders:
    """ASGI middleware adding the headers above to every HTTP answer (errors included)."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        common = [
            (b"x-content-type-options", b"nosniff"),
            (b"x-frame-options", b"DENY"),
            (b"referrer-policy", b"no-referrer"),
        ]
        self._api = [*common, (b"content-security-policy", API_CSP.encode())]
        self._ui = [*common, (b"content-security-policy", ui_csp(settings).encode())]
        self._docs = [*common, (b"content-security-policy", DOCS_CSP.encode())]

    def _headers_for(self, path: str) -> list[tuple[bytes, bytes]]:
        if path == UI_PREFIX or path.startswith(UI_PREFIX + "/"):
            return self._ui
        if path in DOCS_PATHS or path.startswith("/docs/"):
            return self._docs
        return self._api

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        extra = self._headers_for(scope["path"])

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                content_type = next((v for n, v in headers if n.lower() == b"content-type"), b"")
                headers += [(name, value) for name, value in extra if name not in present]
                if b"cache-control" not in present and not content_type.startswith(_STATIC_TYPES):
                    headers.append((b"cache-control", b"no-store"))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, with_headers)
