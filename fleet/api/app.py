"""The FastAPI app factory and its lifespan.

`create_app()` with no runtime builds a self-contained app whose lifespan starts the database (used by
tests and `uvicorn --factory`); `fleet serve` passes its own Runtime, which already owns the pool and the
other roles, so the lifespan only attaches to it. Either way the lifespan owns what the API itself needs:
the rate limiter (Redis or in-process), the Redis readiness check, and the mail sender task.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

import structlog
from fastapi import FastAPI

import fleet
from fleet.api.docs import install_docs
from fleet.api.errors import install_error_handlers
from fleet.api.middleware import BodySizeLimit, DeprecationHeaders, RequestContext
from fleet.api.routes import (
    admin,
    admin_devices,
    admin_settings,
    admin_vehicles,
    api_keys,
    audit,
    auth,
    commands,
    devices,
    events,
    google,
    grafana,
    health,
    metrics,
    security_events,
    vehicles,
)
from fleet.api.security_headers import SecurityHeaders
from fleet.api.state import ApiState, parse_networks
from fleet.config import Settings, load_settings
from fleet.db import Database
from fleet.live import routes as live_routes
from fleet.live.hub import LiveHub
from fleet.logging import mask_query_tokens
from fleet.mail.sender import MailSender
from fleet.observability import business as business_metrics
from fleet.observability.host import HOST as HOST_METRICS
from fleet.ops.api_hooks import start_api_jobs
from fleet.ops.bus import LiveBus, ensure_bus
from fleet.ops.metrics_http import HttpMetricsMiddleware
from fleet.ops.ratelimit import RateLimiter
from fleet.runtime import Runtime
from fleet.web import pages as web_pages

log = structlog.get_logger(__name__)

DESCRIPTION = """
Telematics server: vehicles, trackers, positions, measurements, alarms.

**Authentication.** `POST /auth/login` returns a 15-minute access token (JWT) and sets a 30-day refresh
token in an HttpOnly cookie scoped to `/auth`; `POST /auth/refresh` rotates it. Send
`Authorization: Bearer <access token>` — or a personal API key (`POST /auth/api-keys`), or the server's
static `API_KEY` — with every other request. New accounts are `pending` until a superuser approves them:
they can sign in, but data endpoints answer `403 pending_approval`.

**Tenancy.** Every request runs in a database transaction that carries the caller's identity; row-level
security shows an owner only the vehicles assigned to them. Another owner's vehicle answers `404`.

