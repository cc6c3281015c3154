"""HTTP metrics (Prometheus default registry) and the ASGI middleware that records them.

Labels are bounded: the route *template* (`/vehicles/{vehicle_id}`), never the raw path, and the
status code; unmatched paths share one label value.
"""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

HTTP_REQUESTS = Counter(
    "fleet_http_requests_total", "HTTP requests answered by the API", ["method", "route", "status"]
)
HTTP_DURATION = Histogram(
    "fleet_http_request_duration_seconds",
    "Time to answer an HTTP request (until the response starts)",
    ["method", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
AUTH_ATTEMPTS = Counter(
    "fleet_auth_attempts_total", "Sign-in attempts by method and result", ["method", "result"]
)
AUTH_FAILURES = Counter(
    "fleet_auth_failures_total",
    "Failed authentications: password sign-ins, bad bearer tokens, bad API keys, revoked sessions",
    ["kind"],
)
UNMATCHED_ROUTE = "unmatched"


def route_label(scope: Scope) -> str:
    route: Any = scope.get("route")
    path = getattr(route, "path_format", None) or getattr(route, "path", None)
    return str(path) if path else UNMATCHED_ROUTE


def render_metrics() -> tuple[bytes, str]:
    """The default registry in the Prometheus text format, and its content type."""
    return generate_latest(), CONTENT_TYPE_LATEST


class HttpMetricsMiddleware:
    """Count requests and time them by route template and status."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                HTTP_DURATION.labels(scope["method"], route_label(scope)).observe(
                    time.perf_counter() - started
                )
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            HTTP_REQUESTS.labels(scope["method"], route_label(scope), str(status)).inc()
