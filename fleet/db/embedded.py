"""The private PostgreSQL started when no database is configured (the `pgserver` package).

It lives under `DATA_DIR/pg`, listens on a Unix socket only (no TCP port at all), survives restarts of
the server (the data directory is reused) and is stopped when the process that started it exits.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import structlog

from fleet.errors import DatabaseUnavailable

log = structlog.get_logger(__name__)

EMBEDDED_DB_NAME = "fleet"


class EmbeddedPostgres:
    """Start (or reuse) a socket-only PostgreSQL under `root` and hand out its owner DSN."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self._server: Any = None

    def start(self) -> str:
        """Start the server if needed, make sure the `fleet` database exists, return its DSN."""
        self.root.mkdir(parents=True, exist_ok=True)
        # platformdirs warns when XDG_RUNTIME_DIR is unset (containers, CI); a runtime dir under DATA_DIR is fine.
        os.environ.setdefault("XDG_RUNTIME_DIR", str(self.root.parent / "run"))
        Path(os.environ["XDG_RUNTIME_DIR"]).mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                import pgserver

                self._server = pgserver.get_server(self.root, cleanup_mode="stop")
            exists = self._server.psql(f"SELECT 1 FROM pg_database WHERE datname = '{EMBEDDED_DB_NAME}';")
            if "(1 row)" not in exists:
                self._server.psql(f"CREATE DATABASE {EMBEDDED_DB_NAME};")
        except Exception as err:
            raise DatabaseUnavailable(
                f"could not start the embedded PostgreSQL under {self.root}: {err}"
            ) from err
        dsn: str = self._server.get_uri(EMBEDDED_DB_NAME)
        log.info("embedded_postgres_ready", data_dir=str(self.root))
        return dsn

    def stop(self) -> None:
        """Stop the server this process started (a server reused from another process is left alone)."""
        if self._server is not None:
            try:
                self._server.cleanup()
            finally:
                self._server = None
