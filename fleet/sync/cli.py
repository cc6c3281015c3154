"""`fleet sync --once`: one cycle for every vehicle, with a summary table.

The exit code is 0 whenever the cycle ran, even if vehicles failed (their failures are in the table and the
journal); it is non-zero only when the configuration or the database stops the cycle from running.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table

from fleet.sync.service import CycleReport

_STATUS_STYLE = {"ok": "green", "timeout": "yellow", "error": "red"}


def register(app: typer.Typer) -> None:
    """Add the `sync` command to `app`."""
    app.command("sync")(sync_command)


def sync_command(
    once: Annotated[bool, typer.Option("--once", help="run one cycle for all vehicles and exit")] = False,
    vehicle: Annotated[
        list[int] | None, typer.Option("--vehicle", help="only this vehicle id (repeatable)")
    ] = None,
) -> None:
    """Pull every vehicle once (the continuous service runs in `fleet serve`)."""
    from fleet.cli import _with_db, console, fail, run_async, settings_or_exit

    if not once:
        raise fail("the continuous sync runs inside `fleet serve` (role sync); use `fleet sync --once`", 2)
    settings = settings_or_exit()

    async def action(db: Any) -> CycleReport:
        import asyncpg

        from fleet.errors import DatabaseUnavailable
        from fleet.sync.service import SyncService

        try:
            async with SyncService(db, settings) as service:
                return await service.run_cycle(force=True, only=vehicle or None)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as err:
            raise DatabaseUnavailable(f"the sync cycle could not use the database: {err}") from err

    report = run_async(lambda: _with_db(settings, action))
    console.print(summary_table(report))
    console.print(summary_line(report), highlight=False)


def summary_table(report: CycleReport) -> Table:
    """One row per vehicle: outcome, rows, the window covered, duration and any note."""
    table = Table(title="Sync cycle", title_justify="left")
    for column, justify in (
        ("vehicle", "left"),
        ("status", "left"),
        ("rows", "right"),
        ("rejected", "right"),
        ("window (UTC)", "left"),
        ("ms", "right"),
        ("note", "left"),
    ):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    for v in sorted(report.vehicles, key=lambda v: v.vehicle_id):
        window = ""
        if v.window_from is not None and v.window_to is not None:
            window = f"{v.window_from:%Y-%m-%d %H:%M:%S} → {v.window_to:%H:%M:%S}"
        table.add_row(
            f"{v.vehicle_id} {v.name}",
            f"[{_STATUS_STYLE.get(v.status, 'white')}]{v.status}[/]",
            str(v.rows_written),
            str(v.rows_rejected) if v.rows_rejected else "",
            window,
            str(v.duration_ms),
            v.note or "",
        )
    return table


def summary_line(report: CycleReport) -> str:
    """The cycle in one sentence."""
    parts = [
        f"{len(report.vehicles)} vehicle(s): {report.count('ok')} ok, {report.count('timeout')} timeout, "
        f"{report.count('error')} error; {report.rows_written} rows written in {report.duration_s:.2f} s"
    ]
    if report.without_address:
        parts.append(f"{report.without_address} vehicle(s) without vpn_ip skipped")
    return "; ".join(parts)
