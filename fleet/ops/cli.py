"""`fleet backup`, `fleet restore`, `fleet cleanup`: thin commands over `fleet.ops.backup` and
`fleet.ops.retention`."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from fleet.ops.retention import RetentionReport


def register(app: typer.Typer) -> None:
    """Add the operations commands to `app`."""
    app.command("backup")(backup_command)
    app.command("restore")(restore_command)
    app.command("cleanup")(cleanup_command)


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


async def _owner_dsn(settings: Any, action: Any) -> Any:
    """Run `action(db)` with the database resolved (embedded started if needed), no pool, no migrations."""
    from fleet.db import Database

    db = Database(settings)
    await db.start(migrate_schema=False, pool=False)
    try:
        return await action(db)
    finally:
        await db.close()


def backup_command(
    out: Annotated[
        Path | None, typer.Option("--out", help="directory for the backup (default DATA_DIR/backups)")
    ] = None,
    verify: Annotated[
        bool,
        typer.Option("--verify", help="restore into a scratch database and compare row counts per table"),
    ] = False,
) -> None:
    """Back up the database (pg_dump custom format, compressed, UTC-timestamped), keeping the newest BACKUP_KEEP."""
    from fleet.cli import console, run_async, settings_or_exit
    from fleet.ops.backup import create_backup

    settings = settings_or_exit()

    async def action(db: Any) -> Any:
        return await create_backup(db.owner_dsn, settings, out_dir=out, verify=verify)

    result = run_async(lambda: _owner_dsn(settings, action))
    console.print(f"backup: {result.path}", highlight=False)
    console.print(
        f"  {_size(result.size_bytes)}, sha256 {result.sha256[:16]}…, "
        f"{len(result.counts)} tables, {sum(result.counts.values())} rows, "
        f"{(result.finished_at - result.started_at).total_seconds():.1f} s",
        highlight=False,
    )
    if result.verified is not None:
        console.print(f"  verified: {result.verified.summary()}", highlight=False)
    if result.uploaded_to:
        console.print(f"  uploaded: {result.uploaded_to}", highlight=False)
    for path in result.deleted:
        console.print(f"  rotated out: {path.name}", highlight=False)


def restore_command(
    file: Annotated[Path, typer.Argument(help="a backup written by `fleet backup`", exists=False)],
    yes: Annotated[bool, typer.Option("--yes", help="do not ask for confirmation")] = False,
) -> None:
    """Restore a backup into an empty database, then apply migrations (the target must be empty)."""
    from fleet.cli import console, fail, run_async, settings_or_exit
    from fleet.ops.backup import restore_backup

    if not file.is_file():
        raise fail(f"{file} does not exist", 2)
    settings = settings_or_exit()
    target = (
        "the embedded database under " + str(settings.data_dir / "pg")
        if settings.uses_embedded_db
        else (f"database {settings.db_name} on {settings.db_host}" if settings.db_host else "DATABASE_URL")
    )
    if not yes:
        if not sys.stdin.isatty():
            raise fail("restore replaces nothing but needs confirmation: add --yes", 2)
        if not typer.confirm(f"Restore {file} into {target}?", default=False):
            raise fail("cancelled", 1)

    async def action(db: Any) -> Any:
        result = await restore_backup(file, db.owner_dsn, settings)
        await db.upgrade()  # a backup of an older version gets the newer schema; role passwords are set
        return result

    result = run_async(lambda: _owner_dsn(settings, action))
    report = result.report
    console.print(f"restored {file.name} into {result.database} in {report.seconds:.1f} s", highlight=False)
    console.print(f"  {report.summary()}", highlight=False)
    if not report.ok:
        raise fail("the restored row counts differ from the backup's manifest (see above)", 1)


def cleanup_command(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="print what would go; change nothing")] = False,
) -> None:
    """Apply the retention policy now: drop expired monthly partitions, delete expired rows in batches."""
    from fleet.cli import _with_db, console, run_async, settings_or_exit
    from fleet.ops import retention

    settings = settings_or_exit()
    now = datetime.now(UTC)

    async def action(db: Any) -> RetentionReport:
        if dry_run:
            return await retention.plan(db, settings, now)
        return await retention.apply(db, settings, now)

    report = run_async(lambda: _with_db(settings, action))
    console.print(retention_table(report))
    verb = "would drop" if dry_run else "dropped"
    console.print(
        f"{verb} {report.partitions_dropped} partition(s); "
        f"{'would delete' if dry_run else 'deleted'} {report.rows_deleted} row(s)",
        highlight=False,
    )


def retention_table(report: RetentionReport) -> Table:
    """One line per partition dropped and per table whose rows are deleted."""
    title = "Retention (dry run: nothing changed)" if report.dry_run else "Retention applied"
    table = Table(title=title, title_justify="left")
    for column, justify in (("table", "left"), ("what", "left"), ("before (UTC)", "left"), ("rows", "right")):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    for part in report.partitions:
        rows = "?" if part.estimated_rows is None else f"~{part.estimated_rows}"
        table.add_row(part.table, f"drop partition {part.partition}", f"{part.ends_at:%Y-%m-%d}", rows)
    for item in report.rows:
        what = "rows in the default partition" if item.table.endswith("_default") else "delete rows"
        table.add_row(item.table, what, f"{item.cutoff:%Y-%m-%d %H:%M}", str(item.rows))
    return table