**Errors** always look like `{"error": {"code": "...", "message": "..."}}`. **Lists** take `limit`/`offset`
and answer `total` and `has_more`.
"""

OPENAPI_TAGS = [
    {"name": "auth", "description": "Registration, sign-in (password or Google), sessions"},
    {"name": "api keys", "description": "Personal API keys"},
    {"name": "vehicles", "description": "The fleet, status, alarms and history"},
    {
        "name": "admin",
        "description": "Users (approve, block, passwords), vehicles, trackers, keys and access (superusers)",
    },
    {"name": "audit", "description": "Admin audit log (superusers)"},
    {"name": "device api v2", "description": "Seed-000 device API"},
    {"name": "device api v1", "description": "Deprecated: use v2"},
    {"name": "device api (README aliases)", "description": "Short paths from the seed's README"},
    {"name": "health", "description": "Liveness, readiness, metrics"},
]


async def _redis_ping_factory(redis_url: str, stack: AsyncExitStack) -> object:
    import redis.asyncio as aioredis

    client = aioredis.from_url(redis_url, socket_connect_timeout=2, socket_timeout=2)
    stack.push_async_callback(client.aclose)

    async def ping() -> bool:
        try:
            return bool(await client.ping())
        except (aioredis.RedisError, OSError, TimeoutError):
            return False

    return ping


async def _drop_bus(runtime: Runtime, bus: LiveBus) -> None:
    await bus.close()
    runtime.extras.pop("bus", None)


@asynccontextmanager
async def api_resources(app: FastAPI, runtime: Runtime) -> AsyncIterator[None]:
    """Create what the API owns for the lifetime of the app, and release it in reverse order."""
    settings = runtime.settings
    async with AsyncExitStack() as stack:
        limiter = RateLimiter.from_settings(settings)
        stack.push_async_callback(limiter.close)
        state = ApiState(
            runtime=runtime, limiter=limiter, trusted_proxies=parse_networks(settings.trusted_proxies)
        )
        if settings.database_read_url:
            state.read_db = Database.replica(settings, settings.database_read_url)
            await state.read_db.start()
            stack.push_async_callback(state.read_db.close)
        if settings.redis_url and "redis_ping" not in runtime.extras:
            runtime.extras["redis_ping"] = await _redis_ping_factory(settings.redis_url, stack)
        stack.callback(runtime.on_settings_change(limiter.apply_settings))
        HOST_METRICS.watch(settings)
        gauges = business_metrics.job(runtime.db, lambda: runtime.settings, runtime.extras.get("redis_ping"))
        stack.callback(runtime.run_job(gauges).cancel)
        if settings.smtp_url:
            state.mail_sender = MailSender(runtime.db, settings)
            log.info("mail_sender_started", host=state.mail_sender.target.hostname)
            stack.callback(runtime.run_job(state.mail_sender.job).cancel)
        start_api_jobs(runtime, stack)
        # The live streams: one hub per process on the shared bus (created here when no other role did).
        bus, created_bus = await ensure_bus(runtime)
        if created_bus:
            stack.push_async_callback(_drop_bus, runtime, bus)
        state.live = LiveHub(settings, runtime.db, bus, runtime.jobs)
        stack.push_async_callback(state.live.close)
        stack.callback(runtime.on_settings_change(state.live.apply_settings))
        app.state.api = state
        log.info(
            "api_started", rate_limits=limiter.backend, mail="smtp" if settings.smtp_url else "outbox only"
        )
        yield


def create_app(settings: Settings | None = None, runtime: Runtime | None = None) -> FastAPI:
    """Build the API application."""
    settings = settings or (runtime.settings if runtime is not None else load_settings())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if runtime is not None:
            app.state.runtime = runtime
            async with api_resources(app, runtime):
                yield
            return
        db = Database(settings)
        await db.start()
        app.state.runtime = Runtime(settings=settings, db=db, roles=["api"])
        try:
            async with api_resources(app, app.state.runtime):
                yield
        finally:
            await app.state.runtime.cancel_tasks()
            await db.close()

    app = FastAPI(
        title="Fleet Server API",
        version=fleet.__version__,
        description=DESCRIPTION,
        openapi_tags=OPENAPI_TAGS,
        lifespan=lifespan,
        docs_url=None,  # served by fleet.api.docs from local assets, not from a CDN
        redoc_url=None,
    )
    mask_query_tokens()  # uvicorn logs WebSocket paths with their query string: never with a token
    install_error_handlers(app)
    app.add_middleware(BodySizeLimit)
    app.add_middleware(DeprecationHeaders, prefix="/api/v1/", headers=devices.V1_HEADERS)
    app.add_middleware(HttpMetricsMiddleware)
    app.add_middleware(SecurityHeaders, settings=settings)
    app.add_middleware(RequestContext)  # outermost: the request id covers everything below
    install_docs(app)
    # Starlette tries routes in order and each included router costs a few microseconds to rule out, so the
    # most requested reads come first (no path of the routers moved behind them starts with /vehicles or /ws).
    for router in (
        live_routes.router,  # before vehicles.router: /vehicles/latest-positions is not /vehicles/{id}
        vehicles.router,
        events.vehicle_router,
        health.router,
        metrics.router,
        auth.router,
        google.router,
        grafana.router,
        api_keys.router,
        admin.router,
        admin_vehicles.router,
        admin_devices.router,
        admin_settings.router,
        audit.router,
        security_events.router,
        devices.build_router("v2"),
        events.device_router,
        commands.router,
        devices.build_router("v1"),
        devices.aliases,
    ):
        app.include_router(router)
    web_pages.install(app)
    return app
