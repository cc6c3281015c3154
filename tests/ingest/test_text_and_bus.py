"""The seed-000 text dialect end to end, the live bus (in-process, PostgreSQL, Redis) and ingest stats."""

from __future__ import annotations

import asyncio
import os
import time
import uuid

import pytest
from prometheus_client import REGISTRY

from fleet.config import Settings
from fleet.db import Database
from fleet.ops.bus import InProcessBus, LiveBus, NatsBus, PostgresBus, RedisBus, create_bus, pack_messages
from fleet.protocol.navtelecom import ack_archive

from .conftest import StartIngest, Tracker, archive_frame, unique_imei, wait_for


async def test_text_dialect_frames(db: Database, start_ingest: StartIngest) -> None:
    service = await start_ingest()
    imei = unique_imei()
    now = int(time.time())
    tracker = await Tracker.connect(service.ports["navtelecom"])
    frames = [
        (f"~A{imei},{now},55.751244,37.618423,42.5,180,9,0.9~", f"~AACK,{imei}~"),
        (f"~X{imei},0CF00400,FF,FF,FF,68,13,FF,FF,FF~", f"~XACK,{imei}~"),
        (f"~T{imei},7E8,04,41,0C,1A,F8,00,00,00~", f"~TACK,{imei}~"),
        (f"~T{imei},123,01,02~", f"~TACK,{imei}~"),
        (f"~E{imei},7,{now},door opened, rear~", f"~EACK,{imei}~"),
    ]
    for frame, ack in frames:
        await tracker.send(frame.encode())
        assert (await tracker.read(len(ack))).decode() == ack
    await tracker.send(f"~A{imei},{now},95.0,37.6,1,1,1,1~".encode())  # latitude out of range: rejected
    assert await tracker.nothing_within(0.3)
    await tracker.close()

    async with db.system() as conn:
        position = await conn.fetchrow(
            "SELECT p.* FROM positions p JOIN devices d ON d.id = p.device_id WHERE d.imei = $1", imei
        )
        can = {
            (r["name"], r["source"]): r
            for r in await conn.fetch(
                """SELECT s.*, c.frame, c.position_id, c.record_index
                   FROM can_data c JOIN devices d ON d.id = c.device_id
                   CROSS JOIN LATERAL jsonb_to_recordset(c.signals)
                       AS s(name text, value float8, value_text text, unit text, source text)
                   WHERE d.imei = $1""",
                imei,
            )
        }
        event = await conn.fetchrow(
            "SELECT e.* FROM events e JOIN devices d ON d.id = e.device_id WHERE d.imei = $1", imei
        )
        protocols = {
            r["protocol"]
            for r in await conn.fetch(
                "SELECT r.protocol FROM raw_frames r JOIN devices d ON d.id = r.device_id WHERE d.imei = $1",
                imei,
            )
        }
    assert position["latitude"] == pytest.approx(55.751244) and position["longitude"] == pytest.approx(
        37.618423
    )
    assert (
        position["speed"] == pytest.approx(42.5)
        and position["satellites"] == 9
        and position["hdop"] == pytest.approx(0.9)
    )
    assert position["record_index"] == -1
    assert can[("engine_speed", "J1939:PGN61444:SA0")]["value"] == 621.0
    assert can[("engine_speed", "OBD2:PID0x0C")]["value"] == 1726.0
    assert can[("raw", "CAN:0x123")]["value_text"] == "0102"
    # Frames of their own: no position, each reading named by its CAN identifier.
    assert all(row["position_id"] is None and row["record_index"] == -1 for row in can.values())
    assert can[("raw", "CAN:0x123")]["frame"] == "0x123"
    assert (
        event["event_code"] == 7
        and event["description"] == "door opened, rear"
        and event["event_type"] == "text"
    )
    assert protocols == {"navtelecom_text"}


async def test_text_dialect_can_be_disabled(start_ingest: StartIngest) -> None:
    service = await start_ingest(text_dialect_enabled=False)
    tracker = await Tracker.connect(service.ports["navtelecom"])
    await tracker.send(f"~A{unique_imei()},{int(time.time())},1,1,1,1,1,1~".encode())
    assert await tracker.closed_within(5)
    await tracker.close()


# --- live bus -------------------------------------------------------------------------------------------------


async def _roundtrip(bus: LiveBus) -> None:
    await bus.start()
    try:
        subscription = await bus.subscribe("positions")
        other = await bus.subscribe("alarms")
        await asyncio.sleep(0.1)  # LISTEN / SUBSCRIBE reach the server
        payloads = [{"device_id": i, "vehicle_id": None, "note": "x" * 50} for i in range(400)]
        await bus.publish_many("positions", payloads)
        await bus.publish("alarms", {"alarm": 1})
        received = [await subscription.get(within=5) for _ in payloads]
        assert received == payloads  # order kept, nothing lost, several wire messages
        assert await other.get(within=5) == {"alarm": 1}
        await subscription.close()
        with pytest.raises(StopAsyncIteration):
            await subscription.get(within=1)
    finally:
        await bus.close()


async def test_in_process_bus() -> None:
    await _roundtrip(InProcessBus())


async def test_postgres_bus(db: Database) -> None:
    await _roundtrip(PostgresBus(db))


@pytest.mark.redis
@pytest.mark.skipif(not os.environ.get("REDIS_URL"), reason="REDIS_URL not set")
async def test_redis_bus() -> None:
    await _roundtrip(RedisBus(os.environ["REDIS_URL"]))


