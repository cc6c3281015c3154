"""HTTP metrics (Prometheus default registry) and the ASGI middleware that records them.

Labels are bounded: the route *template* (`/vehicles/{vehicle_id}`), never the raw path, and the
status code; unmatched paths share one label value.

Two families describe the same requests: `fleet_http_*` (the original names, kept for existing dashboards)
and seed 004's names (`http_requests_total{method,route,status_code}`, `http_request_duration_seconds`,
`http_request_size_bytes`, `http_response_size_bytes`), which the alert rules and dashboards use.
"""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest
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
_DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_SIZE_BUCKETS = (64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216)
REQUESTS = Counter("http_requests_total", "HTTP requests answered", ["method", "route", "status_code"])
DURATION = Histogram(
    "http_request_duration_seconds",
    "Time to answer an HTTP request (until the response starts)",
    ["method", "route"],
    buckets=_DURATION_BUCKETS,
)
REQUEST_SIZE = Histogram(
    "http_request_size_bytes", "Declared request body size (Content-Length)", ["route"], buckets=_SIZE_BUCKETS
)
RESPONSE_SIZE = Histogram(
    "http_response_size_bytes", "Response body size sent", ["route"], buckets=_SIZE_BUCKETS
)
IN_FLIGHT = Gauge("http_requests_in_flight", "HTTP requests being answered")
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


def _content_length(scope: Scope) -> int:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return max(int(value), 0)
            except ValueError:
                return 0
    return 0


class _Children:
    """The labelled children a request updates, looked up once per label combination.

    `Metric.labels(...)` validates and locks on every call (about a microsecond each, six per request);
    the children it returns are permanent, so keeping them in a dict gives the same series for a dict
    lookup. Bounded like the label values themselves; cleared (and refilled) if it ever grows past that.
    """

    MAX = 4096

    def __init__(self) -> None:
        self.timing: dict[tuple[str, str], tuple[Any, Any]] = {}
        self.outcome: dict[tuple[str, str, int], tuple[Any, Any, Any, Any]] = {}

    def durations(self, method: str, route: str) -> tuple[Any, Any]:
        key = (method, route)
        found = self.timing.get(key)
        if found is None:
            if len(self.timing) >= self.MAX:
                self.timing.clear()
            found = self.timing[key] = (HTTP_DURATION.labels(method, route), DURATION.labels(method, route))
        return found

    def counts(self, method: str, route: str, status: int) -> tuple[Any, Any, Any, Any]:
        key = (method, route, status)
        found = self.outcome.get(key)
        if found is None:
            if len(self.outcome) >= self.MAX:
                self.outcome.clear()
            code = str(status)
            found = self.outcome[key] = (
                HTTP_REQUESTS.labels(method, route, code),
                REQUESTS.labels(method, route, code),
                REQUEST_SIZE.labels(route),
                RESPONSE_SIZE.labels(route),
            )
        return found


_CHILDREN = _Children()


class HttpMetricsMiddleware:
    """Count requests and time them by route template and status; sizes by route."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        sent = 0

        async def send_wrapper(message: Message) -> None:
            nonlocal status, sent
            if message["type"] == "http.response.start":
                status = message["status"]
                elapsed = time.perf_counter() - started
                for histogram in _CHILDREN.durations(scope["method"], route_label(scope)):
                    histogram.observe(elapsed)
            elif message["type"] == "http.response.body":
                sent += len(message.get("body", b""))
            await send(message)

        IN_FLIGHT.inc()
        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            IN_FLIGHT.dec()
            legacy, requests, request_size, response_size = _CHILDREN.counts(
                scope["method"], route_label(scope), status
            )
            legacy.inc()
            requests.inc()
            request_size.observe(_content_length(scope))
            response_size.observe(sent)
