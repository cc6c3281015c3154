"""`/ui/...`: the page shells of the web UI and its static files.

Every page is public HTML: it holds no data, so it needs no credentials (the refresh cookie is scoped to
`/auth` and never reaches these paths anyway). The page's script signs in and fetches the data.
"""

from __future__ import annotations

import hashlib
from functools import cache
from pathlib import Path
from typing import Any

import jinja2
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles

from fleet.api.params import VehicleId
from fleet.config import Settings
from fleet.web.i18n import LANG_COOKIE, LANGUAGES, Translator, catalog, choose_language

WEB_DIR = Path(__file__).parent
STATIC_DIR = WEB_DIR / "static"
VENDOR_MARKER = STATIC_DIR / "vendor" / ".installed"

router = APIRouter(prefix="/ui", include_in_schema=False)

_templates = jinja2.Environment(
    loader=jinja2.FileSystemLoader(WEB_DIR / "templates"),
    autoescape=True,  # every page: names and e-mails come from users
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)

# Pages carry no personal data, but a shared cache must still not keep one reader's language for another.
_HEADERS = {"Cache-Control": "no-cache", "Vary": "Cookie, Accept-Language"}


@cache
def asset_version() -> str:
    """A short digest of the static files' names, sizes and times: changes whenever an asset does."""
    digest = hashlib.sha256()
    for path in sorted(STATIC_DIR.rglob("*")):
        if path.is_file():
            stat = path.stat()
            digest.update(f"{path.relative_to(STATIC_DIR)}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:12]


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.api.settings
    return settings


def render(request: Request, template: str, page: str, *, status_code: int = 200, **extra: Any) -> Response:
    """Render a page shell in the reader's language, with its script's settings as JSON."""
    settings = _settings(request)
    lang = choose_language(request.cookies.get(LANG_COOKIE), request.headers.get("accept-language"))
    t = Translator(lang)
    config: dict[str, Any] = {
        "page": page,
        "lang": lang,
        "messages": catalog(lang),
        "map": {
            "tile_url": settings.map_tile_url,
            "attribution": settings.map_tile_attribution,
            "max_zoom": settings.map_tile_max_zoom,
        },
        "google": bool(settings.google_client_id),
        **extra,
    }
    body = _templates.get_template(template).render(
        t=t,
        lang=lang,
        languages=LANGUAGES,
        page=page,
        config=config,
        v=asset_version(),
        vendor_ready=VENDOR_MARKER.exists(),
        google=config["google"],
        **extra,
    )
    return HTMLResponse(body, status_code=status_code, headers=_HEADERS)


@router.get("/")
async def fleet_page(request: Request) -> Response:
    return render(request, "fleet.html", "fleet")


@router.get("/login")
async def login_page(request: Request) -> Response:
    return render(request, "login.html", "login")


@router.get("/register")
async def register_page(request: Request) -> Response:
    return render(request, "register.html", "register")


@router.get("/pending")
async def pending_page(request: Request) -> Response:
    return render(request, "pending.html", "pending")


@router.get("/vehicles/{vehicle_id}")
async def vehicle_page(request: Request, vehicle_id: VehicleId) -> Response:
    settings = _settings(request)
    grafana = None
    if settings.grafana_url:
        grafana = settings.grafana_url.rstrip("/") + settings.grafana_vehicle_dashboard.replace(
            "{vehicle_id}", str(vehicle_id)
        )
    return render(request, "vehicle.html", "vehicle", vehicle_id=vehicle_id, grafana_url=grafana)


@router.get("/admin")
async def admin_page(request: Request) -> Response:
    return render(request, "admin.html", "admin")


@router.get("")
async def ui_root() -> RedirectResponse:
    return RedirectResponse("/ui/", status_code=307)


@router.get("/{rest:path}")
async def not_found_page(request: Request, rest: str) -> Response:
    """An unknown page answers in HTML (the API's JSON 404 is for programs, not readers)."""
    return render(request, "not_found.html", "not_found", status_code=404)


def install(app: FastAPI) -> None:
    """Serve the static files and the pages of the web UI."""
    app.mount("/ui/static", StaticFiles(directory=STATIC_DIR), name="ui-static")
    app.include_router(router)
