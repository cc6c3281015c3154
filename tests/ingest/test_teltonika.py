"""Teltonika over real TCP: the public vectors replayed whole, byte by byte and several per read - exact
replies, stored positions and IO values - corrupted packets never acknowledged, and both protocols on their
own ports of one server."""

from __future__ import annotations

import asyncio
import contextlib
import json
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest

from fleet.db import Database
from fleet.errors import ConfigError
from fleet.ingest import IngestService
from fleet.protocol.teltonika import TeltonikaSession

from .conftest import DRIVERS, REPO, StartIngest, Tracker, positions_of, unique_imei, wait_for

VECTORS: list[dict[str, Any]] = json.loads(
    (REPO / "tests" / "protocol" / "data" / "teltonika_public.json").read_text()
)
AVL = [
    v for v in VECTORS if v["transport"] == "tcp" and v["kind"] == "avl" and not v["expects"].get("reject")
]
TELTONIKA = DRIVERS["teltonika"]


async def login(port: int, imei: str) -> Tracker:
    tracker = await Tracker.connect(port)
    await TELTONIKA.login(tracker, imei)
    return tracker


async def stored(db: Database, imei: str, count: int) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = []

    async def enough() -> bool:
        nonlocal rows
        async with db.system() as conn:
            rows = await positions_of(conn, imei)
        return len(rows) >= count

    await wait_for(enough)
    return rows


def check(row: asyncpg.Record, want: dict[str, Any]) -> None:
    assert row["device_time"] == datetime.fromtimestamp(want["timestamp_ms"] / 1000, UTC)
    assert row["valid"] is (want["satellites"] > 0)
    if want["lat"] or want["lon"]:
        assert row["latitude"] == pytest.approx(want["lat"], abs=1e-7)
        assert row["longitude"] == pytest.approx(want["lon"], abs=1e-7)
    else:
        assert row["latitude"] is None and row["longitude"] is None  # 0/0 is not a position
    assert (row["altitude"], row["course"], row["satellites"], row["speed"]) == (
        want["altitude"],
        want["angle"],
        want["satellites"],
        want["speed"],
    )
    assert row["event_code"] == want["event_id"]
    attributes = row["attributes"]
    assert attributes["priority"] == want["priority"]
    io = want["io"]
    if "66" in io:
        assert attributes["external_voltage"] == pytest.approx(io["66"] / 1000)
    if "239" in io:
        assert attributes["ignition"] == io["239"]
    if "16" in io:
        assert attributes["total_odometer"] == io["16"]


@pytest.mark.parametrize("split", ["whole", "bytes", "reads"])
async def test_vectors_over_tcp(db: Database, start_ingest: StartIngest, split: str) -> None:
    service = await start_ingest()
    port = service.ports["teltonika"]
    for vector in AVL:
        imei = unique_imei()  # one device per vector: records of different vectors share timestamps
        tracker = await login(port, imei)
        data = bytes.fromhex(vector["hex"])
        if split == "whole":
            await tracker.send(data)
        elif split == "bytes":
            for position in range(len(data)):
                await tracker.send(data[position : position + 1])
        else:
            for chunk in vector.get("reads") or [vector["hex"]]:
                await tracker.send(bytes.fromhex(chunk))
        expected = bytes.fromhex(vector["server_reply_hex"])
        assert await tracker.read(len(expected)) == expected, vector["id"]
        await tracker.close()
        records = vector["expects"]["records"]
        rows = await stored(db, imei, len(records))
        by_time = {row["device_time"]: row for row in rows}
        for want in records:
            check(by_time[datetime.fromtimestamp(want["timestamp_ms"] / 1000, UTC)], want)


async def test_several_packets_in_one_read_get_one_ack_each_in_order(
    db: Database, start_ingest: StartIngest
) -> None:
    service = await start_ingest()
    imei = unique_imei()
    tracker = await login(service.ports["teltonika"], imei)
    stream = b"\xff".join(bytes.fromhex(v["hex"]) for v in AVL)
    await tracker.send(stream)
    expected = b"".join(bytes.fromhex(v["server_reply_hex"]) for v in AVL)
    assert await tracker.read(len(expected)) == expected
    await tracker.close()
    # Records of different vectors may share a timestamp: the fingerprint keeps them apart, while the
    # same record sent twice (tp-25 is tp-05 split) is stored once.
    distinct = set()
    for vector in AVL:
        session = TeltonikaSession()
        session.feed(TELTONIKA.login_bytes(imei))
        (out,) = session.feed(bytes.fromhex(vector["hex"]))
        distinct.update((r.timestamp_ms, r.fingerprint) for r in out.records)  # type: ignore[union-attr]
    assert len(await stored(db, imei, len(distinct))) == len(distinct)
    assert await service.writer.wait_idle(5)
    assert len(await stored(db, imei, len(distinct))) == len(distinct)
    async with db.system() as conn:
        device = await conn.fetchrow("SELECT protocol FROM devices WHERE imei = $1", imei)
        ignition = await conn.fetchval(
            """SELECT count(*) FROM positions p JOIN devices d ON d.id = p.device_id
               WHERE d.imei = $1 AND p.attributes ? 'ignition'""",
            imei,
        )
    assert device["protocol"] == "teltonika" and ignition > 0


