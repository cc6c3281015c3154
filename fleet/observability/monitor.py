"""`fleet ops monitor`: a live terminal summary of the key metrics (Rich), refreshed every few seconds.

Rates and latency percentiles are computed over the interval between two scrapes, as a dashboard would over a
short window; gauges show their current value. A missing family (a role not running in this process, or a
feature not built yet) shows as "-".
"""

from __future__ import annotations

import time
from collections.abc import Callable

from rich.console import Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from fleet.observability.scrape import Snapshot, quantile, rate


def _num(value: float | None, fmt: str = "{:,.1f}") -> str:
    return "-" if value is None else fmt.format(value)


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:,.1f} ms"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.2f}%"


def _ratio(bad: float | None, total: float | None) -> float | None:
    if bad is None or not total:
        return None if total is None else 0.0
    return bad / total


def _section(title: str, rows: list[tuple[str, str, str]]) -> Panel:
    table = Table(show_header=False, box=None, pad_edge=False, expand=True)
    table.add_column("what", style="bold")
    table.add_column("value", justify="right")
    for label, value, style in rows:
        table.add_row(label, Text(value, style=style))
    return Panel(table, title=title, title_align="left")


def _warn_if(condition: bool, style: str = "bold red") -> str:
    return style if condition else ""


def summary_rows(prev: Snapshot | None, cur: Snapshot) -> dict[str, list[tuple[str, str, str]]]:
    """The numbers of each section (also used by `fleet ops health`)."""
    frames = rate(prev, cur, "fleet_ingest_frames_total")
    decode = rate(prev, cur, "fleet_ingest_decode_errors_total")
    backpressure = cur.total("fleet_ingest_backpressure_active") or 0
    requests = rate(prev, cur, "http_requests_total")
    errors = sum(
        rate(prev, cur, "http_requests_total", status_code=code) or 0.0
        for code in {labels["status_code"] for labels, _ in cur.series("http_requests_total")}
        if code.startswith("5")
    )
    in_use = cur.total("fleet_db_pool_connections", state="in_use")
    pool_max = cur.total("fleet_db_pool_max_connections")
    last_cycle = cur.total("fleet_sync_last_cycle_end_timestamp_seconds")
    sync_age = time.time() - last_cycle if last_cycle else None
    failed_pulls = sum(
        rate(prev, cur, "fleet_sync_vehicle_syncs_total", status=s) or 0.0 for s in ("timeout", "error")
    )
    disk = [
        (labels["volume"], value / size)
        for (labels, value) in cur.series("fleet_disk_free_bytes")
        for (size_labels, size) in cur.series("fleet_disk_size_bytes")
        if size_labels.get("volume") == labels.get("volume") and size
    ]
    certs = [
        (labels["certificate"], (value - time.time()) / 86400)
        for labels, value in cur.series("fleet_tls_certificate_expiry_timestamp_seconds")
    ]
    rows = {
        "Ingest": [
            ("device connections", _num(cur.total("fleet_ingest_connections"), "{:,.0f}"), ""),
            ("frames/s", _num(frames), ""),
            ("rows stored/s", _num(rate(prev, cur, "fleet_ingest_rows_stored_total")), ""),
            ("decode errors/s", _num(decode), _warn_if(bool(decode))),
            ("writer queue (records)", _num(cur.total("fleet_ingest_queue_records"), "{:,.0f}"), ""),
            ("backpressure", "ON" if backpressure else "off", _warn_if(bool(backpressure))),
            (
                "ACK p50 / p99",
                f"{_ms(quantile(0.5, cur, 'fleet_ingest_ack_latency_seconds', prev))} / "
                f"{_ms(quantile(0.99, cur, 'fleet_ingest_ack_latency_seconds', prev))}",
                "",
            ),
        ],
        "API": [
            ("requests/s", _num(requests), ""),
            ("5xx/s", _num(errors if requests is not None else None), _warn_if(errors > 0)),
            ("p99 latency", _ms(quantile(0.99, cur, "http_request_duration_seconds", prev)), ""),
            ("in flight", _num(cur.total("http_requests_in_flight"), "{:,.0f}"), ""),
        ],
        "Database": [
            ("statements/s", _num(rate(prev, cur, "database_queries_total")), ""),
            ("p99 statement", _ms(quantile(0.99, cur, "database_query_duration_seconds", prev)), ""),
            ("errors/s", _num(rate(prev, cur, "fleet_db_query_errors_total")), ""),
            (
                "pool in use / max",
                f"{_num(in_use, '{:.0f}')} / {_num(pool_max, '{:.0f}')}",
                _warn_if(bool(in_use and pool_max and in_use >= pool_max)),
            ),
            (
                "size",
                _num((cur.total("fleet_db_size_bytes") or 0) / 2**20, "{:,.0f} MiB")
                if cur.has("fleet_db_size_bytes")
                else "-",
                "",
            ),
        ],
        "Sync": [
            ("vehicle pulls/s", _num(rate(prev, cur, "fleet_sync_vehicle_syncs_total")), ""),
            ("failed pulls/s", _num(failed_pulls if prev is not None else None), _warn_if(failed_pulls > 0)),
            (
                "last cycle",
                "-" if sync_age is None else f"{sync_age:,.0f} s ago",
                _warn_if(sync_age is not None and sync_age > 300),
            ),
            ("rows written/s", _num(rate(prev, cur, "fleet_sync_rows_written_total")), ""),
        ],
        "Fleet": [
            ("devices online", _num(cur.total("fleet_devices_online"), "{:,.0f}"), ""),
            (
                "vehicles online / offline / unknown",
                " / ".join(
                    _num(cur.total("fleet_vehicles", status=s), "{:,.0f}")
                    for s in ("online", "offline", "unknown")
                ),
                "",
            ),
            ("users pending approval", _num(cur.total("fleet_users", status="pending"), "{:,.0f}"), ""),
            ("active alarms", _num(cur.total("fleet_alarms_active"), "{:,.0f}"), ""),
            ("live viewers", _num(cur.total("fleet_ws_viewers"), "{:,.0f}"), ""),
        ],
        "Host": [
            *((f"disk free {name}", _pct(free), _warn_if(free < 0.1)) for name, free in disk),
            *((f"cert {name}", f"{days:,.0f} days", _warn_if(days < 14)) for name, days in certs),
        ],
    }
    return rows


def render(prev: Snapshot | None, cur: Snapshot, source: str) -> Group:
    sections = summary_rows(prev, cur)
    grid = Table.grid(expand=True)
    for _ in range(3):
        grid.add_column(ratio=1)
    panels = [_section(title, rows) for title, rows in sections.items()]
    for i in range(0, len(panels), 3):
        grid.add_row(*panels[i : i + 3])
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(cur.taken))
    window = f"rates over {cur.taken - prev.taken:.1f} s" if prev is not None else "first sample: totals only"
    return Group(Text(f"Fleet Server  {source}  {stamp}  ({window}; Ctrl+C to quit)", style="bold"), grid)


def run(fetch: Callable[[], Snapshot], source: str, interval: float, once: bool) -> None:
    """Scrape and redraw until interrupted (or once, after two scrapes `interval` apart)."""
    from rich.console import Console
    from rich.live import Live

    console = Console()
    prev = fetch()
    if once:
        time.sleep(interval)
        console.print(render(prev, fetch(), source))
        return
    with Live(render(None, prev, source), console=console, refresh_per_second=4, screen=False) as live:
        try:
            while True:
                time.sleep(interval)
                cur = fetch()
                live.update(render(prev, cur, source))
                prev = cur
        except KeyboardInterrupt:
            pass
