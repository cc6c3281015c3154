"""One error shape for the whole API: `{"error": {"code": ..., "message": ...}}`, never a traceback."""

from __future__ import annotations

import asyncpg
import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from fleet.errors import Conflict, DatabaseUnavailable, FleetError, Forbidden, InvalidInput, NotFound

log = structlog.get_logger(__name__)

_STATUS_CODES = {
    404: "not_found",
    401: "unauthorized",
    403: "forbidden",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    422: "invalid_input",
    429: "rate_limited",
    503: "unavailable",
}


# Domain errors and their HTTP status; the body's code is the error's own (`device_linked_elsewhere`, ...).
_DOMAIN_STATUS: tuple[tuple[type[FleetError], int], ...] = (
    (NotFound, 404),
    (Conflict, 409),
    (InvalidInput, 400),
    (Forbidden, 403),
)


def error_body(code: str, message: str) -> dict[str, dict[str, str]]:
    return {"error": {"code": code, "message": message}}


class ApiError(StarletteHTTPException):
    """An HTTP error with a specific machine-readable code (`pending_approval`, `token_expired`, ...)."""

    def __init__(
        self, status_code: int, code: str, message: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(status_code=status_code, detail=message, headers=headers)
        self.code = code


# PostgreSQL failures that mean "the database is not reachable right now", not a bug.
_DB_DOWN = (
    asyncpg.PostgresConnectionError,
    asyncpg.TooManyConnectionsError,
    asyncpg.CannotConnectNowError,
    asyncpg.InterfaceError,
    ConnectionError,
)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = getattr(exc, "code", None) or _STATUS_CODES.get(exc.status_code, "http_error")
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
        for kind, status in _DOMAIN_STATUS:
            if isinstance(exc, kind):
                return JSONResponse(error_body(exc.code or "error", str(exc)), status_code=status)
        if isinstance(exc, DatabaseUnavailable):
            log.error("database_unavailable", path=request.url.path, error=str(exc))
            return JSONResponse(error_body("unavailable", "database unavailable"), status_code=503)
        log.error("unhandled_domain_error", path=request.url.path, error=str(exc))
        return JSONResponse(error_body("internal_error", "internal error"), status_code=500)

    @app.exception_handler(asyncpg.DataError)
    async def data_error(request: Request, exc: asyncpg.DataError) -> JSONResponse:
        # A value PostgreSQL cannot take (out of range, bad encoding): the caller's input, not a crash.
        log.info("database_rejected_value", path=request.url.path, error=str(exc))
        return JSONResponse(
            error_body("invalid_input", "a value is out of range or malformed"), status_code=400
        )

    @app.exception_handler(asyncpg.InsufficientPrivilegeError)
    async def privilege_error(request: Request, exc: asyncpg.InsufficientPrivilegeError) -> JSONResponse:
        # Row-level security or a guard trigger refused the change.
        log.warning("database_refused_change", path=request.url.path, error=str(exc))
        return JSONResponse(error_body("forbidden", "not allowed for this account"), status_code=403)

    for db_down in _DB_DOWN:

        @app.exception_handler(db_down)
        async def database_down(request: Request, exc: Exception) -> JSONResponse:
            log.error("database_unavailable", path=request.url.path, error=str(exc))
            return JSONResponse(error_body("unavailable", "database unavailable"), status_code=503)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled_error", path=request.url.path)
        return JSONResponse(error_body("internal_error", "internal error"), status_code=500)
