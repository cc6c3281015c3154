#!/usr/bin/env python3
"""Bytes on disk per stored record, through the real write paths, on a fresh database.

    make bench-storage     # or: .venv/bin/python bench/bench_storage.py [--trackers 200] [--records 100] [--quick]

A fresh embedded PostgreSQL (or ``--database-url``, which must be an empty database) is migrated, then:

* **trackers**: an in-process ingest service (the real listener, codec, writer and COPY path) receives
  ``--trackers`` simulated Navtelecom FLEX 2.0 trackers sending ``--records`` records each, one record per
  frame (what a tracker reporting every 10 s sends), once without and once with CAN values;
* **pull vehicles**: the sync service's writer (``fleet.sync.writer.SyncWriter``, the real batch upsert)
  stores ``--vehicles`` vehicles × 25 channels × ``--seconds`` one-second samples into ``measurements``.

After a VACUUM ANALYZE, each table's size (heap + indexes + TOAST, summed over its monthly partitions) is
divided by its rows: bytes per record for the capacity model (``tools/capacity.py``). Sizes at this scale
include page and index fill overheads a larger table has too; the partitions' fixed overhead (a few empty
pages per index) is reported apart and left out of the per-row figure.

Prints one JSON document (``bench/common.py``'s format, the figures under ``results``), also written to
``bench/results/storage-<UTC>.json`` and ``bench/results/storage.json``. ``--quick``: 20 trackers × 20 records,
2 vehicles × 60 s, records sent within 3 s (``storage-quick*.json``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench.bench_ingest import _server_version  # noqa: E402
from bench.common import BenchReport, add_quick_argument, process_ticks  # noqa: E402
from fleet.config import Settings  # noqa: E402
from fleet.db import Database  # noqa: E402
from fleet.ingest import IngestService  # noqa: E402
from fleet.ops.bus import InProcessBus  # noqa: E402
from fleet.simulate.engine import SimulationConfig, run_simulation  # noqa: E402
from fleet.sync.writer import SyncWriter, VehicleWrite  # noqa: E402

TABLES = ("positions", "raw_frames", "can_data", "events", "measurements", "devices", "vehicles")
CHANNELS = 25

SIZE_SQL = """
SELECT coalesce(sum(pg_total_relation_size(relid)), 0)::bigint AS bytes,
       coalesce(sum(pg_relation_size(relid)), 0)::bigint AS heap_bytes,
       count(*) FILTER (WHERE isleaf) AS partitions
