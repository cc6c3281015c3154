"""`fleet ops …`: daily operations of a running installation (the `make` targets of seed 000 call these).

health, monitor, perf, daily, security, logs, emergency-logs, db-activity, maintenance, grafana-login. Each
reads the same settings as the server (environment, config.yaml); commands that talk to the server use its
API address, commands that inspect the database use the owner connection (DATABASE_URL or the embedded one).
Exit codes: 0 all good, 1 something needs attention (the output says what), 2 a usage error.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.table import Table

from fleet.observability.security import Finding, verdict

T = TypeVar("T")
_MARK = {"ok": "[green]ok[/]", "warn": "[yellow]warn[/]", "fail": "[bold red]FAIL[/]"}

UrlOption = Annotated[str | None, typer.Option("--url", help="API base URL (default: API_HOST:API_PORT)")]


def register(app: typer.Typer) -> None:
    """Add the `ops` command group to `app`."""
    ops = typer.Typer(
        help="Operations: health, live monitor, daily report, security, logs.", no_args_is_help=True
    )
    app.add_typer(ops, name="ops")
    ops.command("health")(health)
    ops.command("monitor")(monitor)
    ops.command("perf")(perf)
    ops.command("daily")(daily)
    ops.command("security")(security)
    ops.command("logs")(logs)
    ops.command("emergency-logs")(emergency_logs)
    ops.command("db-activity")(db_activity)
    ops.command("maintenance")(maintenance)
    ops.command("grafana-login")(grafana_login)


def _settings() -> Any:
    from fleet.cli import settings_or_exit

    return settings_or_exit()


def _owner(settings: Any, action: Callable[[Any], Awaitable[T]]) -> T:
    """Run `action` with an owner connection (no migrations, no pool): diagnostics need the whole view."""
    import asyncpg

    from fleet.cli import run_async
    from fleet.db import Database
    from fleet.errors import DatabaseUnavailable

    async def main() -> T:
        db = Database(settings)
        await db.start(migrate_schema=False, pool=False)
        try:
            assert db.owner_dsn is not None
            try:
                conn = await asyncpg.connect(db.owner_dsn, timeout=10)
            except (OSError, asyncpg.PostgresError) as err:
                raise DatabaseUnavailable(f"cannot connect to the database: {err}") from err
            try:
                return await action(conn)
            finally:
                await conn.close()
        finally:
            await db.close()

    return run_async(main)


def _print_findings(title: str, findings: list[Finding]) -> int:
    from fleet.cli import console

    table = Table(title=title, title_justify="left", show_lines=False)
    table.add_column("area")
    table.add_column("")
    table.add_column("finding", overflow="fold")
    for finding in findings:
        table.add_row(finding.area, _MARK[finding.status], finding.detail)
    console.print(table)
    failed = sum(f.status == "fail" for f in findings)
    warned = sum(f.status == "warn" for f in findings)
    console.print(
        f"{failed} failed, {warned} warnings, {len(findings) - failed - warned} ok", highlight=False
    )
    return 1 if failed else 0


def _scrape(settings: Any, url: str | None) -> Any:
    import httpx

    from fleet.cli import fail
    from fleet.observability.scrape import auth_headers, base_url, fetch

    base = base_url(settings, url)
    try:
        return fetch(base, auth_headers(settings))
    except httpx.HTTPError as err:
        raise fail(f"cannot read {base}/metrics: {err}", 1) from None


# --- commands ------------------------------------------------------------------------------------------------
def health(url: UrlOption = None) -> None:
    """Health, readiness and the key numbers of the running server; exit 1 when it is not ready."""
    import httpx

    from fleet.cli import console
    from fleet.observability.monitor import render
    from fleet.observability.scrape import base_url

    settings = _settings()
    base = base_url(settings, url)
    findings = []
    for path in ("/health", "/ready"):
        try:
            response = httpx.get(f"{base}{path}", timeout=5)
            findings.append(
                Finding(
                    path,
                    verdict(response.status_code == 200),
                    f"HTTP {response.status_code} {response.text[:300]}",
                )
            )
        except httpx.HTTPError as err:
            findings.append(Finding(path, "fail", f"not reachable at {base}: {err}"))
    code = _print_findings(f"Fleet server at {base}", findings)
    if code == 0:
        console.print(render(None, _scrape(settings, url), base))
    raise typer.Exit(code)


def monitor(
    url: UrlOption = None,
    interval: Annotated[float, typer.Option(min=0.5, help="seconds between scrapes")] = 2.0,
    once: Annotated[bool, typer.Option("--once", help="print one summary (two scrapes) and exit")] = False,
) -> None:
    """Live terminal summary of the key metrics (ingest, API, database, sync, fleet, host)."""
    from fleet.observability import monitor as live
    from fleet.observability.scrape import base_url

    settings = _settings()
    live.run(lambda: _scrape(settings, url), base_url(settings, url), interval, once)


def perf(
    url: UrlOption = None,
    window: Annotated[float, typer.Option(min=1, help="seconds between the two scrapes")] = 10.0,
) -> None:
    """Latency percentiles of the running server, from its histograms (since start and over a window)."""
    from fleet.cli import console
    from fleet.observability.scrape import quantile

    settings = _settings()
    first = _scrape(settings, url)
    time.sleep(window)
    second = _scrape(settings, url)
    table = Table(title="Latency (ms)", title_justify="left")
    for column in (
        "histogram",
        "p50 since start",
        "p99 since start",
        f"p50 last {window:g}s",
        f"p99 last {window:g}s",
    ):
        table.add_column(column, justify="right" if column != "histogram" else "left")

    def ms(value: float | None) -> str:
        return "-" if value is None else f"{value * 1000:,.2f}"

    for name in (
        "http_request_duration_seconds",
        "database_query_duration_seconds",
        "fleet_db_pool_acquire_seconds",
        "fleet_ingest_ack_latency_seconds",
        "fleet_ingest_batch_duration_seconds",
        "fleet_sync_request_duration_seconds",
    ):
        table.add_row(
            name,
            ms(quantile(0.5, second, name)),
            ms(quantile(0.99, second, name)),
            ms(quantile(0.5, second, name, first)),
            ms(quantile(0.99, second, name, first)),
        )
    console.print(table)
    routes = Table(title="Slowest API routes since start (p99 ms)", title_justify="left")
    routes.add_column("route")
    routes.add_column("p99", justify="right")
    routes.add_column("requests", justify="right")
    found = []
    for route in {labels["route"] for labels, _ in second.series("http_request_duration_seconds_count")}:
        count = second.total("http_request_duration_seconds_count", route=route) or 0
        found.append(
            (quantile(0.99, second, "http_request_duration_seconds", route=route) or 0, route, count)
        )
    for p99, route, count in sorted(found, reverse=True)[:10]:
        routes.add_row(route, ms(p99), f"{count:,.0f}")
    console.print(routes)


def daily(url: UrlOption = None) -> None:
    """Daily check: readiness, the last 24 hours of data, silent trackers, partitions, backups, disk, certificates."""
    from fleet.observability import daily as report
    from fleet.observability.scrape import auth_headers, base_url

    settings = _settings()
    findings, snapshot = report.server_findings(base_url(settings, url), auth_headers(settings))

    async def from_database(conn: Any) -> list[Finding]:
        found, _ = await report.database_findings(conn)
        return [*found, await report.backup_finding(conn, settings)]

    findings += _owner(settings, from_database)
    findings += report.host_findings(snapshot)
    raise typer.Exit(_print_findings("Daily operations check", findings))


def security(
    skip_audit: Annotated[bool, typer.Option("--skip-audit", help="do not run pip-audit")] = False,
    audit_dry_run: Annotated[
        bool,
        typer.Option("--audit-dry-run", help="pip-audit collects the packages but asks no advisory service"),
    ] = False,
) -> None:
    """Security check: public bindings, default secrets, forced RLS, role flags, pip-audit."""
    from fleet.observability import security as checks

    settings = _settings()
    findings = checks.check_bindings(settings, checks.listening_sockets())
    findings += checks.check_settings(settings)
    findings += _owner(settings, checks.check_database)
    if not skip_audit:
        findings += checks.pip_audit(dry_run=audit_dry_run)
    raise typer.Exit(_print_findings("Security check", findings))


def logs(
    follow: Annotated[bool, typer.Option("--follow", "-f", help="keep printing new lines")] = False,
    lines: Annotated[int, typer.Option("--lines", "-n", min=1, help="lines of history")] = 200,
    level: Annotated[str, typer.Option(help="minimum level: debug, info, warning, error")] = "info",
    grep: Annotated[str | None, typer.Option(help="only lines containing this text")] = None,
) -> None:
    """Show the server log (DATA_DIR/logs/server.log) readably; --follow to keep watching."""
    from fleet.cli import fail
    from fleet.observability.logs import show

    settings = _settings()
    path = settings.log_dir / "server.log"
    if not path.exists():
        raise fail(f"no log at {path} (is DATA_DIR the server's?)", 1)
    show(path, lines=lines, level=level, needle=grep, keep_following=follow)


def emergency_logs(
    url: UrlOption = None,
    out: Annotated[
        Path | None, typer.Option(help="directory for the archive (default DATA_DIR/emergency)")
    ] = None,
) -> None:
    """Collect logs, recent errors, server answers, database activity and settings into one archive."""
    from fleet.cli import console
    from fleet.observability import dbstat, evidence
    from fleet.observability.scrape import auth_headers, base_url

    settings = _settings()
    # The database part first, on its own connection: whatever fails there, the rest is still collected.
    try:
        database: dict[str, Any] = _owner(settings, dbstat.activity)
    except (typer.Exit, Exception) as err:  # an emergency tool reports every failure and goes on
        database = {"error": f"the database could not be inspected: {type(err).__name__}: {err}"}
    target = evidence.collect(
        settings,
        base_url(settings, url),
        auth_headers(settings),
        out or settings.data_dir / "emergency",
        database,
    )
    console.print(f"archive: {target}", highlight=False)


def db_activity() -> None:
    """What the database is doing now: active sessions, blocked ones, largest tables, partitions."""
    from fleet.cli import console
    from fleet.observability import dbstat

    settings = _settings()
    report = _owner(settings, dbstat.activity)
    for title, rows in report.items():
        table = Table(title=title, title_justify="left")
        if not rows:
            console.print(f"[bold]{title}[/]: none")
            continue
        for column in rows[0]:
            table.add_column(column, overflow="fold")
        for row in rows:
            table.add_row(*("" if value is None else str(value) for value in row.values()))
        console.print(table)


def maintenance() -> None:
    """Partitions ahead, stranded rows re-homed, retention applied, then ANALYZE; prints what it did."""
    from fleet.cli import _with_db, console, run_async
    from fleet.ops.maintenance import run_maintenance

    settings = _settings()

    async def action(db: Any) -> Any:
        report = await run_maintenance(db, settings)
        return report

    report = run_async(lambda: _with_db(settings, action))

    async def analyze(conn: Any) -> None:
        await conn.execute("ANALYZE")

    _owner(settings, analyze)
    console.print(
        f"partitions created {report.partitions_created}, dropped {report.partitions_dropped}; "
        f"rows deleted by retention {report.rows_deleted}; statistics refreshed (ANALYZE)",
        highlight=False,
    )


def grafana_login(
    user: Annotated[str, typer.Option(help="the user's e-mail")],
    rotate: Annotated[
        bool, typer.Option("--rotate", help="replace it (after a leak); the old one stops working")
    ] = False,
) -> None:
    """Print a user's opaque Grafana login (what dashboards pass to the database as ${__user.login})."""
    from fleet.cli import _with_db, console, run_async
    from fleet.db.queries.grafana import grafana_login as login_of
    from fleet.db.queries.users import get_user_by_email
    from fleet.errors import NotFound

    settings = _settings()

    async def action(db: Any) -> str:
        async with db.system() as conn:
            row = await get_user_by_email(conn, user)
            if row is None:
                raise NotFound(f"no user with e-mail {user}")
            return await login_of(conn, row["id"], rotate=rotate)

    console.print(run_async(lambda: _with_db(settings, action)), highlight=False)
