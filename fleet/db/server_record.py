"""Which database a running server uses, so that a CLI command does not silently use another one.

`fleet serve` writes `DATA_DIR/server.json` (its pid and a password-free description of its database) and
removes it when it stops. A command that works on data (`fleet vehicle ...`, `fleet user ...`, `fleet sync`)
compares: when the server running from the same `DATA_DIR` uses another database — typically the server has
`DATABASE_URL` in its service environment and the shell does not — the command refuses and says which
settings to give it. With the embedded database, a command never creates a new one: run from another
directory (so another `./var`), it refuses with a hint instead of starting an empty PostgreSQL there.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from fleet.config import Settings
from fleet.errors import ConfigError

RECORD_NAME = "server.json"


def database_label(settings: Settings) -> str:
    """The database these settings lead to, without credentials."""
    dsn = settings.owner_dsn()
    if dsn is None:
        return f"the embedded PostgreSQL under {(settings.data_dir / 'pg').resolve()}"
    parts = urlsplit(dsn)
    host = parts.hostname or "localhost"
    port = f":{parts.port}" if parts.port else ""
    user = f"{parts.username}@" if parts.username else ""
    return f"{parts.scheme}://{user}{host}{port}{parts.path}"


def _record_path(settings: Settings) -> Path:
    return settings.data_dir.resolve() / RECORD_NAME


def write_record(settings: Settings) -> Path:
    """Note that this process serves from `DATA_DIR` with this database (removed by `remove_record`)."""
    path = _record_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"pid": os.getpid(), "database": database_label(settings)}), encoding="utf-8")
    tmp.replace(path)
    return path


def remove_record(path: Path) -> None:
    with contextlib.suppress(OSError, ValueError):
        if json.loads(path.read_text(encoding="utf-8")).get("pid") == os.getpid():
            path.unlink()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    cmdline = Path(f"/proc/{pid}/cmdline")
    if cmdline.exists():  # a pid reused by an unrelated process after a crash is not our server
        with contextlib.suppress(OSError):
            return b"fleet" in cmdline.read_bytes()
    return True


def running_server(settings: Settings) -> dict[str, Any] | None:
    """The record of a server running from this `DATA_DIR`, if one is running."""
    try:
        record = json.loads(_record_path(settings).read_text(encoding="utf-8"))
        pid = int(record["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return record if pid != os.getpid() and _alive(pid) else None


def check_cli_database(settings: Settings) -> str | None:
    """Refuse a database other than the running server's, or a new embedded one; else a note to show (or None).

    The note says which database is used when no running server confirms it.
    """
    ours = database_label(settings)
    server = running_server(settings)
    data_dir = settings.data_dir.resolve()
    if server is not None and server.get("database") != ours:
        raise ConfigError(
            f"this command would use {ours}, but the server running from {data_dir} (pid {server['pid']}) "
            f"uses {server.get('database')}: give the command the server's database settings "
            "(DATABASE_URL or DB_*, CONFIG_FILE) or run it in the server's environment"
        )
    if settings.uses_embedded_db and not (settings.data_dir / "pg").exists():
        raise ConfigError(
            f"there is no database under {data_dir / 'pg'}: run the command in the directory the server runs "
            "in, or set DATA_DIR (or DATABASE_URL) to the server's; `fleet db upgrade` creates a new database"
        )
    return None if server is not None else f"using {ours}"
