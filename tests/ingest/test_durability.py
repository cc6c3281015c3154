"""Nothing is acknowledged before it is committed; nothing retransmitted is stored twice."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest

from fleet.db import Database
from fleet.db.queries.ingest import POSITION_COLUMNS
from fleet.ingest.writer import COMMITTED, FAILED, Pending
from fleet.protocol.navtelecom import ack_archive
from fleet.protocol.rows import PositionRow

from .conftest import Driver, StartIngest, Tracker, archive_frame, positions_of, unique_imei, wait_for


async def count_positions(db: Database, imei: str) -> int:
    async with db.system() as conn:
        return len(await positions_of(conn, imei))


async def test_no_ack_while_positions_locked_then_stored_once(
    proto: Driver, db: Database, owner_conn: asyncpg.Connection, start_ingest: StartIngest
) -> None:
    service = await start_ingest()
    imei = unique_imei()
    tracker = await Tracker.connect(proto.port(service))
    await proto.login(tracker, imei)
    frame = proto.frame(1, 5)

    # A committed frame first, so the device row and partitions exist; then block the table.
    await tracker.send(proto.frame(100, 1))
    assert await tracker.read(4) == proto.ack(1)
    transaction = owner_conn.transaction()
    await transaction.start()
    try:
        await owner_conn.execute("LOCK TABLE positions IN ACCESS EXCLUSIVE MODE")
        await tracker.send(frame)
        assert await tracker.nothing_within(1.5), "ACK sent while the commit could not happen"
        # The device gives up waiting and retransmits on a new connection - still nothing acknowledged.
        await tracker.close()
        tracker = await Tracker.connect(proto.port(service))
        await proto.login(tracker, imei)
        await tracker.send(frame)
        assert await tracker.nothing_within(0.5)
    finally:
        await transaction.rollback()
    assert await tracker.read(4, within=10) == proto.ack(5)
    await tracker.close()
    # The abandoned connection's batch may commit after the second copy's: let both finish.
    assert await service.writer.wait_idle(10)
    assert await count_positions(db, imei) == 6  # both copies committed, each record once
    assert service.stats.duplicates >= 5


async def test_retransmission_after_ack_is_recognised(
    proto: Driver, db: Database, start_ingest: StartIngest
) -> None:
    service = await start_ingest()
    imei = unique_imei()
    tracker = await Tracker.connect(proto.port(service))
    await proto.login(tracker, imei)
    frame = proto.frame(1, 10)
    for _ in range(3):
        await tracker.send(frame)
        assert await tracker.read(4) == proto.ack(10)
    await tracker.close()
    assert await count_positions(db, imei) == 10
    async with db.system() as conn:
        raw = await conn.fetchval(
            """SELECT count(*) FROM raw_frames r JOIN devices d ON d.id = r.device_id
               WHERE d.imei = $1 AND r.frame_type = $2""",
            imei,
            "A" if proto.name == "navtelecom" else "codec8e",
        )
    assert raw == 3  # every reception is kept as a raw frame


async def test_acks_follow_arrival_order_per_connection(proto: Driver, start_ingest: StartIngest) -> None:
    """A pipelining client gets its ACKs in the order it sent the frames, each after its commit."""
    service = await start_ingest()
    tracker = await Tracker.connect(proto.port(service))
    await proto.login(tracker, unique_imei())
    counts = [3, 1, 7, 2, 5]
    first = 1
    for count in counts:
        await tracker.send(proto.frame(first, count))
        first += count
    for count in counts:
        assert await tracker.read(4) == proto.ack(count)
    await tracker.close()


async def test_failed_commit_is_retried_and_acknowledged_after_success(
    proto: Driver, db: Database, owner_conn: asyncpg.Connection, start_ingest: StartIngest
) -> None:
    """The writer's connection dies mid-batch: no ACK, the failure is counted, the retry commits."""
    service = await start_ingest()
    imei = unique_imei()
    tracker = await Tracker.connect(proto.port(service))
    await proto.login(tracker, imei)
    await tracker.send(proto.frame(1, 1))
    assert await tracker.read(4) == proto.ack(1)
    failures_before = service.stats.batch_failures["retryable"]
    transaction = owner_conn.transaction()
    await transaction.start()
    try:
        await owner_conn.execute("LOCK TABLE positions IN ACCESS EXCLUSIVE MODE")
        await tracker.send(proto.frame(2, 3))

        async def writer_waiting() -> bool:
            # Statistics views are snapshotted per transaction: look again each time.
            await owner_conn.execute("SELECT pg_stat_clear_snapshot()")
            return bool(
                await owner_conn.fetchval(
                    """SELECT count(*) FROM pg_stat_activity
                       WHERE usename = 'fleet_app' AND wait_event_type = 'Lock' AND query LIKE '%positions%'"""
                )
            )

        await wait_for(writer_waiting)
        # Kill the writer's session in the middle of its transaction.
        await owner_conn.execute(
            """SELECT pg_terminate_backend(pid) FROM pg_stat_activity
               WHERE usename = 'fleet_app' AND wait_event_type = 'Lock' AND query LIKE '%positions%'"""
        )
        assert await tracker.nothing_within(1.0)
    finally:
        await transaction.rollback()
    assert await tracker.read(4, within=15) == proto.ack(3)
    await tracker.close()
    assert service.stats.batch_failures["retryable"] > failures_before
    assert await count_positions(db, imei) == 4


