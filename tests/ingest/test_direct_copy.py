"""Batches COPYed straight into the month's partitions (migration 0010), and the staging path behind them."""

from __future__ import annotations

from datetime import UTC, datetime

import asyncpg
import pytest

from fleet.db import Database
from fleet.db.database import encode_timestamptz
from fleet.db.queries.ingest import BatchOutcome, partition_name, store_batch, store_batch_direct
from fleet.ingest import IngestService
from fleet.protocol.navtelecom import ack_archive
from fleet.protocol.rows import CanRow, PositionRow, RawFrameRow

from .conftest import StartIngest, Tracker, archive_frame, positions_of, unique_imei, wait_for

JANUARY = 1_767_225_600  # 2026-01-01 UTC, the month of the test records


def _partitions(at: float) -> dict[str, str]:
    moment = datetime.fromtimestamp(at, UTC)
    return {
        table: partition_name(table, moment.year, moment.month)
        for table in ("positions", "can_data", "raw_frames")
    }


def _position(device_id: int, index: int, *, lat: float | None = 55.75) -> PositionRow:
    time = JANUARY + index + 0.125  # a fraction: times must match what to_timestamp() makes of them
    return PositionRow(
        device_id,
        index,
        0x1250,
        time,
        time,
        True,
        lat,
        37.61 if lat is not None else None,
        150.0,
        42.5,
        90.0,
        9,
        0.9,
        '{"power_v": 12.5}',
    )


async def _device(owner_conn: asyncpg.Connection, *, vehicle: bool = True) -> tuple[int, int | None]:
    vehicle_id = (
        await owner_conn.fetchval("INSERT INTO vehicles (name) VALUES ($1) RETURNING id", unique_imei())
        if vehicle
        else None
    )
    device_id = await owner_conn.fetchval(
        "INSERT INTO devices (imei, vehicle_id) VALUES ($1, $2) RETURNING id", unique_imei(), vehicle_id
    )
    return device_id, vehicle_id


async def _ensure_january(db: Database) -> None:
    async with db.system() as conn:
        for table in ("positions", "can_data", "raw_frames"):
            await conn.fetchval(
                "SELECT fleet_ensure_partition($1, $2)", table, datetime(2026, 1, 15, tzinfo=UTC)
            )


async def test_direct_batch_links_can_readings_and_tracks_the_last_position(
    db: Database, owner_conn: asyncpg.Connection
) -> None:
    await db.open_writer_pool(2)
    await _ensure_january(db)
    device_id, vehicle_id = await _device(owner_conn)
    gone_id, _ = await _device(owner_conn)
    positions = [_position(device_id, index) for index in range(1, 6)]
    positions.append(_position(device_id, 6, lat=None))  # the newest has no fix: the map keeps index 5
    positions.append(_position(gone_id, 1))
    can = [
        CanRow(
            device_id, 2, positions[1].device_time, "", '[{"name": "rpm", "value": 900.0, "source": "j1939"}]'
        )
    ]
    raw = [
        RawFrameRow(
            device_id,
            datetime.fromtimestamp(JANUARY + 60, UTC),
            "navtelecom",
            "A",
            "127.0.0.1:1",
            b"\x01",
            "ok",
            None,
        )
    ]
    await owner_conn.execute("DELETE FROM devices WHERE id = $1", gone_id)  # deleted before its batch commits
    async with db.writer() as conn:
        outcome = await store_batch_direct(
            conn, positions=positions, raw_frames=raw, can=can, partitions=_partitions(JANUARY)
        )
    assert outcome.positions_stored == 6 and outcome.can_stored == 1
    (summary,) = outcome.summaries
    assert (summary.device_id, summary.vehicle_id, summary.stored) == (device_id, vehicle_id, 6)
    assert summary.last_time == datetime.fromtimestamp(JANUARY + 6.125, UTC)

    stored = await owner_conn.fetch(
        "SELECT id, record_index, vehicle_id, device_time, fix_time, attributes FROM positions"
        " WHERE device_id = $1 ORDER BY record_index",
        device_id,
    )
    assert [row["record_index"] for row in stored] == [1, 2, 3, 4, 5, 6]
    assert {row["vehicle_id"] for row in stored} == {vehicle_id}
    assert stored[0]["device_time"] == await owner_conn.fetchval(
        "SELECT to_timestamp($1::float8)", JANUARY + 1.125
    )
    assert stored[0]["attributes"] == '{"power_v": 12.5}'
    reading = await owner_conn.fetchrow(
        "SELECT position_id, vehicle_id, time, signals->0->>'name' AS name FROM can_data WHERE device_id = $1",
        device_id,
    )
    assert reading["position_id"] == stored[1]["id"] and reading["vehicle_id"] == vehicle_id
    assert reading["time"] == stored[1]["device_time"] and reading["name"] == "rpm"
    assert (
        await owner_conn.fetchval("SELECT vehicle_id FROM raw_frames WHERE device_id = $1", device_id)
        == vehicle_id
    )
    last = await owner_conn.fetchrow(
        "SELECT time, latitude FROM vehicle_last_positions WHERE vehicle_id = $1", vehicle_id
    )
    assert last["time"] == stored[4]["device_time"] and last["latitude"] == 55.75
    assert await owner_conn.fetchval("SELECT count(*) FROM positions WHERE device_id = $1", gone_id) == 0

    # The same records again: the COPY refuses them, and nothing of the attempt stays.
    with pytest.raises(asyncpg.UniqueViolationError):
        async with db.writer() as conn:
            await store_batch_direct(
                conn, positions=positions[:6], raw_frames=raw, can=[], partitions=_partitions(JANUARY)
            )
    assert await owner_conn.fetchval("SELECT count(*) FROM raw_frames WHERE device_id = $1", device_id) == 1
    # The staging path (the writer's fallback) recognises them, on the writer's own connections too.
    async with db.writer() as conn:
        again: BatchOutcome = await store_batch(conn, positions=positions[:6], raw_frames=raw, can=can)
    assert again.positions_stored == 0 and again.can_stored == 0
    assert await owner_conn.fetchval("SELECT count(*) FROM positions WHERE device_id = $1", device_id) == 6


