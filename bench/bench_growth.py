#!/usr/bin/env python3
"""Growth curves: how throughput, latency and disk grow with load, plotted to PNG.

    make bench-growth          # or: .venv/bin/python bench/bench_growth.py [--part NAME ...] [--quick]

Parts (``--part``, default all; a part not run keeps its figures from the previous ``growth.json``, each part
carries its own time and load averages):

* ``connections`` - ``fleet serve --role ingest`` loaded by the simulator (``fleet.simulate``, FLEX 2.0, 10
  records per ``~A``, one frame in flight per tracker) at the maximum rate with 100, 1,000 and 10,000
  connections: records/s acknowledged (steady state) and ACK latency p50/p99, CPU per record of the server and
  PostgreSQL. The pieces are bench/bench_ingest.py's (server process, simulator process, CPU meter).
* ``rate`` - 1,000 connections at offered rates from 10 % of the maximum measured just before to 150 % of it:
  achieved against offered rate and ACK latency, up to saturation.
* ``sync`` - the sync service (bench/bench_sync.py: vehicle doubles on their own ports, 25 channels at 1 Hz, a
  30 s backlog each) with 10, 100 and 1,000 vehicles: cycle time, rows/s, and the raw COPY of the same rows.
* ``history`` - ``fleet serve --role api`` over positions of 1 h, 1 day and 30 days of 1 Hz history (one vehicle
  each, inserted server-side with generate_series): latency of the first page of raw points over the whole
  range (100,000 points at most), of the range downsampled to ~1,000 buckets, and of the last hour.
* ``disk`` - bytes on disk (heap, indexes and TOAST of every partition) per stored row of ``positions``,
  ``raw_frames``, ``can_data`` (from an ingest run with CAN values) and ``measurements`` (the sync's rows),
  and what one device-day costs at several reporting intervals: the capacity model's inputs.

``--quick`` uses small points (20/100/300 connections, 2 s loads; 5/20 vehicles; 15 min/1 h/6 h of history)
and writes ``growth-quick.json`` and ``growth_*-quick.png``. Full mode writes ``bench/results/growth.json`` and
``growth_connections.png``, ``growth_rate.png``, ``growth_sync.png``, ``growth_history.png``, ``growth_disk.png``.

The machine is shared: every part records the load average before and after; the CPU time per record (from
/proc) is what carries over between machines, the rates do not.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench.common import (  # noqa: E402
    RESULTS_DIR,
    BenchReport,
    add_quick_argument,
    load_average,
    load_result,
    postgres_version,
)

PARTS = ("connections", "rate", "disk", "sync", "history")
INGEST_PARTS = ("connections", "rate", "disk")  # share one database and ingest server
RATE_FRACTIONS = (0.1, 0.25, 0.5, 0.75, 0.9, 1.0, 1.25, 1.5)
FIRST_IMEI = 880_000_000_000_000
HOUR = 3600
DAY = 86_400


# --- the ingest side (bench_ingest.py's pieces) -------------------------------------------------------------------
@contextmanager
def ingest_server(workdir: Path) -> Iterator[tuple[Any, str]]:
    """A fresh embedded PostgreSQL, migrated, and a started `fleet serve --role ingest`; yields (server, dsn)."""
    from bench_ingest import CpuMeter, Server, _server_version

    from fleet.db.embedded import EmbeddedPostgres

    embedded = EmbeddedPostgres(workdir / "pg")
    dsn = embedded.start()
    server = None
    try:
        app_password = secrets.token_urlsafe(24)
        migrate = subprocess.run(
            [sys.executable, "-m", "fleet", "db", "upgrade"],
            env={
                **os.environ,
                "DATABASE_URL": dsn,
                "DB_APP_PASSWORD": app_password,
                "DATA_DIR": str(workdir),
            },
            capture_output=True,
            text=True,
        )
        if migrate.returncode != 0:
            raise RuntimeError(migrate.stderr)
        _version, CpuMeter.postmaster = asyncio.run(_server_version(dsn))
        server = Server(dsn, app_password, workdir)
        # Every simulated tracker connects from 127.0.0.1: lift the per-address caps (1,000 connections, and
        # fewer still not identified) above the largest point, or the 10,000-connection point measures refusals
        # and retries. Real trackers come from many addresses.
        server.env["INGEST_MAX_CONNECTIONS_PER_ADDRESS"] = "20000"
        server.env["INGEST_MAX_UNIDENTIFIED_PER_ADDRESS"] = "20000"
        server.start()
        yield server, dsn
    finally:
        if server is not None:
            server.stop()
        embedded.stop()


def ingest_point(
    server: Any, name: str, devices: int, rate: float, duration: float, first_imei: int, can: bool = False
) -> dict[str, Any]:
    """One load scenario (bench_ingest.load_scenario) reduced to the curve's figures."""
    from bench_ingest import load_scenario

    load_before = load_average()
    result = load_scenario(server, name, devices, rate, duration, first_imei, can=can)
    latency = result["ack_latency_ms"]
    return {
        "connections": devices,
        "offered_records_per_s": rate or None,
        "records_per_s": result["records_per_s"],
        "ack_p50_ms": latency.get("p50"),
        "ack_p99_ms": latency.get("p99"),
        "ack_max_ms": latency.get("max"),
        "server_us_per_record": result["cpu"].get("server_us_per_record"),
        "postgres_us_per_record": result["cpu"].get("postgres_us_per_record"),
        "other_cores": result["cpu"].get("other_cores"),
        "connect_failures": result["connect_failures"],
        "disconnects": result["disconnects"],
        "load_average_before": load_before,
        "load_average_after": load_average(),
        "raw": result,
    }