FROM pg_partition_tree($1::regclass)
"""


async def table_sizes(conn: Any) -> dict[str, dict[str, Any]]:
    out = {}
    for table in TABLES:
        row = await conn.fetchrow(SIZE_SQL, table)
        rows = await conn.fetchval(f"SELECT count(*) FROM {table}")
        out[table] = {"rows": rows, "bytes": row["bytes"], "heap_bytes": row["heap_bytes"]}
    return out


def per_row(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """Bytes per added row of every table that grew."""
    out = {}
    for table, now in after.items():
        added = now["rows"] - before[table]["rows"]
        if added > 0:
            out[table] = {
                "rows": added,
                "bytes": now["bytes"] - before[table]["bytes"],
                "bytes_per_row": round((now["bytes"] - before[table]["bytes"]) / added, 1),
                "heap_bytes_per_row": round((now["heap_bytes"] - before[table]["heap_bytes"]) / added, 1),
            }
    return out


def _postgres_pids(postmaster: int) -> set[int]:
    pids = {postmaster}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(stat[1]) == postmaster:
                pids.add(int(entry))
    return pids


class PgCpu:
    """CPU seconds of our PostgreSQL cluster (the postmaster and its backends) between start and stop."""

    postmaster: int | None = None

    def start(self) -> None:
        self._start = process_ticks(_postgres_pids(self.postmaster)) if self.postmaster else {}

    def stop(self) -> float:
        if not self.postmaster:
            return 0.0
        end = process_ticks(_postgres_pids(self.postmaster))
        return sum(t - self._start.get(pid, 0) for pid, t in end.items()) / os.sysconf("SC_CLK_TCK")


async def vacuum(owner_dsn: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(owner_dsn)
    try:
        for table in TABLES:
            await conn.execute(f"VACUUM ANALYZE {table}")
    finally:
        await conn.close()


async def sizes(owner_dsn: str) -> dict[str, dict[str, Any]]:
    import asyncpg

    await vacuum(owner_dsn)
    conn = await asyncpg.connect(owner_dsn)
    try:
        return await table_sizes(conn)
    finally:
        await conn.close()


async def trackers_part(
    db: Database, settings: Settings, owner_dsn: str, args: argparse.Namespace, can: bool, first_imei: int
) -> dict[str, Any]:
    service = IngestService(settings, db, InProcessBus())
    await service.start()
    before = await sizes(owner_dsn)
    pg = PgCpu()
    pg.start()
    try:
        result = await run_simulation(
            SimulationConfig(
                host="127.0.0.1",
                port=service.ports["navtelecom"],
                protocol="navtelecom",
                options={"flex": "2.0", "can": can},
                devices=args.trackers,
                rate=args.trackers * args.records / args.window,  # every tracker's records within the window
                duration=args.window,
                deliver_backlog=True,
                records_per_frame=1,
                first_imei=first_imei,
                seed=7,
                # A day ago: the rows land in the current month's partitions like live data.
                time_base=(datetime.now(UTC) - timedelta(days=1)).timestamp(),
            )
        )
    finally:
        await service.stop(10)
    pg_cpu = pg.stop()
    after = await sizes(owner_dsn)
    tables = per_row(before, after)
    records = tables["positions"]["rows"]  # one position per record (each record has a fix)
    return {
        "can": can,
        "records": records,
        "records_acked": result.records_acked,
        "records_per_s": round(records / args.window),
        # PostgreSQL's CPU while storing them (one record per frame, grouped by the writer's commit window).
        "postgres_us_per_record": round(pg_cpu / records * 1e6, 1),
        "tables": tables,
        # Every table a tracker record lands in, per record (raw frames include the login frames).
        "bytes_per_record": round(sum(t["bytes"] for t in tables.values()) / records, 1),
    }


async def vehicles_part(db: Database, owner_dsn: str, args: argparse.Namespace) -> dict[str, Any]:
    async with db.system() as conn:
        ids = [
            await conn.fetchval("INSERT INTO vehicles (name) VALUES ($1) RETURNING id", f"storage-{n}")
            for n in range(args.vehicles)
        ]
    before = await sizes(owner_dsn)
    writer = SyncWriter(db, owner="bench-storage", lease_sec=60, now=lambda: datetime.now(UTC))
    writer.start()
    pg = PgCpu()
    pg.start()
    cpu0 = time.process_time()
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=2)
    try:
        for vehicle_id in ids:
            for chunk in range(0, args.seconds, 60):  # one pull window a minute, like the sync cycle
                rows = [
                    (vehicle_id, channel, start + timedelta(seconds=second), 20.0 + channel + second % 17 / 7)
                    for second in range(chunk, min(chunk + 60, args.seconds))
                    for channel in range(1, CHANNELS + 1)
                ]
                await writer.write(VehicleWrite(vehicle_id, rows=rows))
    finally:
        await writer.close()
    writer_cpu, pg_cpu = time.process_time() - cpu0, pg.stop()
    after = await sizes(owner_dsn)
    tables = per_row(before, after)
    rows = tables["measurements"]["rows"]
    return {
        "bytes_per_record": tables["measurements"]["bytes_per_row"],
        # The sync writer's storage path alone (staging COPY + INSERT under RLS), one write per minute window.
        "writer_us_per_row": round(writer_cpu / rows * 1e6, 2),
        "postgres_us_per_row": round(pg_cpu / rows * 1e6, 2),
        "vehicles": args.vehicles,
        "channels": CHANNELS,
        "seconds": args.seconds,
        "tables": tables,
    }


async def run(args: argparse.Namespace, owner_dsn: str, workdir: Path) -> dict[str, Any]:
    settings = Settings(
        env="test",
        data_dir=workdir / "data",
        database_url=owner_dsn,
        server_host="127.0.0.1",
        ingest_bind_ephemeral=True,
        unknown_device_policy="register",
        redis_url=None,
        nats_url=None,
        secret_key="bench-storage-secret-key-0123456789",
        api_key="bench-storage-api-key-0123456789",
    )
    db = Database(settings)
    await db.start(migrate_schema=True)
    _version, PgCpu.postmaster = await _server_version(owner_dsn)
    try:
        return {
            "trackers": await trackers_part(db, settings, owner_dsn, args, False, 861_000_000_000_001),
            "trackers_can": await trackers_part(db, settings, owner_dsn, args, True, 862_000_000_000_001),
            "pull_vehicles": await vehicles_part(db, owner_dsn, args),
        }
    finally:
        await db.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trackers", type=int, default=200)
    parser.add_argument("--records", type=int, default=100, help="records per tracker")
    parser.add_argument("--vehicles", type=int, default=20, help="pull vehicles")
    parser.add_argument("--seconds", type=int, default=600, help="1 Hz samples per channel and vehicle")
    parser.add_argument(
        "--window", type=float, default=10.0, help="seconds the trackers send their records in"
    )
    parser.add_argument("--database-url", default=os.environ.get("BENCH_DATABASE_URL"))
    parser.add_argument("--output-dir", type=Path, default=ROOT / "bench" / "results")
    add_quick_argument(parser)
    args = parser.parse_args()
    if args.quick:
        args.trackers, args.records, args.vehicles, args.seconds, args.window = 20, 20, 2, 60, 3.0

    report = BenchReport(
        "storage",
        quick=args.quick,
        results_dir=args.output_dir,
        parameters={
            "trackers": args.trackers,
            "records_per_tracker": args.records,
            "records_per_frame": 1,
            "window_s": args.window,
            "flex": "2.0",
            "pull_vehicles": args.vehicles,
            "channels": CHANNELS,
            "seconds": args.seconds,
            "database": "BENCH_DATABASE_URL" if args.database_url else "embedded",
        },
    )
    workdir = Path(tempfile.mkdtemp(prefix="fleet-bench-storage-"))
    (workdir / "data").mkdir()
    embedded = None
    results: dict[str, Any] = {}
    try:
        owner_dsn = args.database_url
        if owner_dsn is None:
            from fleet.db.embedded import EmbeddedPostgres

            embedded = EmbeddedPostgres(workdir / "pg")
            owner_dsn = embedded.start()
        report.set_postgres_version(owner_dsn)
        results.update(asyncio.run(run(args, owner_dsn, workdir)))
    finally:
        if embedded is not None:
            embedded.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    report.results = results
    stamped, _latest = report.write()
    print(stamped.read_text(), end="")  # what was written, not a second document with its own end time
    return 0


if __name__ == "__main__":
    sys.exit(main())
