"""Restore a backup into an empty database, and verify a backup by restoring it into a scratch database.

Both refuse a dump whose SHA-256 differs from its manifest (a damaged or truncated file), restore in one
transaction (`--single-transaction --exit-on-error`: all or nothing), and compare the row count of every
table with the counts the manifest took in the dump's own snapshot. Ownership is not restored
(`--no-owner`): the restoring role owns the objects, so a dump moves between servers with different owner
roles; the grants to `fleet_app` and `fleet_grafana` are restored (the roles are created first if missing).
"""

from __future__ import annotations

import asyncio
import importlib
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import structlog

from fleet.config import Settings
from fleet.ops.backup.catalog import relation_count, require_rights, server_major, table_counts
from fleet.ops.backup.errors import BackupError
from fleet.ops.backup.tools import PgTools, find_tools, libpq_target, run_tool

log = structlog.get_logger(__name__)


@dataclass
class VerifyReport:
    """The outcome of restoring a dump and counting its rows."""

    ok: bool
    reason: str | None = None
    restored: dict[str, int] = field(default_factory=dict)
    expected: dict[str, int] | None = None
    mismatches: dict[str, tuple[int | None, int | None]] = field(default_factory=dict)
    seconds: float = 0.0

    def summary(self) -> str:
        if self.reason:
            return self.reason
        if self.mismatches:
            parts = [f"{t}: expected {e}, restored {r}" for t, (e, r) in sorted(self.mismatches.items())]
            return "row counts differ: " + "; ".join(parts[:10])
        rows = sum(self.restored.values())
        checked = "matching the manifest" if self.expected is not None else "(no manifest to compare with)"
        return f"{len(self.restored)} tables, {rows} rows restored {checked}"


@dataclass
class RestoreResult:
    report: VerifyReport
    database: str


def with_database(dsn: str, name: str) -> str:
    """`dsn` pointing at database `name` (same server, credentials and options)."""
    parts = urlsplit(dsn)
    return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))


def checksum_problem(path: Path) -> str | None:
    """Why the dump does not match its manifest's SHA-256 (None: it matches, or there is no manifest)."""
    from fleet.ops.backup.dump import file_sha256, read_manifest

    if not path.is_file():
        return f"{path} does not exist"
    manifest = read_manifest(path)
    if manifest is None or "sha256" not in manifest:
        return None
    if path.stat().st_size != manifest.get("size_bytes", path.stat().st_size):
        return f"{path.name} is {path.stat().st_size} bytes, its manifest says {manifest['size_bytes']}: truncated or damaged"
    if file_sha256(path) != manifest["sha256"]:
        return f"{path.name} does not match the SHA-256 in its manifest: the file is damaged"
    return None


def compare(
    expected: dict[str, int] | None, restored: dict[str, int]
) -> dict[str, tuple[int | None, int | None]]:
    if expected is None:
        return {}
    return {
        table: (expected.get(table), restored.get(table))
        for table in sorted(set(expected) | set(restored))
        if expected.get(table) != restored.get(table)
    }


def counted(expected: dict[str, int] | None, restored: dict[str, int], started: float) -> VerifyReport:
    """The report of a restore whose rows were counted (ok when they match the manifest's counts)."""
    mismatches = compare(expected, restored)
    return VerifyReport(
        ok=not mismatches,
        restored=restored,
        expected=expected,
        mismatches=mismatches,
        seconds=time.perf_counter() - started,
    )


async def _tools(conn: asyncpg.Connection, settings: Settings) -> PgTools:
    return find_tools(await server_major(conn), settings.pg_bin_dir)


async def _restore_into(tools: PgTools, path: Path, dsn: str) -> None:
    target, env = libpq_target(dsn)
    await run_tool([tools.pg_restore, "--list", str(path)], env, "pg_restore --list (reading the archive)")
    await run_tool(
        [
            tools.pg_restore,
            "--no-owner",
            "--exit-on-error",
            "--single-transaction",
            "--no-password",
            f"--dbname={target}",
            str(path),
        ],
        env,
        "pg_restore",
    )


async def _counts(dsn: str) -> dict[str, int]:
    conn = await asyncpg.connect(dsn)
    try:
        return await table_counts(conn)
    finally:
        await conn.close()


async def ensure_runtime_roles(conn: asyncpg.Connection) -> None:
    """Create `fleet_app` / `fleet_grafana` when missing (cluster-wide; the dump's grants name them)."""
    initial = importlib.import_module("fleet.db.migrations.versions.0001_initial")
    await conn.execute(initial._roles_sql())


async def verify_backup(path: Path, owner_dsn: str, settings: Settings) -> VerifyReport:
    """Restore `path` into a scratch database on the same server, count rows, compare, drop the scratch."""
    from fleet.ops.backup.dump import read_manifest

    started = time.perf_counter()
    problem = await asyncio.to_thread(checksum_problem, path)
    if problem is not None:
        return VerifyReport(False, reason=problem)
    manifest = read_manifest(path) or {}
    expected = manifest.get("row_counts")
    scratch = f"fleet_verify_{secrets.token_hex(4)}"
    conn = await asyncpg.connect(owner_dsn)
    try:
        await require_rights(conn, create_db=True)
        tools = await _tools(conn, settings)
        await conn.execute(f'CREATE DATABASE "{scratch}"')
        try:
            try:
                await _restore_into(tools, path, with_database(owner_dsn, scratch))
            except BackupError as err:
                return VerifyReport(False, reason=str(err), seconds=time.perf_counter() - started)
            restored = await _counts(with_database(owner_dsn, scratch))
        finally:
            await conn.execute(f'DROP DATABASE IF EXISTS "{scratch}" WITH (FORCE)')
    finally:
        await conn.close()
    report = counted(expected, restored, started)
    log.info(
        "backup_verified" if report.ok else "backup_verification_failed",
        file=path.name,
        result=report.summary(),
    )
    return report


async def restore_backup(path: Path, owner_dsn: str, settings: Settings) -> RestoreResult:
    """Restore `path` into the (empty) database of `owner_dsn`; the caller then applies migrations."""
    from fleet.ops.backup.dump import read_manifest

    started = time.perf_counter()
    problem = await asyncio.to_thread(checksum_problem, path)
    if problem is not None:
        raise BackupError(f"refusing to restore: {problem}")
    conn = await asyncpg.connect(owner_dsn)
    try:
        database = str(await conn.fetchval("SELECT current_database()"))
        existing = await relation_count(conn)
        if existing:
            raise BackupError(
                f"database {database} is not empty ({existing} tables, views or sequences): restore needs an "
                "empty database — create a new one and point DATABASE_URL at it (see docs/OPERATIONS.md)"
            )
        tools = await _tools(conn, settings)
        await ensure_runtime_roles(conn)
    finally:
        await conn.close()
    log.info("restore_started", file=str(path), database=database)
    await _restore_into(tools, path, owner_dsn)
    restored = await _counts(owner_dsn)
    report = counted((read_manifest(path) or {}).get("row_counts"), restored, started)
    log.info("restore_done", file=path.name, database=database, result=report.summary())
    return RestoreResult(report, database)
