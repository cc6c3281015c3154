#!/usr/bin/env python3
"""Where PostgreSQL's time goes in one ingest batch: the writer's batch, variants of it, CPU per record.

    .venv/bin/python bench/profile_ingest_batch.py [--batches 20] [--explain]

Builds realistic batches (FLEX 2.0, 29-field mask, 10 records per frame, a quarter of the devices with CAN
values, one raw frame per ten records), writes them with ``fleet.db.queries.ingest.store_batch`` as the
ingest role's writer does (``fleet_app``, system context, one transaction per batch), and reads the backend's
CPU time from /proc. Variants drop one part at a time, so each part's share is visible. ``--explain``
prints ``EXPLAIN (ANALYZE, BUFFERS)`` of one batch statement. Not a throughput figure: a profile.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import secrets
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import BenchReport  # noqa: E402
from fleet.protocol.rows import RawFrameRow  # noqa: E402

VARIANTS = {
    "full": "the writer's batch as it is: staging COPY, one INSERT ... ON CONFLICT statement, one can_data "
    "row per record with CAN values",
    "no_can": "the same batch without its CAN readings",
    "no_raw": "the same batch without its raw frames",
    "positions_only": "positions alone",
    "no_trigger": "full, with the vehicle_last_positions trigger disabled",
    "compact_can": "no can_data rows; each position carries its CAN signals as a JSON array in its jsonb",
    "direct": "the writer's direct path (fleet.db.queries.ingest.store_batch_direct): ids, vehicles and the fleet "
    "map in one statement, then binary COPY into this month's partitions as fleet_app",
    "plain_insert": "full, with plain INSERTs (no ON CONFLICT) for positions and linked CAN readings",
    "direct_copy": "binary COPY straight into the month's partitions as the owner: no staging, no dedup, "
    "no trigger, CAN readings unlinked",
}
FRAMES_PER_BATCH = int(os.environ.get("PROFILE_FRAMES_PER_BATCH", "500"))
RECORDS_PER_FRAME = 10
DEVICES = 1000


def backend_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def build_batches(device_ids: list[int], batches: int) -> list[dict[str, Any]]:
    from fleet.protocol.navtelecom import NavtelecomSession, RowBuilder, Telemetry, archive, handshake
    from fleet.protocol.navtelecom.simulation import profile as flex_profile

    profile = flex_profile("2.0-can")
    plain, _, _ = profile.template(random.Random(1), False)
    with_can, _, _ = profile.template(random.Random(2), True)
    session = NavtelecomSession()
    session.feed(handshake("100000000000001"))
    session.feed(profile.negotiation)
    builder = RowBuilder()
    base = int(time.time()) - 3600
    out = []
    counters = dict.fromkeys(device_ids, 0)
    for number in range(batches):
        positions: list[Any] = []
        can: list[Any] = []
        raw: list[RawFrameRow] = []
        for f in range(FRAMES_PER_BATCH):
            device = device_ids[(number * FRAMES_PER_BATCH + f) % len(device_ids)]
            template = with_can if device % 4 == 0 else plain
            records = []
            for _ in range(RECORDS_PER_FRAME):
                counters[device] += 1
                record = bytearray(template)
                struct.pack_into("<I", record, profile.offsets[1], counters[device])
                struct.pack_into("<I", record, profile.offsets[3], base + counters[device])
                struct.pack_into("<I", record, profile.offsets[9], base + counters[device])
                records.append(bytes(record))
            frame = archive(records)
            (telemetry,) = session.feed(frame)
            assert isinstance(telemetry, Telemetry)
            now = datetime.now(UTC)
            rows = builder.telemetry(device, telemetry, now)
            positions.extend(rows.positions)
            can.extend(rows.can)
            raw.append(RawFrameRow(device, now, "navtelecom", "A", "127.0.0.1:1", frame, "ok", None))
        out.append({"positions": positions, "can": can, "raw": raw})
    return out


async def run(
    owner_dsn: str,
    app_dsn: str,
    batches: int,
    explain: bool,
    variants: list[str],
    measured: dict[str, list[float]],
) -> dict[str, Any]:
    import asyncpg

    from fleet.db.queries import ingest

    owner = await asyncpg.connect(owner_dsn)
    ids = [
        r["id"]
        for r in await owner.fetch(
            "INSERT INTO devices (imei) SELECT 'p' || g || $1 FROM generate_series(1, $2) g RETURNING id",
            secrets.token_hex(3),
            DEVICES,
        )
    ]
    vehicles = await owner.fetch(
        "INSERT INTO vehicles (name) SELECT 'v' || g FROM generate_series(1, $1) g RETURNING id", DEVICES
    )
    await owner.executemany(
        "UPDATE devices SET vehicle_id = $2 WHERE id = $1",
        [(d, v["id"]) for d, v in zip(ids, vehicles, strict=True)],
    )
    vehicles_of = {d: v["id"] for d, v in zip(ids, vehicles, strict=True)}
    conn = await asyncpg.connect(app_dsn)
    pid = conn.get_server_pid()
    print("backend pid", pid, flush=True)
    await conn.execute("SET app.user_role = 'superuser'")
    from fleet.db.database import use_writer_codecs

    await use_writer_codecs(conn)  # as the writer's own pool: times from epoch seconds
    month = datetime.now(UTC)
    partitions = {
        t: ingest.partition_name(t, month.year, month.month) for t in ("positions", "can_data", "raw_frames")
    }
    data = build_batches(ids, batches * (len(variants) + 1))
    shape = {
        "positions": len(data[0]["positions"]),
        "can_rows": len(data[0]["can"]),
        "can_signals": sum(row.signals.count('"name"') for row in data[0]["can"]),
        "raw_frames": len(data[0]["raw"]),
    }
    print(f"batch: {shape}")
    used = iter(data)
    # Warm up (staging tables, caches, partitions of this month).
    async with conn.transaction():
        await ingest.store_batch(conn, **_kw(next(used)))
    for variant in variants:
        if variant == "no_trigger":
            await owner.execute("ALTER TABLE positions DISABLE TRIGGER positions_last_on_insert")
        if variant.startswith("set:"):  # a session setting of the writer's connection, kept from here on
            await conn.execute("SET " + variant[4:])
        if variant.startswith("ddl:"):  # a schema change kept for the variants after it
            await owner.execute(variant[4:].replace(";", ","))
        if variant == "direct_copy":
            value = await direct_copy(owner, [next(used) for _ in range(batches)], vehicles_of)
            measured.setdefault(variant, []).append(value)
            continue
        cpu0, t0, records, client0 = backend_cpu(pid), time.perf_counter(), 0, time.process_time()
        # "direct+no_can": the direct path with the batch trimmed as the variant after the "+" trims it.
        path, _, trim = variant.partition("+")
        trim = trim or variant
        for _ in range(batches):
            batch = next(used)
            if trim == "no_can":
                batch = {**batch, "can": []}
            if trim == "no_raw":
                batch = {**batch, "raw": []}
            if trim == "positions_only":
                batch = {**batch, "can": [], "raw": []}
            if variant == "compact_can":
                batch = compact(batch)
            async with conn.transaction():
                if variant == "plain_insert":
                    await plain_insert(conn, batch)
                elif path == "direct":
                    await ingest.store_batch_direct(
                        conn,
                        positions=batch["positions"],
                        can=batch["can"],
                        raw_frames=batch["raw"],
                        partitions=partitions,
                    )
                else:
                    await ingest.store_batch(conn, staging_ready=True, **_kw(batch))
            records += len(batch["positions"])
        cpu = backend_cpu(pid) - cpu0
        wall = time.perf_counter() - t0
        client = time.process_time() - client0
        print(
            f"{variant:16s} backend CPU {cpu / records * 1e6:6.1f} us/record, wall {wall / records * 1e6:6.1f}"
            f" us/record, client CPU {client / records * 1e6:5.1f} us/record"
        )
        measured.setdefault(variant, []).append(round(cpu / records * 1e6, 2))
        measured.setdefault(f"{variant}_client", []).append(round(client / records * 1e6, 2))
        if variant == "no_trigger":
            await owner.execute("ALTER TABLE positions ENABLE TRIGGER positions_last_on_insert")
    if explain:
        batch = next(used)
        async with conn.transaction():
            kw = _kw(batch)
            await ingest.stage(conn, ingest.STAGE_POSITIONS, ingest.POSITION_COLUMNS, kw["positions"])
            await ingest.stage(conn, ingest.STAGE_RAW, ingest.RAW_COLUMNS, kw["raw_frames"])
            await ingest.stage(conn, ingest.STAGE_CAN, ingest.CAN_COLUMNS, kw["can"])
            statement = ingest.batch_statement(True, True, False, False, True, False)
            plan = await conn.fetch(
                "EXPLAIN (ANALYZE, BUFFERS) " + statement, list({r.device_id for r in kw["positions"]})
            )
            print("\n".join(r[0] for r in plan))
    await conn.close()
    await owner.close()
    return shape


async def direct_copy(owner: Any, batches: list[dict[str, Any]], vehicles_of: dict[int, int]) -> float:
    """Binary COPY of each batch straight into this month's partitions (no staging, no ON CONFLICT, no
    trigger: a partition does not fire its parent's statement triggers), as the owner.

    What the "COPY straight into the month's partition" idea would cost PostgreSQL at best. CAN rows go
    unlinked (position_id NULL: their positions' ids are not known before the COPY).
    """
    month = datetime.now(UTC).strftime("%Y%m")
    pid = owner.get_server_pid()
    # A partition created with LIKE has no identity of its own (PostgreSQL 16): ids come from the client here,
    # from a range of their own (a real implementation would reserve them from the parent's sequence).
    ids = iter(range(10**12, 10**13))
    cpu0, t0, records = backend_cpu(pid), time.perf_counter(), 0
    for batch in batches:
        positions = [
            (
                next(ids),
                r.device_id,
                vehicles_of.get(r.device_id),
                r.record_index,
                r.event_code,
                datetime.fromtimestamp(r.device_time, UTC),
                None if r.fix_time is None else datetime.fromtimestamp(r.fix_time, UTC),
                r.valid,
                r.latitude,
                r.longitude,
                r.altitude,
                r.speed,
                r.course,
                r.satellites,
                r.hdop,
                r.attributes,
            )
            for r in batch["positions"]
        ]
        can = [
            (
                next(ids),
                c.device_id,
                vehicles_of.get(c.device_id),
                datetime.fromtimestamp(c.time, UTC),
                -1 if c.record_index is None else c.record_index,
                c.frame,
                c.signals,
            )
            for c in batch["can"]
        ]
        raw = [(next(ids), f.device_id, vehicles_of.get(f.device_id), *f[1:8]) for f in batch["raw"]]
        async with owner.transaction():
            await owner.copy_records_to_table(
                f"positions_p{month}",
                records=positions,
                columns=[
                    "id",
                    "device_id",
                    "vehicle_id",
                    "record_index",
                    "event_code",
                    "device_time",
                    "fix_time",
                    "valid",
                    "latitude",
                    "longitude",
                    "altitude",
                    "speed",
                    "course",
                    "satellites",
                    "hdop",
                    "attributes",
                ],
            )
            await owner.copy_records_to_table(
                f"can_data_p{month}",
                records=can,
                columns=["id", "device_id", "vehicle_id", "time", "record_index", "frame", "signals"],
            )
            await owner.copy_records_to_table(
                f"raw_frames_p{month}",
                records=raw,
                columns=[
                    "id",
                    "device_id",
                    "vehicle_id",
                    "received_at",
                    "protocol",
                    "frame_type",
                    "peer",
                    "data",
                    "outcome",
                    "error",
                ],
            )
        records += len(positions)
    cpu = backend_cpu(pid) - cpu0
    wall = time.perf_counter() - t0
    print(
        f"{'direct_copy':16s} backend CPU {cpu / records * 1e6:6.1f} us/record, wall {wall / records * 1e6:6.1f} us/record"
    )
    return round(cpu / records * 1e6, 2)


async def plain_insert(conn: Any, batch: dict[str, Any]) -> None:
    """The writer's batch statement without its ON CONFLICT clauses (what a batch with no retransmission
    could cost when it need not be checked for duplicates)."""
    from fleet.db.queries import ingest

    kw = _kw(batch)
    await ingest.stage(conn, ingest.STAGE_POSITIONS, ingest.POSITION_COLUMNS, kw["positions"])
    await ingest.stage(conn, ingest.STAGE_RAW, ingest.RAW_COLUMNS, kw["raw_frames"])
    await ingest.stage(conn, ingest.STAGE_CAN, ingest.CAN_COLUMNS, kw["can"])
    statement = ingest.batch_statement(True, bool(kw["can"]), False, False, True, False)
    statement = statement.replace(" ON CONFLICT (device_id, record_index, device_time) DO NOTHING", "")
    statement = statement.replace(ingest._CAN_NOTHING, "")
    await conn.fetch(statement, list({r.device_id for r in kw["positions"]}))


def compact(batch: dict[str, Any]) -> dict[str, Any]:
    """The batch with each record's CAN reading inside its position's row, and no can_data rows.

    What "CAN signals as a compact column of the position" would cost PostgreSQL: the signals travel in
    the position's jsonb (here inside ``attributes``, under ``can``) instead of a ``can_data`` row.
    """
    signals = {(row.device_id, row.record_index): row.signals for row in batch["can"]}
    positions = []
    for row in batch["positions"]:
        found = signals.get((row.device_id, row.record_index))
        if found:
            row = row._replace(attributes=row.attributes[:-1] + ',"can":' + found + "}")
        positions.append(row)
    return {**batch, "positions": positions, "can": []}


def _kw(batch: dict[str, Any]) -> dict[str, Any]:
    return {"positions": batch["positions"], "can": batch["can"], "raw_frames": batch["raw"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--explain", action="store_true")
    parser.add_argument("--output", action="store_true", help="write bench/results/ingest_profile*.json")
    parser.add_argument(
        "--variants", default="full,no_can,no_raw,positions_only,no_trigger,full", help="comma-separated"
    )
    args = parser.parse_args()
    from fleet.db.embedded import EmbeddedPostgres

    workdir = Path(tempfile.mkdtemp(prefix="fleet-profile-batch-"))
    embedded = EmbeddedPostgres(workdir / "pg")
    owner_dsn = embedded.start()
    password = secrets.token_urlsafe(16)
    try:
        subprocess.run(
            [sys.executable, "-m", "fleet", "db", "upgrade"],
            env={
                **os.environ,
                "DATABASE_URL": owner_dsn,
                "DB_APP_PASSWORD": password,
                "DATA_DIR": str(workdir),
            },
            check=True,
            capture_output=True,
        )
        from fleet.config import with_user
        from fleet.db.database import APP_ROLE

        app_dsn = with_user(owner_dsn, APP_ROLE, password)
        measured: dict[str, list[float]] = {}
        report = (
            BenchReport(
                "ingest_profile",
                parameters={
                    "batches_per_variant": args.batches,
                    "variants": args.variants,
                    "flex": "2.0-can (29 fields), a quarter of the devices with CAN values",
                    "unit": "CPU microseconds of the PostgreSQL backend per position record",
                },
            )
            if args.output
            else None
        )
        shape = asyncio.run(
            run(owner_dsn, app_dsn, args.batches, args.explain, args.variants.split(","), measured)
        )
        if report is not None:
            report.parameters["batch"] = shape
            report.set_postgres_version(owner_dsn)
            for variant, values in measured.items():
                report.add_samples(f"{variant}_postgres_us_per_record", values)
            report.results = {"variants": VARIANTS}
            report.write()
    finally:
        embedded.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
