"""Commands of the ingest component: `fleet simulate navtelecom …` and `fleet redecode …`."""

from __future__ import annotations

import json
import re
import resource
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

console = Console()
err_console = Console(stderr=True)

_RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """Parse an ISO-8601 time (UTC when naive) or a relative age such as ``90m``, ``6h``, ``7d``."""
    now = now or datetime.now(UTC)
    match = _RELATIVE.match(text.strip().lower())
    if match:
        return now - timedelta(**{_UNITS[match.group(2)]: float(match.group(1))})
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError as err:
        raise typer.BadParameter(f"{text!r} is neither ISO-8601 nor an age like 90m, 6h, 7d") from err
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def register(app: typer.Typer) -> None:
    """Add `simulate navtelecom` and `redecode` to the `fleet` command (run on uvloop by `fleet.cli.run_async`)."""
    simulate_app = typer.Typer(help="Drive simulated devices at a server.", no_args_is_help=True)
    app.add_typer(simulate_app, name="simulate")
    simulate_app.command("navtelecom")(simulate_navtelecom)
    app.command("redecode")(redecode_command)


def simulate_navtelecom(
    devices: Annotated[int, typer.Option(min=1, help="simulated trackers (one TCP connection each)")] = 10,
    rate: Annotated[
        float, typer.Option(min=0, help="records per second over all devices; 0 = as fast as ACKs come")
    ] = 100.0,
    duration: Annotated[float, typer.Option(min=0, help="seconds of recording")] = 10.0,
    flex: Annotated[str, typer.Option(help="FLEX version: 1.0, 2.0 or 3.0")] = "2.0",
    records_per_frame: Annotated[int, typer.Option(min=1, max=255, help="records per ~A array")] = 10,
    host: Annotated[str, typer.Option(help="server address")] = "127.0.0.1",
    port: Annotated[int | None, typer.Option(help="server port (default SERVER_PORT, 5221)")] = None,
    ack_timeout: Annotated[float, typer.Option(help="seconds before a device reconnects and resends")] = 10.0,
    first_imei: Annotated[
        int, typer.Option(help="IMEI of the first device; the others follow")
    ] = 860000000000001,
    can: Annotated[
        bool,
        typer.Option("--can/--no-can", help="report CAN values (FLEX fields 53-69), else 'not available'"),
    ] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="print the summary as JSON, no progress display")
    ] = False,
) -> None:
    """Simulate Navtelecom trackers: handshake, FLEX negotiation, black-box upload with ACKs and resends."""
    from fleet.ingest.simulator import FLEX_PROFILES, SimulationConfig, SimulationResult, run_simulation

    if flex not in FLEX_PROFILES:
        raise typer.BadParameter(f"use one of {', '.join(FLEX_PROFILES)}", param_hint="--flex")
    if port is None:
        from fleet.config import Settings

        port = Settings().server_port  # type: ignore[call-arg]  # values come from env / config.yaml
    if not 0 < first_imei < 10**15 - devices:
        raise typer.BadParameter("IMEIs are 15 digits", param_hint="--first-imei")
    from fleet.cli import run_async

    config = SimulationConfig(
        host=host,
        port=port,
        devices=devices,
        rate=rate,
        duration=duration,
        flex=flex,
        records_per_frame=records_per_frame,
        ack_timeout=ack_timeout,
        first_imei=first_imei,
        can=can,
    )

    if as_json:
        result = run_async(lambda: run_simulation(config))
        summary = result.summary()
        usage = resource.getrusage(resource.RUSAGE_SELF)
        summary["cpu_s"] = round(usage.ru_utime + usage.ru_stime, 3)
        console.print_json(json.dumps(summary))
    else:
        with Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            TextColumn("{task.fields[acked]:>10} acked  {task.fields[rate]:>9} rec/s  {task.fields[info]}"),
            TimeRemainingColumn(),
            console=console,
        ) as progress:
            task = progress.add_task(
                f"{devices} devices → {host}:{port}", total=duration, acked=0, rate="-", info=""
            )

            def show(result: SimulationResult, elapsed: float) -> None:
                rate_now = result.records_acked / elapsed if elapsed > 0 else 0
                info = f"{result.connections} conn, {result.retransmissions} resent"
                progress.update(
                    task,
                    completed=min(elapsed, duration),
                    acked=result.records_acked,
                    rate=f"{rate_now:,.0f}",
                    info=info,
                )

            result = run_async(lambda: run_simulation(config, on_progress=show))
            progress.update(task, completed=duration)
        _print_summary(result.summary())
    if result.records_acked == 0 and duration > 0:
        raise typer.Exit(1)


def _print_summary(summary: dict[str, Any]) -> None:
    table = Table(title="Simulation summary", show_header=False)
    latency = summary.pop("ack_latency_ms")
    for key, value in summary.items():
        table.add_row(key.replace("_", " "), f"{value:,}" if isinstance(value, int) else str(value))
    table.add_row(
        "ack latency ms p50/p90/p99/max", " / ".join(str(latency[k]) for k in ("p50", "p90", "p99", "max"))
    )
    console.print(table)


def redecode_command(
    device: Annotated[str, typer.Option(help="IMEI of the device")],
    since: Annotated[str, typer.Option(help="ISO-8601 time or an age such as 6h, 7d")],
    until: Annotated[str | None, typer.Option(help="ISO-8601 end (exclusive); default now")] = None,
) -> None:
    """Decode a device's stored raw frames again and update what was stored from them (idempotent)."""
    from fleet.cli import run_async, settings_or_exit

    start = parse_since(since)
    end = parse_since(until) if until else None
    settings = settings_or_exit()

    async def main() -> Any:
        from fleet.db import Database
        from fleet.ingest.redecode import redecode

        db = Database(settings)
        await db.start()
        try:
            return await redecode(db, settings, device, start, end)
        finally:
            await db.close()

    report = run_async(main)
    console.print_json(json.dumps(report.as_dict()))
    if report.frames == 0:
        err_console.print(f"note: no stored frames of {device} since {start.isoformat()}", highlight=False)