def part_connections(args: argparse.Namespace, server: Any, dsn: str) -> dict[str, Any]:
    counts = (20, 100, 300) if args.quick else (100, 1_000, 10_000)
    points = []
    for number, count in enumerate(counts):
        points.append(
            ingest_point(
                server, f"max_{count}", count, 0.0, args.duration, FIRST_IMEI + (number + 1) * 100_000
            )
        )
    return {"postgres_version": postgres_version(dsn), "duration_s": args.duration, "points": points}


def part_rate(args: argparse.Namespace, server: Any, dsn: str) -> dict[str, Any]:
    devices = 100 if args.quick else 1_000
    fractions = (0.5, 1.25) if args.quick else RATE_FRACTIONS
    points = []
    first = FIRST_IMEI + 1_000_000
    maximum = ingest_point(server, f"max_{devices}", devices, 0.0, args.duration, first)
    best = maximum["records_per_s"] or 1.0
    for number, fraction in enumerate(fractions):
        point = ingest_point(
            server,
            f"rate_{fraction}",
            devices,
            round(best * fraction),
            args.duration,
            first + (number + 1) * 100_000,
        )
        point["fraction_of_max"] = fraction
        points.append(point)
    version = postgres_version(dsn)
    return {
        "postgres_version": version,
        "connections": devices,
        "duration_s": args.duration,
        "max_records_per_s": best,
        "max_point": maximum,
        "points": points,
    }


# --- sync ---------------------------------------------------------------------------------------------------------
def part_sync(args: argparse.Namespace) -> dict[str, Any]:
    import bench_sync

    counts = (5, 20) if args.quick else (10, 100, 1_000)
    points = []
    for count in counts:
        options = bench_sync.parse_args(["--vehicles", str(count), "--cycles", "2", "--repeat", "1"])
        load_before = load_average()
        result = bench_sync.run(options)
        cycles = [c["duration_s"] for c in result["cycles"]]
        points.append(
            {
                "vehicles": count,
                "rows_per_cycle": result["parameters"]["rows_per_cycle"],
                "cycle_s": cycles,
                "best_cycle_s": min(cycles),
                "sync_process_cpu_s": [c["sync_process_cpu_s"] for c in result["cycles"]],
                "sustained_rows_per_s": result["sustained_rows_per_s"],
                "raw_copy_rows_per_s": result["raw_copy_rows_per_s"]["median"],
                "sync_to_raw_copy": result["sync_vs_raw_copy"],
                "load_average_before": load_before,
                "load_average_after": load_average(),
            }
        )
        print(json.dumps(points[-1]), file=sys.stderr, flush=True)
    return {
        "postgres_version": result["machine"]["postgresql"],
        "channels": result["parameters"]["channels"],
        "backlog_s": result["parameters"]["backlog_s"],
        "points": points,
    }


