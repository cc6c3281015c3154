"""Structured logging: JSON lines to stderr and to a rotating file, readable console output on a terminal.

Logs go to stderr so that stdout carries a command's result only: `ID=$(fleet vehicle add --name T)`
captures the id and nothing else. (Service managers and containers collect both streams.)

Context (request id, device IMEI, peer) is bound with `structlog.contextvars`; secrets are masked by a
processor so that a careless `log.info(..., password=...)` never reaches a file.
"""

from __future__ import annotations

import logging
import logging.handlers
import sys
from pathlib import Path
from typing import Any

import structlog

# Keys whose values are never written, whatever the caller passes.
SENSITIVE_KEYS = frozenset(
    {
        "password",
        "password_hash",
        "secret",
        "secret_key",
        "api_key",
        "token",
        "access_token",
        "refresh_token",
        "authorization",
        "db_password",
        "client_secret",
        "cookie",
    }
)
LOG_FILE_MAX_BYTES = 20 * 1024 * 1024
LOG_FILE_BACKUPS = 5


def _mask_secrets(_: Any, __: str, event: dict[str, Any]) -> dict[str, Any]:
    for key in list(event):
        if key.lower() in SENSITIVE_KEYS and event[key] is not None:
            event[key] = "***"
    return event


def configure_logging(level: str = "INFO", fmt: str = "auto", log_dir: Path | None = None) -> None:
    """Route structlog and stdlib logging to stderr (JSON or console) and to `log_dir/server.log`."""
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _mask_secrets,
        structlog.processors.StackInfoRenderer(),
    ]
    console = fmt == "console" or (fmt == "auto" and sys.stderr.isatty())
    json_renderer = structlog.processors.JSONRenderer()
    stream_renderer: Any = structlog.dev.ConsoleRenderer() if console else json_renderer

    def formatter(renderer: Any) -> logging.Formatter:
        return structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                renderer,
            ],
        )

    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    stream = logging.StreamHandler(sys.stderr)
    stream.setFormatter(formatter(stream_renderer))
    root.addHandler(stream)
    if log_dir is not None:
        log_dir.mkdir(parents=True, exist_ok=True)
        file_handler = logging.handlers.RotatingFileHandler(
            log_dir / "server.log",
            maxBytes=LOG_FILE_MAX_BYTES,
            backupCount=LOG_FILE_BACKUPS,
            encoding="utf-8",
        )
        file_handler.setFormatter(formatter(json_renderer))
        root.addHandler(file_handler)
    root.setLevel(level.upper())
    # uvicorn's access log duplicates our request log; keep its errors.
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
    # pgserver narrates every pg_ctl call at INFO; its warnings and errors still come through.
    logging.getLogger("pgserver").setLevel(logging.WARNING)
    logging.getLogger("httpx").setLevel(logging.WARNING)

    structlog.configure(
        processors=[
            # Drop disabled levels before any processor runs (DEBUG lines on hot paths cost nothing).
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )


def set_level(level: str) -> None:
    """Change the level of every logger that follows the root (a hot reload of LOG_LEVEL)."""
    logging.getLogger().setLevel(level.upper())
