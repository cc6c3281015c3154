"""The agent's FastAPI app factory: one lifespan owns the runtime, one set of handlers renders every error."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import parse_qsl

import structlog
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.gzip import GZipMiddleware
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fleet.agent import ingest, routes
from fleet.agent.config import CONTRACT_VERSION, AgentConfig
from fleet.agent.deps import require_api_key
from fleet.agent.errors import ApiError, StoreUnavailable
from fleet.agent.faults import FaultInjector
from fleet.agent.runtime import AgentRuntime, ConfigError, RequestRecord

log = structlog.get_logger("fleet.agent")

_HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}


def create_agent_app(config: AgentConfig, *, faults: FaultInjector | None = None) -> FastAPI:
    """Build the Outbound API app; its lifespan opens the buffer and starts the simulator and pruner.

    ``faults`` lets a test hold the injector and change it while the agent runs; by default it is built
    from the config's ``fault_*`` settings.
    """
    if config.api_key is None:
        # Refuse at build time, not at the first request: an agent without a key must never listen.
        raise ConfigError("an API key is required (AGENT_API_KEY or OUTBOUND_API_KEY)")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        runtime = await AgentRuntime.start(config, faults)
        app.state.runtime = runtime
        log.info("agent.ready", db=str(config.db_path), simulate=config.simulate)
        try:
            yield
        finally:
            await runtime.stop()

    app = FastAPI(
        title="Fleet vehicle Outbound API",
        version=CONTRACT_VERSION,
        description="Reference vehicle agent; the contract is docs/DATA_CONTRACT.md.",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    secured = [Depends(require_api_key)]
    app.include_router(routes.router, dependencies=secured)
    app.include_router(ingest.router, dependencies=secured)
    _install_error_handlers(app)
    # Vehicles pull over LTE: JSON rows compress ~13x, and level 5 costs ~13 ms for a 50,000-row page.
    app.add_middleware(GZipMiddleware, minimum_size=1024, compresslevel=5)
    app.add_middleware(RequestLogMiddleware)
    return app


def error_response(status: int, code: str, message: str) -> JSONResponse:
    """Render the contract's error shape."""
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)


def _install_error_handlers(app: FastAPI) -> None:
    async def api_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ApiError)
        return error_response(exc.status, exc.code, exc.message)

    async def store_unavailable(_: Request, exc: Exception) -> JSONResponse:
        log.error("agent.db_unavailable", error=str(exc))
        return error_response(503, "db_unavailable", "the vehicle's local database is unavailable")

    async def invalid_request(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        problems = [f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()[:5]]
        return error_response(400, "invalid_parameter", "; ".join(problems))

    async def http_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        return error_response(
            exc.status_code, _HTTP_CODES.get(exc.status_code, "http_error"), str(exc.detail)
        )

    async def unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("agent.unexpected_error", error=repr(exc))
        return error_response(500, "internal_error", "unexpected error in the agent")

    app.add_exception_handler(ApiError, api_error)
    app.add_exception_handler(StoreUnavailable, store_unavailable)
    app.add_exception_handler(RequestValidationError, invalid_request)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(Exception, unexpected)


class RequestLogMiddleware:
    """Record each request's method, path, query and status in the runtime's bounded request log."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500

        async def record_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, record_status)
        finally:
            runtime: AgentRuntime | None = getattr(scope["app"].state, "runtime", None)
            if runtime is not None:
                query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1")))
                runtime.requests.append(RequestRecord(scope["method"], scope["path"], query, status))