# --- API history -----------------------------------------------------------------------------------------------
async def seed_history(owner_dsn: str, lengths: list[int], end: datetime) -> dict[str, Any]:
    """A superuser (perf_sanity's seed) and, per length, a vehicle with that many seconds of 1 Hz positions."""
    import asyncpg

    from tools import perf_sanity

    seeded = await perf_sanity.seed(owner_dsn, 1, end - timedelta(days=1))
    conn = await asyncpg.connect(owner_dsn)
    vehicles = {}
    try:
        user_id = await conn.fetchval("SELECT id FROM users WHERE email = $1", seeded["email"])
        for length in lengths:
            start = end - timedelta(seconds=length)
            month = start.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
            while month <= end:
                await conn.execute("SELECT fleet_ensure_partition('positions', $1)", month)
                month = (month + timedelta(days=32)).replace(day=1)
            vehicle_id = await conn.fetchval(
                "INSERT INTO vehicles (name, last_seen_at) VALUES ($1, now()) RETURNING id",
                f"history {length} s",
            )
            device_id = await conn.fetchval(
                "INSERT INTO devices (imei, vehicle_id, last_seen_at) VALUES ($1, $2, now()) RETURNING id",
                f"87{secrets.randbelow(10**13):013d}",
                vehicle_id,
            )
            await conn.execute(
                "INSERT INTO vehicle_access (user_id, vehicle_id) VALUES ($1, $2)", user_id, vehicle_id
            )
            started = time.perf_counter()
            await conn.execute(
                """INSERT INTO positions (device_id, vehicle_id, record_index, device_time, fix_time, valid,
                                          latitude, longitude, speed, course, altitude, satellites, hdop)
                   SELECT $1, $2, g, $3::timestamptz + g * interval '1 second', $3::timestamptz + g * interval '1 second', true,
                          50.45 + (g % 3600) * 1e-5, 30.52 + (g / 3600) * 1e-4, g % 90, g % 360, 120, 12, 0.9
                   FROM generate_series(0, $4 - 1) AS g""",
                device_id,
                vehicle_id,
                start,
                length,
            )
            vehicles[length] = {"vehicle_id": vehicle_id, "insert_s": round(time.perf_counter() - started, 2)}
        await conn.execute("ANALYZE positions")
    finally:
        await conn.close()
    return {"email": seeded["email"], "vehicles": vehicles}


