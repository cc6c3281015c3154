"""`fleet simulate navtelecom|teltonika …`: drive simulated trackers at a server (thin over the engine)."""

from __future__ import annotations

import json
import resource
from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

console = Console()
err_console = Console(stderr=True)

Devices = Annotated[int, typer.Option(min=1, help="simulated trackers (one TCP connection each)")]
Rate = Annotated[
    float, typer.Option(min=0, help="records per second over all devices; 0 = as fast as ACKs come")
]
Duration = Annotated[float, typer.Option(min=0, help="seconds of recording")]
RecordsPerFrame = Annotated[int, typer.Option(min=1, max=255, help="records per frame (at most)")]
Host = Annotated[str, typer.Option(help="server address")]
AckTimeout = Annotated[float, typer.Option(help="seconds before a device reconnects and resends")]
TimeBase = Annotated[
    str | None, typer.Option(help="device clock at the start (ISO-8601, UTC when naive); default now")
]
AsJson = Annotated[bool, typer.Option("--json", help="print the summary as JSON, no progress display")]


def register(app: typer.Typer) -> None:
    """Add `simulate navtelecom` and `simulate teltonika` to the `fleet` command."""
    simulate_app = typer.Typer(help="Drive simulated devices at a server.", no_args_is_help=True)
    app.add_typer(simulate_app, name="simulate")
    simulate_app.command("navtelecom")(simulate_navtelecom)
    simulate_app.command("teltonika")(simulate_teltonika)


def simulate_navtelecom(
    devices: Devices = 10,
    rate: Rate = 100.0,
    duration: Duration = 10.0,
    flex: Annotated[str, typer.Option(help="FLEX version: 1.0, 2.0 or 3.0")] = "2.0",
    records_per_frame: RecordsPerFrame = 10,
    host: Host = "127.0.0.1",
    port: Annotated[int | None, typer.Option(help="server port (default SERVER_PORT, 5221)")] = None,
    ack_timeout: AckTimeout = 10.0,
    first_imei: Annotated[
        int, typer.Option(help="IMEI of the first device; the others follow")
    ] = 860000000000001,
    can: Annotated[
        bool,
        typer.Option("--can/--no-can", help="report CAN values (FLEX fields 53-69), else 'not available'"),
    ] = False,
    time_base: TimeBase = None,
    as_json: AsJson = False,
) -> None:
    """Simulate Navtelecom trackers: handshake, FLEX negotiation, black-box upload with ACKs and resends."""
    from fleet.protocol.navtelecom.simulation import FLEX_PROFILES

    if flex not in FLEX_PROFILES:
        raise typer.BadParameter(f"use one of {', '.join(FLEX_PROFILES)}", param_hint="--flex")
    _run(
        "navtelecom",
        {"flex": flex, "can": can},
        port if port is not None else _setting("server_port"),
        devices=devices,
        rate=rate,
        duration=duration,
        records_per_frame=records_per_frame,
        host=host,
        ack_timeout=ack_timeout,
        first_imei=first_imei,
        time_base=time_base,
        as_json=as_json,
    )


def simulate_teltonika(
    devices: Devices = 10,
    rate: Rate = 100.0,
    duration: Duration = 10.0,
    codec: Annotated[str, typer.Option(help="AVL codec: 8, 8E or 16")] = "8E",
    records_per_frame: RecordsPerFrame = 10,
    host: Host = "127.0.0.1",
    port: Annotated[int | None, typer.Option(help="server port (default TELTONIKA_PORT, 5027)")] = None,
    ack_timeout: AckTimeout = 10.0,
    first_imei: Annotated[
        int, typer.Option(help="IMEI of the first device; the others follow")
    ] = 350000000000001,
    can: Annotated[bool, typer.Option("--can/--no-can", help="report CAN/LVCAN IO elements")] = False,
    time_base: TimeBase = None,
    as_json: AsJson = False,
) -> None:
    """Simulate Teltonika FMB trackers: IMEI login, AVL packets (Codec 8/8E/16) with ACKs and resends."""
    from fleet.protocol.teltonika.simulation import CODECS

    if codec.upper() not in CODECS:
        raise typer.BadParameter(f"use one of {', '.join(CODECS)}", param_hint="--codec")
    _run(
        "teltonika",
        {"codec": codec.upper(), "can": can},
        port if port is not None else _setting("teltonika_port"),
        devices=devices,
        rate=rate,
        duration=duration,
        records_per_frame=records_per_frame,
        host=host,
        ack_timeout=ack_timeout,
        first_imei=first_imei,
        time_base=time_base,
        as_json=as_json,
    )


def _setting(name: str) -> int:
    from fleet.config import Settings

    value: int = getattr(Settings(), name)  # type: ignore[call-arg]  # values come from env / config.yaml
    if not value:
        raise typer.BadParameter(f"{name.upper()} is 0 (that listener is disabled): give --port")
    return value


def _run(protocol: str, options: dict[str, Any], port: int, **kwargs: Any) -> None:
    from fleet.cli import run_async
    from fleet.simulate.engine import SimulationConfig, SimulationResult, run_simulation

    devices, duration, as_json = kwargs["devices"], kwargs["duration"], kwargs.pop("as_json")
    if not 0 < kwargs["first_imei"] < 10**15 - devices:
        raise typer.BadParameter("IMEIs are 15 digits", param_hint="--first-imei")
    base = kwargs.pop("time_base")
    if base is not None:
        try:
            moment = datetime.fromisoformat(base)
        except ValueError as err:
            raise typer.BadParameter(f"{base!r} is not ISO-8601", param_hint="--time-base") from err
        kwargs["time_base"] = (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()
    config = SimulationConfig(protocol=protocol, options=options, port=port, **kwargs)
    if as_json:
        result = run_async(lambda: run_simulation(config))
        summary = result.summary()
        usage = resource.getrusage(resource.RUSAGE_SELF)
        summary["cpu_s"] = round(usage.ru_utime + usage.ru_stime, 3)
        summary["diagnosis"] = result.diagnosis()
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
                f"{devices} {protocol} devices → {config.host}:{port}",
                total=duration,
                acked=0,
                rate="-",
                info="",
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
    reason = result.diagnosis()
    if reason is not None:
        err_console.print(f"[bold red]nothing was acknowledged:[/] {reason}", highlight=False)
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
