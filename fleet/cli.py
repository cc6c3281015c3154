"""The `fleet` command line (Typer): thin commands over library code.

Results go to stdout, logs and messages to stderr. User mistakes end with a one-line message and a non-zero
exit code, never a traceback. Commands that
belong to a component (`agent`, `sync`, `simulate`, ...) are registered by that component's own
`cli.register(app)`, listed once in `_COMPONENT_CLIS`.
"""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console

from fleet.config import Settings, load_settings
from fleet.errors import FleetError

app = typer.Typer(
    name="fleet",
    help="Fleet Server: telematics ingestion, vehicle sync and API on PostgreSQL.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
user_app = typer.Typer(help="Users.", no_args_is_help=True)
vehicle_app = typer.Typer(help="Vehicles.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(user_app, name="user")
app.add_typer(vehicle_app, name="vehicle")

err_console = Console(stderr=True)
console = Console()
T = TypeVar("T")

# Components that add their own commands: module with `register(app: typer.Typer) -> None`.
_COMPONENT_CLIS: tuple[str, ...] = (
    "fleet.agent.cli",
    "fleet.ingest.cli",
    "fleet.sync.cli",
    "fleet.manage.cli",
    "fleet.ops.cli",
    "fleet.ops.wireguard.cli",
    "fleet.observability.cli",
    "fleet.simulate.cli",
    "fleet.live.cli",
)


def fail(message: str, code: int = 1) -> typer.Exit:
    err_console.print(f"[bold red]error:[/] {message}", highlight=False)
    return typer.Exit(code)


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:  # uvloop is not built for every platform
        return None
    return uvloop.new_event_loop


def run_async(factory: Callable[[], Awaitable[T]]) -> T:
    """Run a coroutine on uvloop when available, turning domain errors into a clean message and exit code."""
    try:
        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            return runner.run(factory())  # type: ignore[arg-type]
    except FleetError as err:
        raise fail(str(err), err.exit_code) from None


def settings_or_exit(**overrides: Any) -> Settings:
    from fleet.logging import configure_logging

    try:
        settings = load_settings(**overrides)
    except FleetError as err:
        raise fail(str(err), err.exit_code) from None
    configure_logging(settings.log_level, settings.log_format, settings.log_dir)
    return settings


async def _with_db(settings: Settings, action: Callable[[Any], Awaitable[T]]) -> T:
    """Run `action(db)` on the database the server uses (refused, with a hint, when it would be another)."""
    from fleet.db import Database
    from fleet.db.server_record import check_cli_database

    note = check_cli_database(settings)
    if note:
        err_console.print(f"[dim]{note}[/]", highlight=False, soft_wrap=True)
    db = Database(settings)
    await db.start()
    try:
        return await action(db)
    finally:
        await db.close()


# --- serve -----------------------------------------------------------------------------------------
@app.command()
def serve(
    role: Annotated[
        list[str] | None,
        typer.Option("--role", "-r", help="all (default) or any of: api, ingest, sync, maintenance"),
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(
            "--workers",
            "-w",
            min=1,
            help="run N ingest processes sharing the device ports (SO_REUSEPORT) plus one process for "
            "the other roles, under a supervisor",
        ),
    ] = None,
) -> None:
    """Run the server (every role by default) until SIGTERM/SIGINT.

    With --workers N a supervisor starts the embedded database (if used)
    and the migrations once, then N `--role ingest` processes on the same
    device ports and one process with the other roles. It restarts a
    crashed child with a back-off and forwards SIGTERM/SIGINT (graceful
    stop) and SIGHUP (settings reload) to every child.

    Upgrade without losing a record (docs/OPERATIONS.md, "Several ingest
    processes"): with --workers, install the new version and send SIGUSR2
    to the supervisor - each ingest process is replaced in turn (the new
    one listens next to the old one, then the old one gets SIGTERM). With
    separate `--role ingest` services: start the new version on the same
    port, then SIGTERM the old one.

    On SIGTERM an ingest process stops accepting (the kernel gives new
    connections to the other process on the port), stops reading, commits
    what it received, sends those ACKs and closes its connections; the
    trackers reconnect and resend what was not acknowledged. Set
    net.ipv4.tcp_migrate_req=1 so that connections queued but not yet
    accepted move over too instead of being reset.
    """
    from fleet.runtime import resolve_roles
    from fleet.runtime import serve as run_serve
    from fleet.supervisor import stop_with_supervisor, supervise, supervised

    settings = settings_or_exit()
    try:
        names = resolve_roles(role)
    except FleetError as err:
        raise fail(str(err), err.exit_code) from None
    if workers is not None:
        run_async(lambda: supervise(settings, names, workers))
        return
    stop_with_supervisor()
    # A supervised ingest child prints no banner (the supervisor does); the child with the API does.
    banner = None if supervised() and names == ["ingest"] else _print_banner
    run_async(lambda: run_serve(settings, names, on_ready=banner, settings_loader=load_settings))


async def _print_banner(runtime: Any) -> None:
    from fleet.bootstrap import ensure_development_admin

    settings, roles = runtime.settings, runtime.roles
    lines = ["[bold green]Fleet Server is running[/]"]
    if "api" in roles:
        lines.append(f"  API and web UI:  http://{settings.api_host}:{settings.api_port}/  (docs: /docs)")
    ingest = runtime.extras.get("ingest")
    if "ingest" in roles and ingest is not None:
        from fleet.protocol.registry import protocols

        for name, port in ingest.ports.items():
            lines.append(f"  Device port:     {settings.server_host}:{port} ({protocols()[name].title})")
    lines.append(
        f"  Database:        {'embedded, under ' + str(settings.data_dir / 'pg') if settings.uses_embedded_db else 'configured server'}"
    )
    lines.append(await ensure_development_admin(runtime.db, settings))
    lines.append("  Stop with Ctrl+C.")
    console.print("\n".join(lines), highlight=False, soft_wrap=True)


# --- db ------------------------------------------------------------------------------------------------
@db_app.command("upgrade")
def db_upgrade(revision: Annotated[str, typer.Argument(help="target revision")] = "head") -> None:
    """Apply database migrations."""
    settings = settings_or_exit()

    async def main() -> None:
        from fleet.db import Database

        db = Database(settings)
        await db.start(migrate_schema=False, pool=False)
        try:
            await db.upgrade(revision)
        finally:
            await db.close()

    run_async(main)
    console.print(f"database at revision {revision}")


# --- check ----------------------------------------------------------------------------------------------------
@app.command()
def check(
    url: Annotated[str | None, typer.Option(help="base URL of the API (default from settings)")] = None,
    timeout: Annotated[float, typer.Option(help="seconds")] = 5.0,
) -> None:
    """Exit 0 when the running server answers /health as healthy."""
    from fleet.ops.healthcheck import api_base_url, probe

    settings = settings_or_exit()
    base = url or api_base_url(settings)
    problem = run_async(lambda: probe(base, timeout))
    if problem is not None:
        raise fail(problem, 1)
    console.print(f"healthy: {base}", highlight=False)


def _register_components() -> None:
    for module_name in _COMPONENT_CLIS:
        importlib.import_module(module_name).register(app)


_register_components()


def main() -> None:
    app()
