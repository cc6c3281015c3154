"""Benchmark the sync service: 1,000 vehicles × 25 channels at 1 Hz, a 30 s backlog each; prints JSON.

Set-up, all on this machine:

* PostgreSQL: a throwaway database on ``BENCH_DATABASE_URL`` (or ``TEST_DATABASE_URL``; a server where we may
  create databases), else a private embedded server in a temporary directory; migrated like production.
* Vehicles: one uvicorn process (uvloop, httptools) listening on ``--vehicles`` ports of 127.0.0.1, one per
  vehicle; the listening port tells the vehicle apart. It answers ``/status``, ``/channels``, ``/alarms``
  and ``/data`` in the contract's format, with every channel sampled once per second. Bodies are built once
  per distinct window and cached (every vehicle is asked for the same window), so the double costs little
  CPU and the figures are the server's.
* Sync: the real ``SyncService`` with its injected clock fixed per cycle; every vehicle's ``last_sync_at``
  is ``--backlog`` seconds behind, so each cycle moves ``vehicles × channels × backlog`` rows (750,000).

Measured:

* ``cycles``: wall time and the sync process's CPU time of each full cycle (HTTP, validation, staging COPY,
  INSERT, journal, leases) and the rows it wrote; ``sustained_rows_per_s`` is rows per cycle over the median
  cycle time;
* ``raw_copy_rows_per_s``: binary COPY of the same number of rows straight into ``measurements`` as the table
  owner (no RLS, no duplicate handling: the ceiling); ``write_path_rows_per_s``: the sync's own storage path
  alone (``insert_measurements``: staging COPY + INSERT under RLS, in 100,000-row transactions) on rows of the
  same shape; both ``--repeat`` times, alternated, median reported;
* the ratios of the sustained sync rate and of the write path to the raw COPY rate.

The machine's 1-minute load average at the start is recorded: on a shared machine other work slows every
figure, and the cycles share two cores with PostgreSQL and the vehicles' process.

Targets from the issue: the 750,000-row backlog synced in < 10 s; ≥ 50 % of the raw COPY rate.

``--quick``: 50 vehicles, 2 cycles, one baseline run (``sync-quick.json``). Results are written
by ``bench/common.py`` to ``bench/results/sync.json`` and ``sync-<UTC timestamp>.json``.

Usage: ``python bench/bench_sync.py [--vehicles 1000] [--channels 25] [--backlog 30] [--cycles 4]
[--repeat 3] [--concurrency 50] [--gps] [--output FILE]``; `--gps` names channels 1 and 2 latitude and
longitude, so every row time of every vehicle also makes a position (the sync path of a pull vehicle with GPS).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import math
import multiprocessing
import os
import platform
import secrets
import socket
import statistics
import sys
import tempfile
import time
import uuid
from collections import Counter
from contextlib import AsyncExitStack
from datetime import UTC, datetime, timedelta
from importlib.metadata import version
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit, urlunsplit

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("XDG_RUNTIME_DIR", tempfile.mkdtemp(prefix="fleet-xdg-"))

import asyncpg
import structlog
from pydantic import SecretStr

from bench.common import BenchReport, add_quick_argument
from fleet.config import Settings
from fleet.db import Database
from fleet.db.embedded import EmbeddedPostgres
from fleet.db.queries.sync import insert_measurements
from fleet.sync.parse import format_time, parse_time
from fleet.sync.service import SyncService

API_KEY = "bench-vehicle-key-0123456789abcdef"
WRITE_GROUP_ROWS = 100_000
LOAD_AT_START = round(os.getloadavg()[0], 2)


# --- the vehicles ---------------------------------------------------------------------------------------
class BenchFleet:
    """ASGI app answering for every vehicle; bodies cached per query string."""

    def __init__(self, channels: int, gps: bool = False) -> None:
        self.channels = channels
        self.cache: dict[bytes, bytes] = {}
        self.status = json.dumps(
            {"online": True, "software_version": "bench", "contract_version": "1.0", "db_ok": True}
        ).encode()
        self.channel_list = json.dumps(
            {
                "channels": [
                    {
                        "channel_id": c,
                        "name": _name(c, gps),
                        "unit": "°" if gps and c <= 2 else "u",
                        "phys_min": 0,
                        "phys_max": 1000,
                    }
                    for c in range(1, channels + 1)
                ]
            }
        ).encode()

    def data(self, query: dict[str, str]) -> bytes:
        start, end = parse_time(query["from"]), parse_time(query["to"])
        assert start is not None and end is not None
        parts = []
        second = math.ceil(start.timestamp())
        while second < end.timestamp():
            stamp = format_time(datetime.fromtimestamp(second, UTC))
            parts.extend(
                f'{{"channel_id":{c},"time":"{stamp}","value":{c * 10 + second % 60 + 0.5!r}}}'
                for c in range(1, self.channels + 1)
            )
            second += 1
        head = json.dumps({"from": query["from"], "to": query["to"]})[:-1]
        return f'{head},"rows":[{",".join(parts)}],"count":{len(parts)},"truncated":false,"next_from":null}}'.encode()

    def alarms(self, query: dict[str, str]) -> bytes:
        return json.dumps(
            {"from": query["from"], "to": query["to"], "alarms": [], "truncated": False}
        ).encode()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        path = scope["path"]
        raw_query = scope["query_string"]
        if path == "/status":
            body = self.status
        elif path == "/channels":
            body = self.channel_list
        else:
            key = path.encode() + b"?" + raw_query
            body = self.cache.get(key)  # type: ignore[assignment]
            if body is None:
                query = dict(parse_qsl(raw_query.decode()))
                body = self.data(query) if path == "/data" else self.alarms(query)
                self.cache[key] = body
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


def _name(channel: int, gps: bool) -> str:
    """Channel names; with --gps channels 1 and 2 are a GPS fix (their values, 10-80, are valid degrees)."""
    if gps and channel <= 2:
        return ("latitude", "longitude")[channel - 1]
    return f"ch{channel}"


def serve_fleet(sockets: list[socket.socket], channels: int, gps: bool = False) -> None:
    """Child process: serve the fleet on the inherited listening sockets until terminated."""
    import uvicorn

    config = uvicorn.Config(
        BenchFleet(channels, gps),
        loop="uvloop",
        http="httptools",
        lifespan="off",
        log_level="warning",
        access_log=False,
        backlog=4096,
    )
    uvicorn.Server(config).run(sockets=sockets)


def listening_sockets(count: int) -> list[socket.socket]:
    sockets = []
    for _ in range(count):
        # IPPROTO_TCP so the event loop enables TCP_NODELAY on accepted connections.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        sock.listen(256)
        sockets.append(sock)
    return sockets


# --- the database ---------------------------------------------------------------------------------------
class BenchDatabase:
    """Owner DSN of a throwaway database: on the configured server, else on an embedded one."""

    def __init__(self) -> None:
        self.base = os.environ.get("BENCH_DATABASE_URL") or os.environ.get("TEST_DATABASE_URL")
        self.name = f"fleet_bench_{uuid.uuid4().hex[:10]}"
        self.embedded: EmbeddedPostgres | None = None
        self.dsn = ""

    async def __aenter__(self) -> str:
        if self.base:
            conn = await asyncpg.connect(self.base)
            try:
                await conn.execute(f'CREATE DATABASE "{self.name}"')
            finally:
                await conn.close()
            parts = urlsplit(self.base)
            self.dsn = urlunsplit((parts.scheme, parts.netloc, "/" + self.name, parts.query, parts.fragment))
        else:
            self.embedded = EmbeddedPostgres(Path(tempfile.mkdtemp(prefix="fleet-bench-")) / "pg")
            self.dsn = await asyncio.to_thread(self.embedded.start)
        return self.dsn

    async def __aexit__(self, *exc: object) -> None:
        if self.embedded is not None:
            await asyncio.to_thread(self.embedded.stop)
            return
        assert self.base is not None
        conn = await asyncpg.connect(self.base)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
        finally:
            await conn.close()


def rows_for(vehicle_ids: list[int], channels: int, start: datetime, seconds: int) -> list[tuple[Any, ...]]:
    times = [start + timedelta(seconds=s) for s in range(seconds)]
    return [(v, c, t, float(c)) for v in vehicle_ids for t in times for c in range(1, channels + 1)]


# --- the run --------------------------------------------------------------------------------------------
async def bench(args: argparse.Namespace, ports: list[int]) -> dict[str, Any]:
    async with AsyncExitStack() as stack:
        dsn = await stack.enter_async_context(BenchDatabase())
        settings = Settings(
            env="test",
            data_dir=Path(tempfile.mkdtemp(prefix="fleet-bench-data-")),
            database_url=dsn,
            db_app_password=SecretStr(secrets.token_urlsafe(24)),
            secret_key=SecretStr(secrets.token_urlsafe(32)),
            api_key=SecretStr(secrets.token_urlsafe(32)),
            vehicle_default_api_key=SecretStr(API_KEY),
            sync_concurrency=args.concurrency,
            pull_timeout_sec=30,
            db_pool_max=10,
            log_level="WARNING",
        )
        db = Database(settings)
        await db.start(migrate_schema=True)
        stack.push_async_callback(db.close)
        t0 = datetime.now(UTC).replace(microsecond=0)
        async with db.system() as conn:
            server_version = await conn.fetchval("SHOW server_version")
            ids = [
                r[0]
                for r in await conn.fetch(
                    """INSERT INTO vehicles (name, vpn_ip, api_port, last_sync_at)
                       SELECT 'bench-' || p, '127.0.0.1', p, $2 FROM unnest($1::integer[]) AS p
                       RETURNING id""",
                    ports,
                    t0 - timedelta(seconds=args.backlog),
                )
            ]
        expected_rows = len(ids) * args.channels * args.backlog

        clock = {"now": t0}
        cycles = []
        async with SyncService(db, settings, now=lambda: clock["now"]) as service:
            for _ in range(args.cycles):
                cpu = time.process_time()
                report = await service.run_cycle(only=ids)
                cpu = time.process_time() - cpu
                failed = [v for v in report.vehicles if v.status != "ok"]
                cycles.append(
                    {
                        "duration_s": round(report.duration_s, 3),
                        "rows_written": report.rows_written,
                        "rows_per_s": round(report.rows_written / report.duration_s),
                        "sync_process_cpu_s": round(cpu, 3),
                        "vehicles_ok": len(report.vehicles) - len(failed),
                        "vehicles_failed": len(failed),
                    }
                )
                if failed or report.rows_written != expected_rows:
                    raise SystemExit(f"cycle incomplete: {cycles[-1]}; first failure: {failed[:1]}")
                clock["now"] += timedelta(seconds=args.backlog)

        # The raw COPY ceiling and the sync's storage path alone, on rows of the same shape at later times,
        # alternated `--repeat` times so that both see the same machine (other work on it slows either).
        raw_runs: list[float] = []
        path_runs: list[float] = []
        owner = await asyncpg.connect(dsn)
        try:
            for repeat in range(args.repeat):
                later = clock["now"] + timedelta(hours=1 + 2 * repeat)
                copy_rows = rows_for(ids, args.channels, later, args.backlog)
                started = time.perf_counter()
                async with owner.transaction():
                    await owner.copy_records_to_table(
                        "measurements",
                        records=copy_rows,
                        columns=["vehicle_id", "channel_id", "time", "value"],
                    )
                raw_runs.append(len(copy_rows) / (time.perf_counter() - started))
                path_rows = rows_for(ids, args.channels, later + timedelta(hours=1), args.backlog)
                chunks = [
                    path_rows[at : at + WRITE_GROUP_ROWS] for at in range(0, len(path_rows), WRITE_GROUP_ROWS)
                ]
                # The writer knows how many rows each vehicle brought; so does this measurement.
                counts = [Counter(row[0] for row in chunk) for chunk in chunks]
                started = time.perf_counter()
                for chunk, per_vehicle in zip(chunks, counts, strict=True):
                    async with db.system() as conn:
                        await insert_measurements(conn, chunk, per_vehicle)
                path_runs.append(len(path_rows) / (time.perf_counter() - started))
        finally:
            await owner.close()

    durations = [c["duration_s"] for c in cycles]
    sustained = expected_rows / statistics.median(durations)
    raw_rate = statistics.median(raw_runs)
    path_rate = statistics.median(path_runs)
    return {
        "benchmark": "sync",
        "machine": machine_info(server_version),
        "parameters": {
            "vehicles": len(ids),
            "channels": args.channels,
            "rate_hz": 1,
            "backlog_s": args.backlog,
            "rows_per_cycle": expected_rows,
            "sync_concurrency": args.concurrency,
            "gps_positions": args.gps,
            "sync_max_rows_per_request": settings.sync_max_rows_per_request,
            "db_pool_max": settings.db_pool_max,
            "repeat": args.repeat,
        },
        "cycles": cycles,
        "first_cycle_s": durations[0],
        "median_cycle_s": round(statistics.median(durations), 3),
        "best_cycle_s": min(durations),
        "sustained_rows_per_s": round(sustained),
        "raw_copy_rows_per_s": {"median": round(raw_rate), "runs": [round(r) for r in raw_runs]},
        "write_path_rows_per_s": {"median": round(path_rate), "runs": [round(r) for r in path_runs]},
        "sync_vs_raw_copy": round(sustained / raw_rate, 3),
        "write_path_vs_raw_copy": round(path_rate / raw_rate, 3),
        "targets": {
            "backlog_synced_under_10_s": max(durations) < 10,
            "sync_at_least_half_raw_copy_rate": sustained / raw_rate >= 0.5,
            "write_path_at_least_half_raw_copy_rate": path_rate / raw_rate >= 0.5,
        },
    }


def machine_info(server_version: str) -> dict[str, Any]:
    cpu = platform.processor() or "unknown"
    memory = None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                memory = round(int(line.split()[1]) / 1024 / 1024, 1)
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": memory,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "postgresql": server_version,
        # Other work on the machine skews every figure; the 1-minute load average before the run says how much.
        "load_average_1m_at_start": LOAD_AT_START,
        "packages": {name: version(name) for name in ("asyncpg", "httpx", "uvicorn", "uvloop")},
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vehicles", type=int, default=1000)
    parser.add_argument("--channels", type=int, default=25)
    parser.add_argument("--backlog", type=int, default=30, help="seconds of data waiting per vehicle")
    parser.add_argument("--cycles", type=int, default=4)
    parser.add_argument(
        "--repeat", type=int, default=3, help="runs of the raw COPY and write-path measurements"
    )
    parser.add_argument("--concurrency", type=int, default=Settings.model_fields["sync_concurrency"].default)
    parser.add_argument(
        "--gps",
        action="store_true",
        help="channels 1 and 2 are latitude/longitude: the sync also stores positions",
    )
    parser.add_argument("--output", type=Path, help="also write the JSON here")
    add_quick_argument(parser)
    args = parser.parse_args(argv)
    if args.quick:
        args.vehicles, args.cycles, args.repeat = 50, 2, 1
    return args


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Start the vehicles' process, run the cycles and the baselines; return the result."""
    sockets = listening_sockets(args.vehicles)
    ports = [s.getsockname()[1] for s in sockets]
    server = multiprocessing.get_context("fork").Process(
        target=serve_fleet, args=(sockets, args.channels, args.gps)
    )
    server.start()
    for sock in sockets:
        sock.close()
    try:
        import uvloop

        return uvloop.run(bench(args, ports))
    finally:
        server.terminate()
        server.join(10)


