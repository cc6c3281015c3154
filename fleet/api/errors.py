"""One error shape for the whole API: `{"error": {"code": ..., "message": ...}}`, never a traceback."""

from __future__ import annotations

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from fleet.errors import Conflict, DatabaseUnavailable, FleetError, InvalidInput, NotFound

log = structlog.get_logger(__name__)

_STATUS_CODES = {404: "not_found", 401: "unauthorized", 403: "forbidden", 405: "method_not_allowed",
                 409: "conflict", 413: "payload_too_large", 422: "invalid_input", 429: "rate_limited",
                 503: "unavailable"}


def error_body(code: str, message: str) -> dict[str, dict[str, str]]:
    return {"error": {"code": code, "message": message}}


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _STATUS_CODES.get(exc.status_code, "http_error")
        message = exc.detail if isinstance(exc.detail, str) else code
        return JSONResponse(error_body(code, message), status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        parts = []
        for err in exc.errors()[:5]:
            where = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
            parts.append(f"{where}: {err.get('msg')}")
        return JSONResponse(error_body("invalid_input", "; ".join(parts) or "invalid input"), status_code=422)

    @app.exception_handler(FleetError)
    async def domain_error(request: Request, exc: FleetError) -> JSONResponse:
        if isinstance(exc, NotFound):
            return JSONResponse(error_body("not_found", str(exc)), status_code=404)
        if isinstance(exc, Conflict):
            return JSONResponse(error_body("conflict", str(exc)), status_code=409)
        if isinstance(exc, InvalidInput):
            return JSONResponse(error_body("invalid_input", str(exc)), status_code=400)
        if isinstance(exc, DatabaseUnavailable):
            log.error("database_unavailable", path=request.url.path, error=str(exc))
            return JSONResponse(error_body("unavailable", "database unavailable"), status_code=503)
        log.error("unhandled_domain_error", path=request.url.path, error=str(exc))
        return JSONResponse(error_body("internal_error", "internal error"), status_code=500)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled_error", path=request.url.path)
        return JSONResponse(error_body("internal_error", "internal error"), status_code=500)
