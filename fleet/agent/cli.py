"""The ``fleet agent`` command: run the reference vehicle agent."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import SecretStr, ValidationError

from fleet.agent import runner
from fleet.agent.config import AgentConfig


def register(app: typer.Typer) -> None:
    """Add the ``agent`` command to ``app``."""
    app.command("agent", help="Run the reference vehicle agent (the Outbound API on port 8001).")(
        agent_command
    )


def agent_command(
    port: Annotated[int | None, typer.Option(help="Port to listen on", show_default="8001")] = None,
    host: Annotated[str | None, typer.Option(help="Address to bind", show_default="127.0.0.1")] = None,
    api_key: Annotated[
        str | None,
        typer.Option(
            "--api-key",
            help="X-API-Key clients must send (else AGENT_API_KEY or OUTBOUND_API_KEY; else a generated one)",
        ),
    ] = None,
    db: Annotated[
        Path | None, typer.Option(help="SQLite ring buffer file", show_default="./var/agent.db")
    ] = None,
    simulate: Annotated[
        bool | None,
        typer.Option(
            "--simulate/--no-simulate", help="Generate data with the simulator", show_default="simulate"
        ),
    ] = None,
    channels: Annotated[int | None, typer.Option(help="Simulated channels", show_default="25")] = None,
    backfill: Annotated[
        int | None, typer.Option(help="Seconds of simulated history to write first", show_default="0")
    ] = None,
    seed: Annotated[
        int | None, typer.Option(help="Simulator seed, for repeatable data", show_default="random")
    ] = None,
) -> None:
    """Run the reference vehicle agent until interrupted."""
    given: dict[str, Any] = {
        "port": port,
        "host": host,
        "api_key": api_key,
        "db_path": db,
        "simulate": simulate,
        "channels": channels,
        "backfill_seconds": backfill,
        "seed": seed,
    }
    # Options left out fall back to AGENT_* variables, then to the defaults.
    overrides = {name: value for name, value in given.items() if value is not None}
    try:
        config = AgentConfig(**overrides)
    except ValidationError as err:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in err.errors())
        raise typer.BadParameter(problems) from err
    if config.api_key is None:
        generated = secrets.token_urlsafe(24)
        config = config.model_copy(update={"api_key": SecretStr(generated)})
        # Shown once on the terminal for a development run; it is never logged.
        typer.echo(f"No API key configured; generated one for this run: {generated}")
    mode = "simulated data" if config.simulate else "ingest only"
    typer.echo(f"Fleet agent listening on http://{config.host}:{config.port} ({mode}; db {config.db_path})")
    runner.serve_agent(config)