@pytest.mark.skipif(not os.environ.get("TEST_NATS_URL"), reason="NATS_URL not set")
async def test_nats_bus(test_settings: Settings) -> None:
    """Core NATS: order kept, nothing lost across several wire messages; chosen whenever NATS_URL is set."""
    url = os.environ["TEST_NATS_URL"]  # NATS_URL, moved aside by tests/conftest.py
    bus = create_bus(test_settings.model_copy(update={"nats_url": url, "redis_url": "redis://unused"}), None)
    assert isinstance(bus, NatsBus)
    topic = f"bus-test-{uuid.uuid4().hex[:8]}"  # subjects of our own on a shared server
    await bus.start()
    try:
        subscription = await bus.subscribe(topic)
        payloads = [{"device_id": i, "vehicle_id": None, "note": "x" * 50} for i in range(400)]
        await bus.publish_many(topic, payloads)
        assert [await subscription.get(within=5) for _ in payloads] == payloads
        await subscription.close()
        with pytest.raises(StopAsyncIteration):
            await subscription.get(within=1)
    finally:
        await bus.close()


def test_messages_stay_under_the_notify_limit() -> None:
    messages = pack_messages([{"n": i, "pad": "y" * 300} for i in range(100)])
    assert len(messages) > 1
    assert all(len(m.encode()) < 8000 for m in messages)


async def test_slow_subscriber_drops_oldest() -> None:
    bus = InProcessBus()
    subscription = await bus.subscribe("positions", maxsize=10)
    await bus.publish_many("positions", [{"i": i} for i in range(25)])
    assert subscription.dropped == 15
    assert (await subscription.get(within=1)) == {"i": 15}
    await bus.close()


async def test_commit_publishes_new_positions(db: Database, start_ingest: StartIngest) -> None:
    bus = PostgresBus(db)
    await bus.start()
    try:
        subscription = await bus.subscribe("positions")
        service = await start_ingest(bus=bus)
        imei = unique_imei()
        tracker = await Tracker.connect(service.ports["navtelecom"])
        await tracker.login(imei)
        await tracker.send(archive_frame(1, 4))
        assert await tracker.read(4) == ack_archive(4)
        while True:
            event = await subscription.get(within=5)
            if event["imei"] == imei:
                break
        assert event["count"] == 4 and event["type"] == "positions"
        assert event["device_id"] == service.registry.cached(imei).id  # type: ignore[union-attr]
        assert event["vehicle_id"] is None
        # A retransmission stores nothing new, so it announces nothing.
        await tracker.send(archive_frame(1, 4))
        assert await tracker.read(4) == ack_archive(4)
        await tracker.close()
        with pytest.raises(TimeoutError):
            while True:
                event = await subscription.get(within=0.5)
                assert event["imei"] != imei
    finally:
        await bus.close()


# --- stats and metrics ----------------------------------------------------------------------------------------


async def test_stats_and_metrics(start_ingest: StartIngest, test_settings: Settings) -> None:
    service = await start_ingest()
    tracker = await Tracker.connect(service.ports["navtelecom"])
    await tracker.login(unique_imei())
    for first in (1, 11):
        await tracker.send(archive_frame(first, 10))
        assert await tracker.read(4) == ack_archive(10)
    await tracker.send(b"\x7f")
    stats = service.snapshot()
    await tracker.close()
    assert stats["connections"]["active"] == 1
    assert stats["frames"]["A"] == 2 and stats["records"]["A"] == 20
    assert stats["frames"]["handshake"] == 1 and stats["frames"]["negotiation"] == 1
    assert stats["ack_latency_ms"]["p50"] is not None
    assert stats["batches"]["count"] >= 2
    assert stats["queue"]["backpressure"] is False and stats["queue"]["high_water"] > 0
    for name in (
        "fleet_ingest_connections",
        "fleet_ingest_frames_total",
        "fleet_ingest_records_total",
        "fleet_ingest_ack_latency_seconds_count",
        "fleet_ingest_batch_records_count",
        "fleet_ingest_queue_records",
        "fleet_ingest_rows_stored_total",
    ):
        assert any(sample.name == name for metric in REGISTRY.collect() for sample in metric.samples), name
    assert (
        REGISTRY.get_sample_value("fleet_ingest_frames_total", {"protocol": "navtelecom", "type": "A"}) >= 2
    )


async def test_role_exposes_stats_and_bus(db: Database, test_settings: Settings) -> None:
    from fleet.ingest.role import ingest_role
    from fleet.runtime import Runtime

    settings = test_settings.model_copy(update={"server_host": "127.0.0.1", "ingest_bind_ephemeral": True})
    runtime = Runtime(settings=settings, db=db, roles=["ingest"])
    async with ingest_role(runtime):
        assert isinstance(runtime.extras["bus"], PostgresBus)
        stats = runtime.extras["ingest_stats"]()
        assert stats["connections"]["active"] == 0
        port = runtime.extras["ingest"].ports["navtelecom"]
        tracker = await Tracker.connect(port)
        await tracker.login(unique_imei())
        await tracker.send(archive_frame(1, 1))
        assert await tracker.read(4) == ack_archive(1)
        await tracker.close()
    assert "bus" not in runtime.extras and "ingest_stats" not in runtime.extras


async def test_graceful_stop_acknowledges_what_it_commits(db: Database, start_ingest: StartIngest) -> None:
    """Frames received before the stop are committed and acknowledged before connections close."""
    service = await start_ingest(ingest_batch_window_ms=300.0)
    imei = unique_imei()
    tracker = await Tracker.connect(service.ports["navtelecom"])
    await tracker.login(imei)
    await tracker.send(archive_frame(1, 3))
    await wait_for(lambda: _queued(service))
    assert service.writer.in_flight == 0  # still inside the group-commit window
    await service.stop(grace=5)
    assert await tracker.read(4) == ack_archive(3)
    assert await tracker.closed_within(5)
    await tracker.close()


async def _queued(service: object) -> bool:
    return service.stats.frames["A"] == 1  # type: ignore[attr-defined]
