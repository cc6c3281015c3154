"""Device commands end to end: queued while offline, sent after the next login under each protocol's rules,
answers stored and published, unanswered commands expired, broken connections failed."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from fleet.db import Database
from fleet.device_commands import BUS_TOPIC, CommandUnsupported, bus_payload, queue_command
from fleet.ingest import IngestService
from fleet.ingest import commands as dispatcher_module
from fleet.manage.actor import Actor
from fleet.ops.bus import InProcessBus
from fleet.protocol.base import Command, CustomCommand, OutputCommand, RequestPosition, ResendArchive
from fleet.protocol.navtelecom import device_answer
from fleet.protocol.teltonika import response

from .conftest import DRIVERS, StartIngest, Tracker, unique_imei, wait_for

SYSTEM = Actor(user_id=None, email="test", role="superuser", via="cli")


async def queue(
    db: Database, service: IngestService, imei: str, command: Command, ttl: float = 3600.0
) -> Any:
    async with db.system() as conn:
        row = await queue_command(conn, SYSTEM, imei, command, owners_allowed=False, ttl_sec=ttl)
    assert service.bus is not None
    await service.bus.publish(BUS_TOPIC, bus_payload(row))  # as the API does after its commit
    return row


async def status_of(db: Database, command_id: int) -> Any:
    async with db.system() as conn:
        return await conn.fetchrow("SELECT * FROM device_commands WHERE id = $1", command_id)


async def until_status(db: Database, command_id: int, status: str, within: float = 10.0) -> Any:
    row: Any = None

    async def reached() -> bool:
        nonlocal row
        row = await status_of(db, command_id)
        return row["status"] == status

    await wait_for(reached, within)
    return row


async def read_codec12(tracker: Tracker) -> bytes:
    header = await tracker.read(8)
    assert header[:4] == b"\x00\x00\x00\x00"
    return header + await tracker.read(int.from_bytes(header[4:], "big") + 4)


async def registered(service: IngestService, driver: Any) -> str:
    """A device that logged in once (so it exists) and is offline now."""
    imei = unique_imei()
    tracker = await Tracker.connect(driver.port(service))
    await driver.login(tracker, imei)
    await tracker.close()
    assert await service.writer.wait_idle(5)
    return imei


async def test_teltonika_command_queued_offline_is_sent_after_login_and_answered(
    db: Database, start_ingest: StartIngest
) -> None:
    bus = InProcessBus()
    service = await start_ingest(bus=bus)
    events = await bus.subscribe(BUS_TOPIC)
    driver = DRIVERS["teltonika"]
    imei = await registered(service, driver)
    row = await queue(db, service, imei, OutputCommand(1, True))
    assert row["status"] == "queued" and row["protocol"] == "teltonika"
    await asyncio.sleep(0.3)
    assert (await status_of(db, row["id"]))["status"] == "queued"  # offline: it waits

    tracker = await Tracker.connect(driver.port(service))
    await driver.login(tracker, imei)
    command = await read_codec12(tracker)
    assert command.hex() == "00000000000000130c01050000000b7365746469676f7574203101000087a2"
    # AVL data keeps flowing while the answer is pending (Codec 12 goes between packets, no ACK held).
    await tracker.send(driver.frame(1, 2))
    assert await tracker.read(4) == driver.ack(2)
    await tracker.send(response("DOUT1:1 Timeout:INFINITY DOUT2:0 Timeout:INFINITY"))
    settled = await until_status(db, row["id"], "answered")
    assert settled["answer"] == "DOUT1:1 Timeout:INFINITY DOUT2:0 Timeout:INFINITY"
    assert settled["sent_at"] is not None and settled["finished_at"] is not None
    await tracker.close()
    statuses = []
    while len(statuses) < 3:
        payload = await events.get(within=5)
        if payload["command_id"] == row["id"]:
            statuses.append(payload["status"])
            assert set(payload) == {
                "type",
                "command_id",
                "device_id",
                "vehicle_id",
                "status",
                "answer",
                "time",
            }
    assert statuses == ["queued", "sent", "answered"]
    await events.close()


async def test_navtelecom_command_replaces_the_ack_until_the_answer(
    db: Database, start_ingest: StartIngest
) -> None:
    """DOC p. 13: during an upload the command goes out instead of the ACK; the ACK follows the answer."""
    service = await start_ingest()
    driver = DRIVERS["navtelecom"]
    imei = unique_imei()
    tracker = await Tracker.connect(driver.port(service))
    await driver.login(tracker, imei)
    row = await queue(db, service, imei, CustomCommand("*!1Y"))
    packet = await tracker.read_ntcb()
    assert packet[16:] == b"*!1Y"
    await tracker.send(driver.frame(1, 3))
    assert await tracker.nothing_within(0.5), "ACK sent while the command's answer is awaited"
    await tracker.send(device_answer("*@1Y OK"))
    assert await tracker.read(4) == driver.ack(3)
    settled = await until_status(db, row["id"], "answered")
    assert settled["answer"] == "*@1Y OK"
    await tracker.close()


@pytest.mark.parametrize("protocol", ["navtelecom", "teltonika"])
async def test_a_tracker_that_never_answers_expires_the_command(
    db: Database, start_ingest: StartIngest, protocol: str
) -> None:
    service = await start_ingest(device_command_answer_timeout_sec=0.5)
    driver = DRIVERS[protocol]
    imei = unique_imei()
    tracker = await Tracker.connect(driver.port(service))
    await driver.login(tracker, imei)
    first = await queue(db, service, imei, RequestPosition())
    second = await queue(db, service, imei, CustomCommand("*?V" if protocol == "navtelecom" else "getver"))

    async def next_command() -> bytes:
        return await (tracker.read_ntcb() if protocol == "navtelecom" else read_codec12(tracker))

    assert await next_command()  # the first command; the tracker stays silent
    expired = await until_status(db, first["id"], "expired")
    assert "no answer" in expired["error"]
    # The next command follows the expired one; the tracker drops the connection before answering.
    second_bytes = await next_command()
    assert b"*?V" in second_bytes or b"getver" in second_bytes
    await tracker.close()
    failed = await until_status(db, second["id"], "failed")
    assert "connection closed" in failed["error"]


async def test_undelivered_command_expires(
    db: Database, start_ingest: StartIngest, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dispatcher_module, "SWEEP_SEC", 0.2)
    service = await start_ingest()
    imei = await registered(service, DRIVERS["teltonika"])
    row = await queue(db, service, imei, RequestPosition(), ttl=0.5)
    expired = await until_status(db, row["id"], "expired")
    assert expired["sent_at"] is None and "expired" in expired["error"]


async def test_unsupported_commands_are_refused_naming_the_protocol(
    db: Database, start_ingest: StartIngest
) -> None:
    service = await start_ingest()
    imei = await registered(service, DRIVERS["teltonika"])
    from datetime import UTC, datetime

    period = ResendArchive(datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 2, tzinfo=UTC))
    async with db.system() as conn:
        with pytest.raises(CommandUnsupported, match="teltonika"):
            await queue_command(conn, SYSTEM, imei, period, owners_allowed=False, ttl_sec=60)
        with pytest.raises(CommandUnsupported, match=r"\(navtelecom\)"):
            nav = await registered(service, DRIVERS["navtelecom"])
            await queue_command(conn, SYSTEM, nav, CustomCommand("getinfo"), owners_allowed=False, ttl_sec=60)
