"""Find `pg_dump` / `pg_restore` that can handle the server, and run them.

`pg_dump` must be at least as new as the server (it refuses newer servers); `pg_restore` must read what that
`pg_dump` wrote. Candidates, best first: `PG_BIN_DIR`; the binaries shipped with pgserver (the embedded
server's own version); `/usr/lib/postgresql/<major>/bin` (Debian's postgresql-client-N); `PATH`. The same
major version as the server wins, else the oldest newer one.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from psycopg.conninfo import conninfo_to_dict, make_conninfo

from fleet.ops.backup.errors import BackupError

_VERSION = re.compile(r"\(PostgreSQL\)\s+(\d+)(?:\.(\d+))?")


@dataclass(frozen=True, slots=True)
class PgTools:
    """A matched pair of client programs and their major version."""

    bin_dir: Path
    major: int

    @property
    def pg_dump(self) -> str:
        return str(self.bin_dir / "pg_dump")

    @property
    def pg_restore(self) -> str:
        return str(self.bin_dir / "pg_restore")


def _candidate_dirs(explicit: Path | None) -> list[Path]:
    if explicit is not None:
        return [explicit]
    dirs: list[Path] = []
    try:
        from pgserver._commands import POSTGRES_BIN_PATH

        dirs.append(Path(POSTGRES_BIN_PATH))
    except Exception:  # pgserver is a dependency, but a broken install must not hide the system's tools
        pass
    debian = Path("/usr/lib/postgresql")
    if debian.is_dir():
        dirs.extend(sorted((p / "bin" for p in debian.iterdir()), reverse=True))
    found = shutil.which("pg_dump")
    if found:
        dirs.append(Path(found).resolve().parent)
    return dirs


def tool_major(binary: Path) -> int | None:
    """The major version `binary --version` reports, or None when it does not run."""
    try:
        out = subprocess.run(
            [str(binary), "--version"], capture_output=True, text=True, timeout=10, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    match = _VERSION.search(out.stdout)
    return int(match.group(1)) if match else None


def find_tools(server_major: int, explicit: Path | None = None) -> PgTools:
    """The best `pg_dump`/`pg_restore` pair for a server of `server_major` (see the module docs)."""
    usable: list[PgTools] = []
    seen: list[str] = []
    for directory in _candidate_dirs(explicit):
        if not ((directory / "pg_dump").exists() and (directory / "pg_restore").exists()):
            continue
        major = tool_major(directory / "pg_dump")
        if major is None:
            continue
        seen.append(f"{directory} ({major})")
        if major >= server_major:
            usable.append(PgTools(directory, major))
    if not usable:
        where = "; ".join(seen) or "none found"
        hint = f"set PG_BIN_DIR or install postgresql-client-{server_major}"
        raise BackupError(
            f"no pg_dump/pg_restore able to handle PostgreSQL {server_major} (candidates: {where}); {hint}"
        )
    usable.sort(key=lambda t: (t.major != server_major, t.major))
    return usable[0]


def libpq_target(dsn: str) -> tuple[str, dict[str, str]]:
    """A connection string without the password, and the environment that carries it (never on argv)."""
    params = conninfo_to_dict(dsn)
    password = params.pop("password", None)
    env = dict(os.environ)
    if password:
        env["PGPASSWORD"] = str(password)
    return make_conninfo(**{k: str(v) for k, v in params.items()}), env


async def run_tool(args: list[str], env: dict[str, str], what: str) -> str:
    """Run a client program; raise BackupError with its stderr when it fails. Returns stdout."""
    proc = await asyncio.create_subprocess_exec(
        *args, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        out, err = await proc.communicate()
    except asyncio.CancelledError:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        raise
    if proc.returncode != 0:
        message = err.decode(errors="replace").strip().splitlines()
        tail = " | ".join(message[-5:]) if message else f"exit code {proc.returncode}"
        raise BackupError(f"{what} failed: {tail}")
    return out.decode(errors="replace")
