"""Device registry: auto-registration, the reject policy, one connection per device, stored session state."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest
from structlog.testing import capture_logs

from fleet.db import Database
from fleet.protocol.navtelecom import ack_archive, handshake

from .conftest import StartIngest, Tracker, archive_frame, negotiation_packet, unique_imei, wait_for


async def device_row(db: Database, imei: str) -> asyncpg.Record | None:
    async with db.system() as conn:
        return await conn.fetchrow("SELECT * FROM devices WHERE imei = $1", imei)


async def test_unknown_device_is_registered_unassigned(db: Database, start_ingest: StartIngest) -> None:
    service = await start_ingest()
    imei = unique_imei()
    tracker = await Tracker.connect(service.ports["navtelecom"])
    await tracker.login(imei)
    await tracker.send(archive_frame(1, 2))
    assert await tracker.read(4) == ack_archive(2)
    await tracker.close()

    async def state_written() -> bool:  # device state is written apart from batches, within ~200 ms
        row = await device_row(db, imei)
        return row is not None and row["last_seen_at"] is not None and row["protocol_state"] is not None

    await wait_for(state_written)
    row = await device_row(db, imei)
    assert row is not None
    assert row["vehicle_id"] is None
    assert row["protocol"] == "navtelecom"
    state = row["protocol_state"]
    assert state["protocol_version"] == 20 and state["struct_version"] == 20
    assert bytes.fromhex(state["mask"]) == negotiation_packet()[16 + 10 :]
    assert row["last_connected_at"] is not None and row["last_seen_at"] is not None
    assert row["last_peer"].startswith("127.0.0.1:")
    assert service.stats.devices_registered >= 1


async def test_reject_policy_closes_unknown_devices(db: Database, start_ingest: StartIngest) -> None:
    service = await start_ingest(unknown_device_policy="reject")
    imei = unique_imei()
    tracker = await Tracker.connect(service.ports["navtelecom"])
    with capture_logs() as logs:
        await tracker.send(handshake(imei))
        assert await tracker.closed_within(5)
    await tracker.close()
    assert await device_row(db, imei) is None
    assert service.stats.connections_refused["unknown_device"] == 1
    refused = [entry for entry in logs if entry["event"] == "ingest_device_refused"]
    assert refused and refused[0]["imei"] == imei

    # A device an admin registered is accepted (the refusal is cached briefly, so use another IMEI).
    known = unique_imei()
    async with db.system() as conn:
        await conn.execute("INSERT INTO devices (imei) VALUES ($1)", known)
    tracker = await Tracker.connect(service.ports["navtelecom"])
    await tracker.login(known)
    await tracker.send(archive_frame(1, 1))
    assert await tracker.read(4) == ack_archive(1)
    await tracker.close()


async def test_second_connection_of_a_device_replaces_the_first(start_ingest: StartIngest) -> None:
    service = await start_ingest()
    imei = unique_imei()
    first = await Tracker.connect(service.ports["navtelecom"])
    await first.login(imei)
    second = await Tracker.connect(service.ports["navtelecom"])
    await second.login(imei)
    assert await first.closed_within(5)
    await second.send(archive_frame(1, 1))
    assert await second.read(4) == ack_archive(1)
    assert service.registry.connected_devices >= 1
    assert service.stats.connections_closed["replaced"] == 1
    await first.close()
    await second.close()


async def test_many_devices_handshaking_at_once_share_lookups(
    db: Database, start_ingest: StartIngest
) -> None:
    """Hundreds of simultaneous handshakes are answered (lookups are batched, not one query each).

    The trackers come from four addresses: from one, INGEST_MAX_UNIDENTIFIED_PER_ADDRESS (100) would
    refuse connections beyond the hundredth until the first ones identified themselves.
    """
    service = await start_ingest()
    imeis = [unique_imei() for _ in range(300)]
    port = service.ports["navtelecom"]
    trackers = await asyncio.gather(
        *(Tracker.connect(port, source=f"127.0.0.{2 + i % 4}") for i in range(len(imeis)))
    )
    for tracker, imei in zip(trackers, imeis, strict=True):
        tracker.writer.write(handshake(imei))
    replies = await asyncio.gather(*(tracker.read_ntcb() for tracker in trackers))
    assert all(reply[16:] == b"*<S" for reply in replies)
    await asyncio.gather(*(tracker.close() for tracker in trackers))
    async with db.system() as conn:
        assert await conn.fetchval("SELECT count(*) FROM devices WHERE imei = ANY($1)", imeis) == 300


@pytest.mark.parametrize("policy", ["register", "reject"])
async def test_handshake_waits_for_an_unavailable_registry(
    db: Database, start_ingest: StartIngest, policy: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """If the device lookup fails, the connection is closed (the device reconnects), never answered."""
    service = await start_ingest(unknown_device_policy=policy)

    async def broken(*args: object) -> None:
        raise OSError("database unreachable")

    monkeypatch.setattr(service.registry, "_query", broken)
    tracker = await Tracker.connect(service.ports["navtelecom"])
    await tracker.send(handshake(unique_imei()))
    assert await tracker.closed_within(5)
    await tracker.close()
    assert service.stats.connections_closed["registry_unavailable"] == 1


async def test_vehicle_assignment_is_picked_up_without_reconnecting(
    db: Database, start_ingest: StartIngest
) -> None:
    service = await start_ingest()
    imei = unique_imei()
    tracker = await Tracker.connect(service.ports["navtelecom"])
    await tracker.login(imei)
    await tracker.send(archive_frame(1, 1))
    assert await tracker.read(4) == ack_archive(1)
    async with db.system() as conn:
        vehicle = await conn.fetchval("INSERT INTO vehicles (name) VALUES ('ingest test') RETURNING id")
        await conn.execute("UPDATE devices SET vehicle_id = $1 WHERE imei = $2", vehicle, imei)
    await tracker.send(archive_frame(2, 1))
    assert await tracker.read(4) == ack_archive(1)
    await tracker.close()

    async def linked() -> bool:
        async with db.system() as conn:
            return (
                await conn.fetchval(
                    """SELECT p.vehicle_id FROM positions p JOIN devices d ON d.id = p.device_id
                       WHERE d.imei = $1 AND p.record_index = 2""",
                    imei,
                )
                == vehicle
            )

    await wait_for(linked)