async def test_writer_connections_encode_times_as_to_timestamp_does(db: Database) -> None:
    await db.open_writer_pool(2)
    moments = [JANUARY + 0.1, JANUARY + 0.123456, 1_700_000_000.0000005, JANUARY - 0.5, 0.0]
    async with db.writer() as conn:
        for moment in moments:
            assert await conn.fetchval("SELECT to_timestamp($1::float8) = $2::timestamptz", moment, moment)
        aware = datetime(2026, 1, 1, 12, 30, 15, 250_000, tzinfo=UTC)
        assert await conn.fetchval("SELECT $1::timestamptz", aware) == aware
        assert await conn.fetchval("SELECT 'infinity'::timestamptz") == datetime.max.replace(tzinfo=UTC)
    assert encode_timestamptz(aware) == encode_timestamptz(aware.timestamp())


async def test_service_copies_batches_and_falls_back_for_retransmissions(
    db: Database, start_ingest: StartIngest
) -> None:
    service = await start_ingest()
    imei = unique_imei()
    tracker = await Tracker.connect(service.ports["navtelecom"])
    await tracker.login(imei)
    await tracker.send(archive_frame(1, 10))
    assert await tracker.read(4) == ack_archive(10)
    await wait_for(lambda: _has(service, "direct"))
    await tracker.send(archive_frame(1, 10))  # the same records again (the device missed the ACK)
    assert await tracker.read(4) == ack_archive(10)
    await tracker.send(archive_frame(11, 5))  # new records right after: staging path, for a while
    assert await tracker.read(4) == ack_archive(5)
    await tracker.close()
    assert service.stats.direct_fallbacks["duplicate"] == 1
    assert service.stats.duplicates == 10
    assert service.stats.batch_paths["staging"] >= 2
    async with db.system() as conn:
        assert [row["record_index"] for row in await positions_of(conn, imei)] == list(range(1, 16))


async def _has(service: IngestService, mode: str) -> bool:
    return bool(service.stats.batch_paths[mode])


async def test_direct_copy_can_be_turned_off(db: Database, start_ingest: StartIngest) -> None:
    service = await start_ingest(ingest_direct_copy=False)
    imei = unique_imei()
    tracker = await Tracker.connect(service.ports["navtelecom"])
    await tracker.login(imei)
    for first in (1, 11):
        await tracker.send(archive_frame(first, 10))
        assert await tracker.read(4) == ack_archive(10)
    await tracker.close()
    assert service.stats.batch_paths["direct"] == 0 and service.stats.batch_paths["staging"] >= 2
    async with db.system() as conn:
        assert len(await positions_of(conn, imei)) == 20
