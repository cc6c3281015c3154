"""`/docs` (Swagger UI) and `/redoc` served entirely from this server: the pages work without internet.

The JavaScript and CSS bundles come from the `fastapi-offline` package (unmodified Swagger UI and ReDoc
distribution builds); the pages themselves are ours, with no inline script (Swagger UI is started by
`swagger_init.js`, ReDoc initialises itself from its `<redoc>` element) and no web fonts from anywhere: the
browser's own sans-serif fonts are used. Assets are listed by name, never looked up from the path.
"""

from __future__ import annotations

from html import escape
from pathlib import Path

import fastapi_offline
from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, HTMLResponse

from fleet.api.errors import ApiError

ASSETS_PREFIX = "/docs/assets"
_VENDOR = Path(fastapi_offline.__file__).resolve().parent / "static"
_HERE = Path(__file__).resolve().parent
ASSETS: dict[str, Path] = {
    "swagger-ui-bundle.js": _VENDOR / "swagger-ui-bundle.js",
    "swagger-ui.css": _VENDOR / "swagger-ui.css",
    "redoc.standalone.js": _VENDOR / "redoc.standalone.js",
    "favicon.png": _VENDOR / "favicon.png",
    "swagger-init.js": _HERE / "swagger_init.js",
}
_MEDIA_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".png": "image/png",
}
# Bundles change only with the installed package; a day of caching saves 2.7 MB per page view.
ASSET_CACHE = "public, max-age=86400"


def _page(title: str, head: str, body: str) -> HTMLResponse:
    html = (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)}</title>"
        f'<link rel="icon" type="image/png" href="{ASSETS_PREFIX}/favicon.png">{head}'
        f"</head><body>{body}</body></html>\n"
    )
    return HTMLResponse(html)


def install_docs(app: FastAPI) -> None:
    """Add `/docs`, `/redoc` and their assets (the app is built with FastAPI's own docs pages disabled)."""
    openapi_url = app.openapi_url or "/openapi.json"

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return _page(
            f"{app.title} - Swagger UI",
            f'<link rel="stylesheet" href="{root}{ASSETS_PREFIX}/swagger-ui.css">',
            f'<div id="swagger-ui" data-openapi-url="{escape(root + openapi_url)}"></div>'
            f'<script src="{root}{ASSETS_PREFIX}/swagger-ui-bundle.js"></script>'
            f'<script src="{root}{ASSETS_PREFIX}/swagger-init.js"></script>',
        )

    @app.get("/redoc", include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return _page(
            f"{app.title} - ReDoc",
            "",
            f'<redoc spec-url="{escape(root + openapi_url)}"></redoc>'
            f'<script src="{root}{ASSETS_PREFIX}/redoc.standalone.js"></script>',
        )

    @app.get(ASSETS_PREFIX + "/{name}", include_in_schema=False)
    async def asset(name: str) -> FileResponse:
        path = ASSETS.get(name)
        if path is None:
            raise ApiError(404, "not_found", f"no documentation asset {name}")
        return FileResponse(
            path, media_type=_MEDIA_TYPES[path.suffix], headers={"Cache-Control": ASSET_CACHE}
        )