async def test_unstorable_frame_is_isolated_and_not_acknowledged(
    db: Database, start_ingest: StartIngest
) -> None:
    """A row PostgreSQL refuses fails only its own frame: the rest of the batch commits and is ACKed."""
    service = await start_ingest(ingest_batch_window_ms=200.0)
    imei = unique_imei()
    tracker = await Tracker.connect(service.ports["navtelecom"])
    await tracker.login(imei)
    await tracker.send(archive_frame(1, 1))
    assert await tracker.read(4) == ack_archive(1)
    device = service.registry.cached(imei)
    assert device is not None and device != "refused"
    loop = asyncio.get_running_loop()
    now = datetime.now(UTC).timestamp()  # rows stage times as epoch seconds

    class Sink:
        flushed = 0

        def flush_outbox(self) -> None:
            self.flushed += 1

    def row(index: int, latitude: float) -> PositionRow:
        values: dict[str, Any] = dict.fromkeys(POSITION_COLUMNS)
        values.update(
            device_id=device.id,  # type: ignore[union-attr]
            record_index=index,
            device_time=now,
            valid=True,
            latitude=latitude,
            longitude=10.0,
            attributes="{}",
        )
        return PositionRow(**values)

    sink = Sink()
    good = [Pending(sink, b"", loop.time(), positions=[row(1000 + i, 50.0)], records=1) for i in range(3)]
    # Latitude 91 violates the table's CHECK: the database refuses the whole statement.
    poison = Pending(sink, b"", loop.time(), positions=[row(2000, 91.0)], records=1)
    for item in [good[0], poison, *good[1:]]:
        service.writer.submit(item)
    await wait_for(lambda: _settled([*good, poison]))
    assert [item.state for item in good] == [COMMITTED] * 3
    assert poison.state == FAILED
    assert service.stats.batch_failures["data"] >= 1
    await tracker.close()


async def _settled(items: list[Pending]) -> bool:
    return all(item.state != 0 for item in items)


@pytest.mark.parametrize("records", [1, 255])
async def test_array_sizes(proto: Driver, db: Database, start_ingest: StartIngest, records: int) -> None:
    service = await start_ingest()
    imei = unique_imei()
    tracker = await Tracker.connect(proto.port(service))
    await proto.login(tracker, imei)
    await tracker.send(proto.frame(1, records))
    assert await tracker.read(4) == proto.ack(records)
    await tracker.close()
    assert await count_positions(db, imei) == records


async def test_logins_proceed_while_backpressure_holds_data(
    proto: Driver, db: Database, owner_conn: asyncpg.Connection, start_ingest: StartIngest
) -> None:
    """With the writer over its high-water mark, new devices still log in; their data waits."""
    service = await start_ingest(ingest_queue_high_water=50, ingest_queue_low_water=10)
    busy = await Tracker.connect(proto.port(service))
    await proto.login(busy, unique_imei())
    await busy.send(proto.frame(1, 1))
    assert await busy.read(4) == proto.ack(1)
    transaction = owner_conn.transaction()
    await transaction.start()
    try:
        await owner_conn.execute("LOCK TABLE positions IN ACCESS EXCLUSIVE MODE")
        # One frame per writer (both then block on the lock), then enough to queue past high-water.
        for first in (10, 20):
            await busy.send(proto.frame(first, 10))
            await asyncio.sleep(0.2)
        for first in range(30, 110, 10):
            await busy.send(proto.frame(first, 10))

        async def pressure() -> bool:
            return service.writer.paused

        await wait_for(pressure)
        newcomer = await Tracker.connect(proto.port(service))
        await proto.login(newcomer, unique_imei())  # handshake and negotiation answered under backpressure
        await newcomer.send(proto.frame(1, 2))
        assert await newcomer.nothing_within(0.5)
    finally:
        await transaction.rollback()
    assert await newcomer.read(4, within=15) == proto.ack(2)
    for _ in range(10):
        assert await busy.read(4, within=15) == proto.ack(10)
    assert service.stats.backpressure_episodes >= 1
    await newcomer.close()
    await busy.close()