async def test_retransmitted_packet_is_acknowledged_and_stored_once(
    db: Database, start_ingest: StartIngest
) -> None:
    service = await start_ingest()
    imei = unique_imei()
    vector = next(v for v in AVL if v["id"] == "tp-05")
    tracker = await login(service.ports["teltonika"], imei)
    for _ in range(3):
        await tracker.send(bytes.fromhex(vector["hex"]))
        assert (await tracker.read(4)).hex() == vector["server_reply_hex"]
    await tracker.close()
    assert len(await stored(db, imei, 2)) == 2
    assert await service.writer.wait_idle(5)
    assert len(await stored(db, imei, 2)) == 2


async def test_every_corruption_of_a_packet_gets_no_ack_and_the_listener_lives(
    start_ingest: StartIngest,
) -> None:
    """Each single-byte corruption of a 2-record packet, then the intact packet: only its ACK comes back."""
    service = await start_ingest()
    port = service.ports["teltonika"]
    data = bytes.fromhex(next(v for v in AVL if v["id"] == "tp-05")["hex"])
    imei = unique_imei()
    gate = asyncio.Semaphore(40)

    async def one(position: int) -> None:
        corrupted = bytearray(data)
        corrupted[position] ^= 0xA5
        async with gate:
            tracker = await login(port, imei)
            try:
                # A corrupted length swallows the intact packet (no ACK at all) or closes the connection;
                # anything that arrives must be exactly the ACK of the intact packet.
                received = b""
                with contextlib.suppress(TimeoutError, asyncio.IncompleteReadError, ConnectionError, OSError):
                    await tracker.send(bytes(corrupted))
                    await tracker.send(data)
                    received = await tracker.read(4, within=1.0)
                assert received in (b"", b"\x00\x00\x00\x02"), (position, received.hex())
            finally:
                await tracker.close()

    await asyncio.gather(*(one(position) for position in range(len(data))))
    # The listener is healthy afterwards.
    tracker = await login(port, unique_imei())
    await tracker.send(data)
    assert await tracker.read(4) == b"\x00\x00\x00\x02"
    await tracker.close()


async def test_refused_imei_gets_00_and_is_closed(start_ingest: StartIngest) -> None:
    service = await start_ingest(unknown_device_policy="reject")
    tracker = await Tracker.connect(service.ports["teltonika"])
    await tracker.send(TELTONIKA.login_bytes(unique_imei()))
    assert await tracker.read(1) == b"\x00"
    assert await tracker.closed_within(5)
    await tracker.close()
    invalid = await Tracker.connect(service.ports["teltonika"])
    await invalid.send(b"\x00\x0f35630704244101X")
    assert await invalid.read(1) == b"\x00"
    assert await invalid.closed_within(5)
    await invalid.close()


async def test_both_protocols_stream_into_one_server_on_their_own_ports(
    db: Database, start_ingest: StartIngest
) -> None:
    service = await start_ingest()
    assert set(service.ports) == {"navtelecom", "teltonika"}
    assert service.ports["navtelecom"] != service.ports["teltonika"]
    imeis = {}
    for name, driver in DRIVERS.items():
        imeis[name] = unique_imei()
        tracker = await Tracker.connect(driver.port(service))
        await driver.login(tracker, imeis[name])
        await tracker.send(driver.frame(1, 3))
        assert await tracker.read(4) == driver.ack(3)
        await tracker.close()
    async with db.system() as conn:
        for name, imei in imeis.items():
            assert len(await positions_of(conn, imei)) == 3
            assert await conn.fetchval("SELECT protocol FROM devices WHERE imei = $1", imei) == name
            protocols = await conn.fetch(
                "SELECT DISTINCT r.protocol FROM raw_frames r JOIN devices d ON d.id = r.device_id WHERE d.imei = $1",
                imei,
            )
            assert [r["protocol"] for r in protocols] == [name]


async def test_port_0_disables_a_protocol(
    db: Database, start_ingest: StartIngest, test_settings: Any
) -> None:
    service = await start_ingest(teltonika_port=0)
    assert set(service.ports) == {"navtelecom"}
    settings = test_settings.model_copy(
        update={"server_host": "127.0.0.1", "teltonika_port": 0, "server_port": 0}
    )
    with pytest.raises(ConfigError, match="disabled"):
        await IngestService(settings, db).start()
