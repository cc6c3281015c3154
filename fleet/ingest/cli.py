"""Commands of the ingest component: `fleet redecode …` (simulators: :mod:`fleet.simulate.cli`)."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import typer
from rich.console import Console

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
    """Add `redecode` to the `fleet` command (run on uvloop by `fleet.cli.run_async`)."""
    app.command("redecode")(redecode_command)


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