def bucket_for(seconds: int, points: int = 1000) -> str:
    """A bucket size (the API's `30s`/`15m` syntax) that cuts `seconds` into about `points` buckets."""
    size = max(1, seconds // points)
    return f"{size // 60}m" if size >= 600 and size % 60 == 0 else f"{size}s"


async def history_requests(args: argparse.Namespace) -> dict[str, Any]:
    import httpx

    from tools import perf_sanity

    lengths = [900, HOUR, 6 * HOUR] if args.quick else [HOUR, DAY, 30 * DAY]
    runs = 2 if args.quick else 10
    end = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    server = perf_sanity.SpawnedServer(Path(tempfile.gettempdir()) / "fleet-bench-growth-api.log")
    try:
        owner_dsn = await server.start_database()
        seeded = await seed_history(owner_dsn, lengths, end)
        import asyncpg

        conn = await asyncpg.connect(owner_dsn)
        try:
            version = str(await conn.fetchval("SHOW server_version"))
        finally:
            await conn.close()
        server.start_api(owner_dsn, "uvloop")
        async with httpx.AsyncClient(base_url=server.url, timeout=120) as client:
            token = await perf_sanity.sign_in(client, seeded["email"], perf_sanity.PASSWORD)
        headers = {"Authorization": f"Bearer {token}"}
        meter = server.meter()

        def iso(moment: datetime) -> str:
            return moment.isoformat().replace("+00:00", "Z")

        points = []
        for length in lengths:
            vehicle = seeded["vehicles"][length]["vehicle_id"]
            start = end - timedelta(seconds=length)
            base = f"/vehicles/{vehicle}/positions?from={iso(start)}&to={iso(end)}"
            load_before = load_average()
            queries = {
                "raw_first_page": base + f"&limit={min(length, 100_000)}",
                "downsampled_1000": base + f"&bucket={bucket_for(length)}",
                "last_hour": f"/vehicles/{vehicle}/positions?from={iso(end - timedelta(hours=1))}&to={iso(end)}",
            }
            measured = {}
            for name, path in queries.items():
                measured[name] = await perf_sanity.measure(
                    server.url, path, runs=runs, concurrency=1, headers=headers, warmup_rounds=1, meter=meter
                )
            points.append(
                {
                    "history_s": length,
                    "rows": length,
                    "insert_s": seeded["vehicles"][length]["insert_s"],
                    "bucket": bucket_for(length),
                    **measured,
                    "load_average_before": load_before,
                    "load_average_after": load_average(),
                }
            )
            print(
                json.dumps({"history_s": length, **{k: v["p50_ms"] for k, v in measured.items()}}),
                file=sys.stderr,
            )
    finally:
        await server.stop()
    return {"postgres_version": version, "runs": runs, "points": points}


def part_history(args: argparse.Namespace) -> dict[str, Any]:
    import uvloop

    return uvloop.run(history_requests(args))


# --- disk ---------------------------------------------------------------------------------------------------------
TABLE_BYTES = """
SELECT coalesce(sum(pg_total_relation_size(relid)), 0)::bigint
FROM pg_partition_tree($1::regclass) WHERE isleaf
"""


async def disk_sizes(dsn: str, measurement_rows: int) -> dict[str, Any]:
    """Bytes per row of each telemetry table; `measurements` filled with sync-shaped rows first."""
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        start = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=2)
        await conn.execute("SELECT fleet_ensure_partition('measurements', $1)", start)
        await conn.execute("SELECT fleet_ensure_partition('measurements', $1)", start + timedelta(hours=2))
        channels = 25
        seconds = max(1, measurement_rows // channels)
        await conn.execute(
            """INSERT INTO measurements (vehicle_id, channel_id, time, value)
               SELECT 1, c, $1::timestamptz + s * interval '1 second', c * 1.5 + s
               FROM generate_series(0, $2 - 1) AS s, generate_series(1, $3) AS c""",
            start,
            seconds,
            channels,
        )
        await conn.execute("VACUUM ANALYZE")  # visibility maps and free space maps exist, as in steady state
        tables = {}
        for table in ("positions", "raw_frames", "can_data", "measurements"):
            rows = int(await conn.fetchval(f"SELECT count(*) FROM {table}"))
            size = int(await conn.fetchval(TABLE_BYTES, table))
            tables[table] = {
                "rows": rows,
                "bytes": size,
                "bytes_per_row": round(size / rows, 1) if rows else None,
            }
        frames = await conn.fetchrow(
            "SELECT count(*) AS n, avg(octet_length(data)) AS payload FROM raw_frames WHERE outcome = 'ok'"
        )
        tables["raw_frames"]["avg_payload_bytes"] = round(float(frames["payload"] or 0), 1)
        return tables
    finally:
        await conn.close()


def device_day(tables: dict[str, Any], records_per_frame: int, can_per_record: float) -> dict[str, Any]:
    """Bytes per device-day at several reporting intervals (1 record per interval, `records_per_frame` each)."""
    position = tables["positions"]["bytes_per_row"] or 0.0
    frame = tables["raw_frames"]["bytes_per_row"] or 0.0
    can = tables["can_data"]["bytes_per_row"] or 0.0
    out = {}
    for interval in (1, 10, 30, 60):
        records = DAY / interval
        frames = records / records_per_frame
        parts = {
            "positions": records * position,
            "raw_frames": frames * frame,
            "can_data": records * can_per_record * can,
        }
        out[f"every_{interval}s"] = {
            "records": round(records),
            **{f"{k}_mib": round(v / 2**20, 2) for k, v in parts.items()},
            "total_mib": round(sum(parts.values()) / 2**20, 2),
        }
    return out


def part_disk(args: argparse.Namespace, server: Any, dsn: str) -> dict[str, Any]:
    """Sizes of everything the ingest parts stored, after one more load with CAN values in every record."""
    devices = 100 if args.quick else 1_000
    with_can = ingest_point(server, "disk_can", devices, 0.0, args.duration, FIRST_IMEI + 2_000_000, can=True)
    tables = asyncio.run(disk_sizes(dsn, 25 * (HOUR if not args.quick else 600)))
    version = postgres_version(dsn)
    acked = tables["positions"]["rows"]
    # Only this load reports CAN values (the other parts' trackers do not), and each record that carries them
    # stores one reading (migration 0008: one can_data row per record, whatever its number of signals).
    can_acked = with_can["raw"]["records_acked"]
    can_per_can_record = round(tables["can_data"]["rows"] / can_acked, 3) if can_acked else 0.0
    records_per_frame = 10
    measurement = tables["measurements"]["bytes_per_row"] or 0.0
    return {
        "postgres_version": version,
        "records_acked": acked,
        "records_per_frame": records_per_frame,
        "tables": tables,
        "can_rows_per_record_with_can": can_per_can_record,
        "can_load_records_acked": with_can["raw"]["records_acked"],
        "device_day_without_can": device_day(tables, records_per_frame, 0.0),
        "device_day_with_can": device_day(tables, records_per_frame, can_per_can_record),
        "vehicle_day_measurements_25_channels_1hz_mib": round(25 * DAY * measurement / 2**20, 2),
        "note": "sizes right after loading and VACUUM ANALYZE: heap, indexes and TOAST of every partition; "
        "no bloat from updates or deletes, default fillfactor",
    }


# --- plots --------------------------------------------------------------------------------------------------------
def plot(parts: dict[str, Any], suffix: str) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []

    def save(fig: Any, name: str) -> None:
        path = RESULTS_DIR / f"growth_{name}{suffix}.png"
        fig.tight_layout()
        fig.savefig(path, dpi=90)
        plt.close(fig)
        written.append(str(path.relative_to(ROOT)))

    def twin(
        ax: Any,
        xs: list[float],
        left: list[Any],
        right: list[Any],
        labels: tuple[str, str, str],
        right_log: bool = False,
    ) -> None:
        ax.plot(xs, left, "o-", color="tab:blue")
        ax.set_xlabel(labels[0])
        ax.set_ylabel(labels[1], color="tab:blue")
        ax.set_ylim(bottom=0)
        other = ax.twinx()
        other.plot(xs, right, "s--", color="tab:red")
        other.set_ylabel(labels[2], color="tab:red")
        if right_log:  # latencies span orders of magnitude
            other.set_yscale("log")
        ax.grid(alpha=0.3)

    if "connections" in parts:
        pts = parts["connections"]["points"]
        fig, ax = plt.subplots(figsize=(6.4, 3.6))
        twin(
            ax,
            [p["connections"] for p in pts],
            [p["records_per_s"] for p in pts],
            [p["ack_p99_ms"] for p in pts],
            (
                "connections (max rate, FLEX 2.0, 10 records/frame)",
                "records/s acknowledged",
                "p99 ACK latency, ms",
            ),
            right_log=True,
        )
        ax.set_xscale("log")
        ax.set_title("Ingest: throughput and p99 ACK latency vs connections")
        save(fig, "connections")
    if "rate" in parts:
        pts = parts["rate"]["points"]
        offered = [p["offered_records_per_s"] for p in pts]
        fig, ax = plt.subplots(figsize=(6.4, 3.6))
        twin(
            ax,
            offered,
            [p["records_per_s"] for p in pts],
            [p["ack_p99_ms"] for p in pts],
            (
                f"offered records/s ({parts['rate']['connections']} connections)",
                "achieved records/s",
                "p99 ACK latency, ms",
            ),
        )
        ax.plot(offered, offered, ":", color="grey", label="achieved = offered")
        ax.legend(loc="upper left", fontsize=8)
        ax.set_title("Ingest: offered rate up to saturation")
        save(fig, "rate")
    if "sync" in parts:
        pts = parts["sync"]["points"]
        fig, ax = plt.subplots(figsize=(6.4, 3.6))
        twin(
            ax,
            [p["vehicles"] for p in pts],
            [p["best_cycle_s"] for p in pts],
            [p["sustained_rows_per_s"] for p in pts],
            ("vehicles (25 channels, 30 s backlog each)", "cycle time, s (best of 2)", "rows/s sustained"),
        )
        ax.set_xscale("log")
        ax.set_title("Sync: cycle time vs vehicles")
        save(fig, "sync")
    if "history" in parts:
        pts = parts["history"]["points"]
        fig, ax = plt.subplots(figsize=(6.4, 3.6))
        xs = [p["history_s"] / HOUR for p in pts]
        for name, style in (("raw_first_page", "o-"), ("downsampled_1000", "s--"), ("last_hour", "^:")):
            ax.plot(xs, [p[name]["p50_ms"] for p in pts], style, label=f"{name} p50")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("history of the vehicle, hours (1 Hz positions)")
        ax.set_ylabel("latency, ms")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        ax.set_title("API: GET /vehicles/{id}/positions vs history length")
        save(fig, "history")
    if "disk" in parts:
        tables = parts["disk"]["tables"]
        names = [n for n in tables if tables[n]["bytes_per_row"]]
        fig, ax = plt.subplots(figsize=(6.4, 3.6))
        bars = ax.bar(names, [tables[n]["bytes_per_row"] for n in names], color="tab:green")
        ax.bar_label(bars, fmt="%.0f")
        ax.set_ylabel("bytes on disk per row (heap + indexes)")
        ax.set_title("Disk per stored row")
        save(fig, "disk")
    return written


# --- main ---------------------------------------------------------------------------------------------------------
INGEST_RUNNERS: dict[str, Callable[[argparse.Namespace, Any, str], dict[str, Any]]] = {
    "connections": part_connections,
    "rate": part_rate,
    "disk": part_disk,
}
OTHER_RUNNERS: dict[str, Callable[[argparse.Namespace], dict[str, Any]]] = {
    "sync": part_sync,
    "history": part_history,
}


def run_part(
    name: str, runner: Callable[[], dict[str, Any]], parts: dict[str, Any], failed: list[str]
) -> None:
    """Run one part; record its time and load averages, or its failure (the other parts go on)."""
    started = datetime.now(UTC)
    load_before = load_average()
    try:
        part = runner()
    except Exception as err:  # one part failing must not lose the others' figures
        failed.append(name)
        print(f"growth part {name} failed: {err!r}", file=sys.stderr)
        return
    part["measured_at"] = started.isoformat(timespec="seconds")
    part["load_average_before"] = load_before
    part["load_average_after"] = load_average()
    parts[name] = part
    print(
        f"growth part {name} done in {(datetime.now(UTC) - started).total_seconds():.0f} s", file=sys.stderr
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", action="append", choices=PARTS, help="default: all")
    parser.add_argument("--duration", type=float, default=15.0, help="seconds per ingest load point")
    parser.add_argument(
        "--plot-only", action="store_true", help="redraw the PNGs from the stored growth JSON"
    )
    add_quick_argument(parser)
    args = parser.parse_args()
    if args.quick:
        args.duration = 2.0
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(
        resource.RLIMIT_NOFILE, (hard, hard)
    )  # the simulator's 10,000 sockets (it inherits this)
    import logging

    import structlog

    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
    )
    chosen = args.part or list(PARTS)
    if args.plot_only:
        stored = load_result("growth-quick" if args.quick else "growth")
        if stored is None:
            parser.error("no stored growth result to plot")
        print("\n".join(plot(stored["results"]["parts"], "-quick" if args.quick else "")))
        return 0
    report = BenchReport(
        "growth", quick=args.quick, parameters={"parts_run": chosen, "ingest_duration_s": args.duration}
    )
    previous = (load_result(report.stem()) or {}).get("results", {}).get("parts", {})
    parts: dict[str, Any] = {k: v for k, v in previous.items() if k not in chosen}
    failed: list[str] = []
    ingest_parts = [name for name in INGEST_PARTS if name in chosen]
    if ingest_parts:
        workdir = Path(tempfile.mkdtemp(prefix="fleet-bench-growth-"))
        try:
            with ingest_server(workdir) as (server, dsn):
                ingest_point(server, "warmup", 100, 0.0, 2.0, FIRST_IMEI)
                for name in ingest_parts:
                    run_part(name, lambda n=name: INGEST_RUNNERS[n](args, server, dsn), parts, failed)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
    for name in chosen:
        if name in OTHER_RUNNERS:
            run_part(name, lambda n=name: OTHER_RUNNERS[n](args), parts, failed)
    versions = {p.get("postgres_version") for p in parts.values()} - {None}
    if versions:
        report.set_postgres_version(sorted(versions)[-1])
    if "connections" in parts:
        for p in parts["connections"]["points"]:
            report.add_samples(f"connections_{p['connections']}.ack_p99_ms", [p["ack_p99_ms"] or 0.0])
    if "rate" in parts:
        report.add_baseline("rate.max_records_per_s_1000", parts["rate"]["max_records_per_s"])
    if "sync" in parts:
        for p in parts["sync"]["points"]:
            report.add_samples(f"sync_{p['vehicles']}.cycle_s", p["cycle_s"])
            report.add_ratio(
                f"sync_{p['vehicles']}.to_raw_copy", p["sustained_rows_per_s"], p["raw_copy_rows_per_s"]
            )
    if "disk" in parts:
        for table, figures in parts["disk"]["tables"].items():
            report.add_baseline(f"disk.{table}.bytes_per_row", figures["bytes_per_row"])
    report.results = {"parts": parts, "failed_parts": failed}
    report.results["plots"] = plot(parts, "-quick" if args.quick else "")
    report.note("parts not run this time keep the figures of the previous run: see each part's measured_at")
    print(json.dumps(report.results, indent=2, default=str))
    report.write()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
