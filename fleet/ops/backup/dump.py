"""`fleet backup`: a consistent `pg_dump` (custom format, compressed) with a manifest, optionally verified and
uploaded, then old backups rotated out.

Consistency: a REPEATABLE READ transaction exports its snapshot; `pg_dump --snapshot` dumps exactly that
snapshot while the same transaction counts the rows of every table. The counts go into the manifest
(`<file>.json`, with the SHA-256 of the dump), so a verification or a restore months later can tell whether
it got every row back. The dump is written as `*.partial` and renamed only when complete: a file with the
final name is always whole.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import socket
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import structlog

from fleet.config import Settings
from fleet.ops.backup import status
from fleet.ops.backup.catalog import alembic_revision, require_rights, server_major, table_counts
from fleet.ops.backup.errors import BackupError
from fleet.ops.backup.restore import VerifyReport, verify_backup
from fleet.ops.backup.tools import find_tools, libpq_target, run_tool

log = structlog.get_logger(__name__)

NAME_PREFIX = "fleet-"
SUFFIX = ".dump"
MANIFEST_VERSION = 1


@dataclass
class BackupResult:
    path: Path
    manifest_path: Path
    size_bytes: int
    sha256: str
    started_at: datetime
    finished_at: datetime
    counts: dict[str, int]
    verified: VerifyReport | None = None
    uploaded_to: str | None = None
    deleted: list[Path] = field(default_factory=list)


def backup_name(moment: datetime) -> str:
    """`fleet-20261205T023000Z.dump`: UTC, sortable by name."""
    return f"{NAME_PREFIX}{moment.astimezone(UTC):%Y%m%dT%H%M%SZ}{SUFFIX}"


def manifest_path(dump: Path) -> Path:
    return dump.with_name(dump.name + ".json")


def read_manifest(dump: Path) -> dict[str, Any] | None:
    """The manifest beside a dump, or None when there is none (or it is unreadable)."""
    path = manifest_path(dump)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def local_backups(directory: Path) -> list[Path]:
    """Backups in `directory`, oldest first."""
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.glob(f"{NAME_PREFIX}*{SUFFIX}") if p.is_file())


def rotate(directory: Path, keep: int) -> list[Path]:
    """Delete all but the newest `keep` backups (and their manifests); return what was deleted."""
    backups = local_backups(directory)
    doomed = backups[: max(0, len(backups) - keep)]
    for path in doomed:
        path.unlink(missing_ok=True)
        manifest_path(path).unlink(missing_ok=True)
        log.info("backup_rotated_out", file=path.name)
    return doomed


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True), encoding="utf-8")
    tmp.chmod(0o600)
    tmp.replace(path)


def _target_path(directory: Path, started: datetime) -> Path:
    try:
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as err:
        raise BackupError(f"cannot create the backup directory {directory}: {err}") from err
    path = directory / backup_name(started)
    if path.exists():
        raise BackupError(f"{path} already exists (two backups in the same second?)")
    return path


async def _dump(owner_dsn: str, settings: Settings, partial: Path) -> dict[str, Any]:
    """Dump into `partial` and count rows in the same snapshot; returns the manifest's database facts."""
    conn = await asyncpg.connect(owner_dsn)
    try:
        await require_rights(conn, dump=True)
        major = await server_major(conn)
        tools = find_tools(major, settings.pg_bin_dir)
        facts: dict[str, Any] = {
            "server_version": await conn.fetchval("SHOW server_version"),
            "database": await conn.fetchval("SELECT current_database()"),
            "alembic_revision": await alembic_revision(conn),
            "pg_dump_major": tools.major,
        }
        transaction = conn.transaction(isolation="repeatable_read", readonly=True)
        await transaction.start()
        try:
            snapshot = await conn.fetchval("SELECT pg_export_snapshot()")
            target, env = libpq_target(owner_dsn)
            args = [
                tools.pg_dump,
                "--format=custom",
                f"--compress={settings.backup_compress_level}",
                f"--snapshot={snapshot}",
                "--no-password",
                f"--file={partial}",
                f"--dbname={target}",
            ]
            # The exporting transaction stays open until pg_dump is done (it must outlive the import).
            _, counts = await asyncio.gather(run_tool(args, env, "pg_dump"), table_counts(conn))
        finally:
            await transaction.rollback()
        facts["row_counts"] = counts
        return facts
    finally:
        await conn.close()


async def create_backup(
    owner_dsn: str,
    settings: Settings,
    *,
    out_dir: Path | None = None,
    verify: bool = False,
    now: datetime | None = None,
) -> BackupResult:
    """Take one backup (see the module docs); records the outcome in `backup_runs` and the metrics."""
    started = now or datetime.now(UTC)
    directory = (out_dir or settings.backup_path).resolve()
    try:
        result = await _create(owner_dsn, settings, directory, verify, started)
    except BaseException as err:
        if not isinstance(err, asyncio.CancelledError):
            log.error("backup_failed", error=str(err))
        await status.record_failure(owner_dsn, started, f"{type(err).__name__}: {err}")
        raise
    await status.record_success(owner_dsn, result)
    return result


async def _create(
    owner_dsn: str, settings: Settings, directory: Path, verify: bool, started: datetime
) -> BackupResult:
    path = await asyncio.to_thread(_target_path, directory, started)
    partial = path.with_name(path.name + ".partial")
    log.info("backup_started", file=str(path))
    try:
        facts = await _dump(owner_dsn, settings, partial)
        os.chmod(partial, 0o600)
        digest = await asyncio.to_thread(file_sha256, partial)
        partial.replace(path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    finished = datetime.now(UTC)
    size = path.stat().st_size
    manifest = {
        "format": MANIFEST_VERSION,
        "file": path.name,
        "created_at": started.isoformat(),
        "finished_at": finished.isoformat(),
        "host": socket.gethostname(),
        "size_bytes": size,
        "sha256": digest,
        "compress_level": settings.backup_compress_level,
        **facts,
    }
    _write_json(manifest_path(path), manifest)
    result = BackupResult(
        path=path,
        manifest_path=manifest_path(path),
        size_bytes=size,
        sha256=digest,
        started_at=started,
        finished_at=finished,
        counts=facts["row_counts"],
    )
    if verify:
        report = await verify_backup(path, owner_dsn, settings)
        result.verified = report
        if not report.ok:
            bad = path.with_name(path.name + ".bad")
            path.replace(bad)
            manifest_path(path).replace(manifest_path(bad))
            raise BackupError(f"verification failed, backup kept as {bad.name}: {report.summary()}")
        manifest["verified_at"] = datetime.now(UTC).isoformat()
        _write_json(manifest_path(path), manifest)
    if settings.backup_s3_bucket:
        from fleet.ops.backup.s3 import upload

        result.uploaded_to = await upload(settings, path, manifest_path(path))
    result.deleted = rotate(directory, settings.backup_keep)
    log.info(
        "backup_done",
        file=str(path),
        size_bytes=size,
        seconds=round((datetime.now(UTC) - started).total_seconds(), 1),
        verified=verify,
        uploaded_to=result.uploaded_to,
        rotated_out=len(result.deleted),
    )
    return result
