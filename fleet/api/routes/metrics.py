"""`/metrics` (Prometheus text) and `/` (redirect to the web UI)."""

from __future__ import annotations

import ipaddress

from fastapi import APIRouter, Request, Response
from fastapi.responses import RedirectResponse

from fleet.api.deps import ClientAddr, State
from fleet.api.errors import ApiError
from fleet.api.schemas import errors
from fleet.auth.tokens import same_secret
from fleet.ops.metrics_http import render_metrics

router = APIRouter()


def _is_local(address: str | None) -> bool:
    if address is None:
        return False
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


@router.get(
    "/metrics",
    tags=["health"],
    responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text format"}, **errors(403)},
    summary="Prometheus metrics: localhost only, unless METRICS_ALLOW_PUBLIC=1 or with METRICS_API_KEY "
    "(X-API-Key, or Authorization: Bearer as Prometheus' scrape `authorization` sends it)",
)
async def metrics(request: Request, state: State, address: ClientAddr) -> Response:
    settings = state.settings
    key = request.headers.get("x-api-key")
    if key is None:
        scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
        key = credentials.strip() if scheme.lower() == "bearer" and credentials.strip() else None
    allowed = (
        settings.metrics_allow_public
        or _is_local(address)
        or (
            key is not None
            and settings.metrics_api_key is not None
            and same_secret(key, settings.metrics_api_key.get_secret_value())
        )
    )
    if not allowed:
        raise ApiError(403, "forbidden", "metrics are served to localhost or with the metrics API key only")
    body, content_type = render_metrics()
    return Response(body, media_type=content_type)


@router.get("/", include_in_schema=False)
async def root() -> RedirectResponse:
    return RedirectResponse("/ui/", status_code=307)
