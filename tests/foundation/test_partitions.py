"""Monthly partitions: rows of any month are kept, and maintenance gives them partitions of their own."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from fleet.config import Settings
from fleet.db import Database
from fleet.ops.maintenance import run_maintenance


def _month_shift(moment: datetime, months: int) -> datetime:
    month = moment.month - 1 + months
    return moment.replace(year=moment.year + month // 12, month=month % 12 + 1, day=15)


async def _partition_of(
    conn: asyncpg.Connection, table: str, column: str, key: str, value: object
) -> list[str]:
    rows = await conn.fetch(f"SELECT tableoid::regclass::text FROM {table} WHERE {key} = $1", value)
    return [row[0] for row in rows]


async def test_rows_of_any_month_are_kept_and_rehomed(
    db: Database, owner_conn: asyncpg.Connection, test_settings: Settings
) -> None:
    now = datetime.now(UTC)
    times = [
        _month_shift(now, -1),
        now,
        _month_shift(now, 1),
        _month_shift(now, -36),  # three years ago: no partition exists for it
        _month_shift(now, 40),  # far future clock error: kept too
    ]
    vehicle_id = await owner_conn.fetchval(
        "INSERT INTO vehicles (name) VALUES ($1) RETURNING id", f"part-{uuid.uuid4().hex[:8]}"
    )
    device_id = await owner_conn.fetchval(
        "INSERT INTO devices (imei, vehicle_id) VALUES ($1, $2) RETURNING id",
        uuid.uuid4().hex[:15],
        vehicle_id,
    )
    async with db.system() as conn:
        for index, moment in enumerate(times):
            await conn.execute(
                "INSERT INTO measurements (vehicle_id, channel_id, time, value) VALUES ($1, 7, $2, $3)",
                vehicle_id,
                moment,
                float(index),
            )
            await conn.execute(
                """INSERT INTO positions (device_id, vehicle_id, record_index, device_time)
                   VALUES ($1, $2, $3, $4)""",
                device_id,
                vehicle_id,
                index,
                moment,
            )
            await conn.execute(
                "INSERT INTO raw_frames (device_id, vehicle_id, received_at, data, outcome) VALUES ($1, $2, $3, '\\x01', 'ok')",
                device_id,
                vehicle_id,
                moment,
            )
            await conn.execute(
                """INSERT INTO can_data (device_id, vehicle_id, time, signals)
                   VALUES ($1, $2, $3, '[{"name": "rpm", "value": 1, "source": "t"}]')""",
                device_id,
                vehicle_id,
                moment,
            )
    counts_before = {
        table: await owner_conn.fetchval(f"SELECT count(*) FROM {table} WHERE vehicle_id = $1", vehicle_id)
        for table in ("measurements", "positions", "raw_frames", "can_data")
    }
    assert counts_before == dict.fromkeys(counts_before, len(times))

    # Retention is another concern (tested below): keep everything here.
    keep_all = test_settings.model_copy(
        update={f"{kind}_retention_days": 100_000 for kind in ("position", "measurement", "raw_frame")}
    )
    await run_maintenance(db, keep_all)

    for table in ("measurements", "positions", "raw_frames", "can_data"):
        assert await owner_conn.fetchval(
            f"SELECT count(*) FROM {table} WHERE vehicle_id = $1", vehicle_id
        ) == len(times)
        parts = await _partition_of(owner_conn, table, "", "vehicle_id", vehicle_id)
        assert f"{table}_default" not in parts, table
        assert len(set(parts)) == len(times), table
    old_month = _month_shift(now, -36).strftime("%Y%m")
    assert await owner_conn.fetchval("SELECT to_regclass($1) IS NOT NULL", f"measurements_p{old_month}")


async def test_partitions_exist_ahead(
    db: Database, owner_conn: asyncpg.Connection, test_settings: Settings
) -> None:
    await run_maintenance(db, test_settings)
    now = datetime.now(UTC)
    for months in range(3):
        name = _month_shift(now, months).strftime("%Y%m")
        for table in ("measurements", "positions", "raw_frames", "can_data"):
            assert await owner_conn.fetchval("SELECT to_regclass($1) IS NOT NULL", f"{table}_p{name}"), (
                table,
                name,
            )


async def test_retention_drops_whole_old_partitions(
    db: Database, owner_conn: asyncpg.Connection, test_settings: Settings
) -> None:
    old = datetime(2001, 3, 10, tzinfo=UTC)
    async with db.system() as conn:
        await conn.fetchval("SELECT fleet_ensure_partition('raw_frames', $1)", old)
        await conn.execute(
            "INSERT INTO raw_frames (received_at, data, outcome) VALUES ($1, '\\x02', 'ok')", old
        )
    assert await owner_conn.fetchval("SELECT to_regclass('raw_frames_p200103') IS NOT NULL")
    report = await run_maintenance(db, test_settings, now=datetime.now(UTC) + timedelta(days=1))
    assert report.partitions_dropped >= 1
    assert not await owner_conn.fetchval("SELECT to_regclass('raw_frames_p200103') IS NOT NULL")
    # The current month is untouched.
    current = datetime.now(UTC).strftime("%Y%m")
    assert await owner_conn.fetchval("SELECT to_regclass($1) IS NOT NULL", f"raw_frames_p{current}")


async def test_telemetry_partitions_are_vacuumed_gently(owner_conn: asyncpg.Connection) -> None:
    # Migration 0009: insert-triggered autovacuum rewriting fresh pages at full speed stalled ingest commits.
    far = datetime(2091, 3, 15, tzinfo=UTC)  # a month no other test creates: a partition made here and now
    assert await owner_conn.fetchval("SELECT fleet_ensure_partition('positions', $1)", far)
    try:
        rows = await owner_conn.fetch(
            """SELECT c.relname, c.reloptions FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
               WHERE i.inhparent::regclass::text IN ('measurements', 'positions', 'raw_frames', 'can_data')"""
        )
        assert any(row["relname"] == "positions_p209103" for row in rows)
        for row in rows:  # the new one, those made earlier and the default partitions
            assert "autovacuum_vacuum_cost_delay=10" in (row["reloptions"] or []), row["relname"]
    finally:
        await owner_conn.execute("DROP TABLE IF EXISTS positions_p209103")


async def test_partitions_take_appends_only_in_the_system_context(
    owner_conn: asyncpg.Connection, app_dsn: str
) -> None:
    # Migration 0010: the ingest writer COPYs into month partitions; nothing else is opened by it.
    far = datetime(2092, 5, 15, tzinfo=UTC)  # a partition made here and now, by fleet_ensure_partition
    assert await owner_conn.fetchval("SELECT fleet_ensure_partition('positions', $1)", far)
    device = await owner_conn.fetchval(
        "INSERT INTO devices (imei) VALUES ($1) RETURNING id", f"part{uuid.uuid4().hex[:12]}"
    )
    append = (
        "INSERT INTO {table} (id, device_id, record_index, device_time)"
        " VALUES (nextval(pg_get_serial_sequence('positions', 'id')), $1, $2, $3)"
    )
    conn = await asyncpg.connect(app_dsn)
    try:
        for role in ("", "owner"):  # no context, an owner's context: refused by the partition's guard
            with pytest.raises(asyncpg.InsufficientPrivilegeError, match="system context"):
                async with conn.transaction():
                    await conn.execute(
                        "SELECT set_config('app.user_role', $1, true), set_config('app.user_id', '1', true)",
                        role,
                    )
                    await conn.execute(append.format(table="positions_p209205"), device, 1, far)
        for statement in (
            "SELECT count(*) FROM positions_p209205",
            "UPDATE positions_p209205 SET valid = true",
            "DELETE FROM positions_p209205",
            append.format(table="positions_default"),  # the default partition stays closed
        ):
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                async with conn.transaction():
                    await conn.execute("SELECT set_config('app.user_role', 'superuser', true)")
                    await conn.execute(statement, *((device, 1, far) if "$1" in statement else ()))
        async with conn.transaction():  # the system context appends
            await conn.execute("SELECT set_config('app.user_role', 'superuser', true)")
            await conn.execute(append.format(table="positions_p209205"), device, 2, far)
        assert (
            await owner_conn.fetchval("SELECT record_index FROM positions WHERE device_id = $1", device) == 2
        )
    finally:
        await conn.close()
        await owner_conn.execute("DROP TABLE IF EXISTS positions_p209205")
        await owner_conn.execute("DELETE FROM devices WHERE id = $1", device)


async def test_security_check_flags_a_partition_opened_beyond_guarded_appends(
    owner_conn: asyncpg.Connection,
) -> None:
    from fleet.observability.security import check_database

    def partition_findings(findings: list) -> list:
        return [f for f in findings if f.area == "rls" and "partition" in f.detail]

    (finding,) = partition_findings(await check_database(owner_conn))
    assert finding.status == "ok", finding.detail
    far = datetime(2093, 7, 15, tzinfo=UTC)
    assert await owner_conn.fetchval("SELECT fleet_ensure_partition('raw_frames', $1)", far)
    try:
        await owner_conn.execute("ALTER TABLE raw_frames_p209307 DISABLE TRIGGER append_guard")
        (finding,) = partition_findings(await check_database(owner_conn))
        assert finding.status == "fail" and "raw_frames_p209307" in finding.detail
    finally:
        await owner_conn.execute("DROP TABLE IF EXISTS raw_frames_p209307")