def main() -> int:
    args = parse_args()
    # Warnings and errors only, on stderr: stdout is the JSON result.
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
    )
    report = BenchReport("sync", quick=args.quick)
    result = run(args)
    report.parameters = result["parameters"]
    report.set_postgres_version(result["machine"]["postgresql"])
    report.add_samples("cycle_s", [c["duration_s"] for c in result["cycles"]])
    report.add_samples("cycle_sync_process_cpu_s", [c["sync_process_cpu_s"] for c in result["cycles"]])
    report.add_samples("raw_copy_rows_per_s", result["raw_copy_rows_per_s"]["runs"], digits=0)
    report.add_samples("write_path_rows_per_s", result["write_path_rows_per_s"]["runs"], digits=0)
    report.add_baseline("raw_copy_rows_per_s", result["raw_copy_rows_per_s"]["median"])
    report.add_ratio(
        "sync_to_raw_copy", result["sustained_rows_per_s"], result["raw_copy_rows_per_s"]["median"]
    )
    report.add_ratio(
        "write_path_to_raw_copy",
        result["write_path_rows_per_s"]["median"],
        result["raw_copy_rows_per_s"]["median"],
    )
    report.add_target(
        "max_cycle_s", max(c["duration_s"] for c in result["cycles"]), 10, higher_is_better=False
    )
    report.add_target("sync_to_raw_copy", report.ratios["sync_to_raw_copy"], 0.5)
    report.results = result
    text = json.dumps(result, indent=2)
    print(text)
    if args.output:
        args.output.write_text(text + "\n", encoding="utf-8")
    report.write()
    return 0 if report.targets_met() else 1


if __name__ == "__main__":
    sys.exit(main())
