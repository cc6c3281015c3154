"""Replay the public capture vectors over real TCP: exact reply bytes, and the stored rows hold the values.

Each group is replayed in order on a fresh connection, as recorded. Groups without a handshake (the
protocol document's own examples, the Go server's tests) get one with a unique IMEI first, because the
listener only stores data of identified devices.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest

from fleet.db import Database
from fleet.protocol.navtelecom import flex_negotiation, handshake

from .conftest import VECTORS, StartIngest, Tracker, positions_of, unique_imei, wait_for

VECTOR_LIST: list[dict[str, Any]] = json.loads(VECTORS.read_text())


def group(name: str) -> list[dict[str, Any]]:
    return [
        v
        for v in VECTOR_LIST
        if name in (v["source"].get("test_method"), v["source"].get("test"), v["source"].get("section"))
        or name == v["source"]["repo"]
    ]


def _utc(text: str) -> datetime:
    return datetime.strptime(text[:19], "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)


async def replay(tracker: Tracker, vectors: list[dict[str, Any]]) -> None:
    """Send each vector; compare the reply with `server_reply_hex` (no reply expected when absent)."""
    for vector in vectors:
        await tracker.send(bytes.fromhex(vector["hex"]))
        expected = (vector.get("reference") or {}).get("server_reply_hex") or vector["expects"].get(
            "server_reply_hex"
        )
        if expected:
            got = await tracker.read(len(expected) // 2)
            assert got.hex() == expected, f"vector {vector['index']} ({vector['kind']})"


def check_record(row: asyncpg.Record, ref: dict[str, Any]) -> None:
    """Compare one stored position with a vector's independently decoded reference record."""
    assert row["record_index"] == ref["index"]
    assert row["event_code"] == ref["event"]
    assert row["device_time"] == _utc(ref["event_time"])
    attributes = row["attributes"]
    if "fix_time" in ref:
        assert row["fix_time"] == _utc(ref["fix_time"])
    if "nav_valid" in ref:
        assert row["valid"] is ref["nav_valid"]
    if "sats" in ref:
        assert row["satellites"] == ref["sats"]
    if "lat" in ref:
        assert row["latitude"] == pytest.approx(ref["lat"], abs=1e-6)
        assert row["longitude"] == pytest.approx(ref["lon"], abs=1e-6)
    if "alt_m" in ref:
        assert row["altitude"] == pytest.approx(ref["alt_m"], abs=0.05)
    if "speed_kmh" in ref:
        assert row["speed"] == pytest.approx(ref["speed_kmh"], abs=1e-3)
    if "course" in ref:
        assert row["course"] == ref["course"]
    if "hdop" in ref:
        assert row["hdop"] == pytest.approx(ref["hdop"])
        assert attributes["pdop"] == pytest.approx(ref["pdop"])
    if "power_mv" in ref:
        assert attributes["power_v"] == pytest.approx(ref["power_mv"] / 1000)
    if "battery_mv" in ref:
        assert attributes["battery_v"] == pytest.approx(ref["battery_mv"] / 1000)
    if "odometer_km" in ref:
        assert attributes["odometer_km"] == pytest.approx(ref["odometer_km"], abs=1e-3)


async def stored(db: Database, imei: str, count: int) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = []

    async def enough() -> bool:
        nonlocal rows
        async with db.system() as conn:
            rows = await positions_of(conn, imei)
        return len(rows) >= count

    await wait_for(enough)
    return rows


@pytest.mark.parametrize("method", ["testDecodeFlex10", "testDecodeFlex20"])
async def test_traccar_flex_sessions(db: Database, start_ingest: StartIngest, method: str) -> None:
    vectors = [v for v in group(method) if "NavisProtocolDecoderTest" in v["source"]["path"]]
    assert [v["kind"] for v in vectors] == ["handshake", "flex_negotiation", "T", "A"]
    service = await start_ingest()
    tracker = await Tracker.connect(service.ports["navtelecom"])
    await replay(tracker, vectors)
    await tracker.close()

    imei = vectors[0]["reference"]["imei"]
    refs = [v["reference"]["records"][0] for v in vectors[2:]]
    rows = {row["record_index"]: row for row in await stored(db, imei, 2)}
    for ref in refs:
        check_record(rows[ref["index"]], ref)
    negotiation = vectors[1]["reference"]

    async def negotiation_stored() -> bool:  # device state is written apart from batches
        async with db.system() as conn:
            state = await conn.fetchval("SELECT protocol_state FROM devices WHERE imei = $1", imei)
        return state is not None and state.get("mask") == negotiation["bitfield_hex"]

    await wait_for(negotiation_stored)
    # ~T is an out-of-turn alarm: it is in `events` too, linked by its record index.
    async with db.system() as conn:
        event = await conn.fetchrow(
            "SELECT e.* FROM events e JOIN devices d ON d.id = e.device_id WHERE d.imei = $1 AND e.record_index = $2",
            imei,
            refs[0]["index"],
        )
        device = await conn.fetchrow("SELECT * FROM devices WHERE imei = $1", imei)
    assert event is not None and event["event_code"] == refs[0]["event"] and event["event_type"] == "alarm"
    state = device["protocol_state"]
    assert device["protocol"] == "navtelecom"
    assert state["protocol_version"] == negotiation["protocol_version"]
    assert state["struct_version"] == negotiation["struct_version"]
    assert state["mask"] == negotiation["bitfield_hex"]
    assert device["last_connected_at"] is not None


async def test_traccar_ntcb_legacy_session(db: Database, start_ingest: StartIngest) -> None:
    """Two handshakes on one connection, then legacy *>T and *>A records: replies and stored fixes."""
    vectors = group("testDecodeNtcb")
    service = await start_ingest()
    tracker = await Tracker.connect(service.ports["navtelecom"])
    await replay(tracker, vectors)
    await tracker.close()

    imei = vectors[1]["reference"]["imei"]  # the second handshake re-identified the connection
    expects = vectors[2]["expects"]
    rows = await stored(db, imei, 2)
    by_index = {row["record_index"]: row for row in rows}
    single = by_index[0]
    assert single["fix_time"] == _utc(expects["fix_time_utc"])
    assert single["valid"] is expects["valid"]
    assert single["latitude"] == pytest.approx(expects["latitude"], abs=expects["tolerance_deg"])
    assert single["longitude"] == pytest.approx(expects["longitude"], abs=expects["tolerance_deg"])
    archived = vectors[3]["reference"]["legacy_decode"]["records"][0]
    assert by_index[archived["index"]]["event_code"] == archived["event"]
    assert by_index[archived["index"]]["attributes"]["frame"] == "legacy_A"


async def test_document_examples_with_extra_record(db: Database, start_ingest: StartIngest) -> None:
    """The protocol document's negotiation, ~A and ~E examples (FLEX 2.0), after a handshake of ours."""
    vectors = group("alex-eri/navtelecom-cs")
    assert [v["kind"] for v in vectors] == ["flex_negotiation", "A", "E"]
    imei = unique_imei()
    service = await start_ingest()
    tracker = await Tracker.connect(service.ports["navtelecom"])
    await tracker.send(handshake(imei, device_id=0, server_id=1))
    assert (await tracker.read_ntcb())[16:] == b"*<S"
    await replay(tracker, vectors)
    await tracker.close()

    expects = vectors[1]["expects"]
    (row,) = await stored(db, imei, 1)
    assert row["record_index"] == expects["index"]
    assert row["event_code"] == expects["event"]
    assert row["device_time"] == datetime.fromtimestamp(expects["event_time_unix"], UTC)
    assert row["attributes"]["power_v"] == pytest.approx(expects["power_mv"] / 1000)

    extra = vectors[2]["expects"]

    async def event_stored() -> bool:
        async with db.system() as conn:
            return bool(
                await conn.fetchval(
                    """SELECT count(*) FROM events e JOIN devices d ON d.id = e.device_id
                       WHERE d.imei = $1 AND e.event_type = 'extra' AND e.record_index = $2""",
                    imei,
                    extra["index"],
                )
            )

    await wait_for(event_stored)
    async with db.system() as conn:
        event = await conn.fetchrow(
            "SELECT e.* FROM events e JOIN devices d ON d.id = e.device_id WHERE d.imei = $1 AND e.event_type = 'extra'",
            imei,
        )
    assert event["event_code"] == extra["event"]
    assert event["attributes"]["items"][0]["type"] == extra["dynamic"][0]["type"]
    assert event["attributes"]["items"][0]["value"] == extra["dynamic"][0]["hex"]


async def test_go_server_vectors_with_injected_mask(db: Database, start_ingest: StartIngest) -> None:
    """The Go server's ~A and ~T vectors; its mask is a bit string, negotiated here as FLEX 1.0."""
    vectors = group("andrewkav/ntcb-server")
    handshake_vector, archive_vector, event_vector = vectors
    bits = archive_vector["expects"]["bitfield_bits"]
    mask = int(bits, 2).to_bytes(len(bits) // 8, "big")
    imei = unique_imei()
    service = await start_ingest()
    tracker = await Tracker.connect(service.ports["navtelecom"])
    # The recorded handshake first (its reply is the vector's), then our own device.
    await replay(tracker, [handshake_vector])
    await tracker.send(handshake(imei))
    assert (await tracker.read_ntcb())[16:] == b"*<S"
    await tracker.send(flex_negotiation(mask, version=10, bit_count=69))
    assert (await tracker.read_ntcb())[16:] == b"*<FLEX\xb0\x0a\x0a"
    await replay(tracker, [archive_vector, event_vector])
    await tracker.close()

    rows = await stored(db, imei, 2)
    for row, vector in zip(rows, [archive_vector, event_vector], strict=True):
        check_record(row, vector["reference"]["records"][0])

    # FLEX CAN fields (53-69) became one can_data reading per record, linked to its position.
    async def can_stored() -> bool:
        async with db.system() as conn:
            return (
                await conn.fetchval(
                    """SELECT count(*) FROM can_data c JOIN devices d ON d.id = c.device_id
                       WHERE d.imei = $1 AND c.position_id IS NOT NULL""",
                    imei,
                )
                > 0
            )

    await wait_for(can_stored)
    async with db.system() as conn:
        signals = {
            r["name"]: r["value"]
            for r in await conn.fetch(
                """SELECT s.name, s.value FROM can_data c JOIN devices d ON d.id = c.device_id
                   JOIN positions p ON p.id = c.position_id AND p.device_time = c.time
                   CROSS JOIN LATERAL jsonb_to_recordset(c.signals) AS s(name text, value float8)
                   WHERE d.imei = $1 AND p.record_index = 9 AND c.record_index = 9""",
                imei,
            )
        }
    assert signals["engine_speed"] == 2500
    assert signals["vehicle_speed"] == 54


async def test_ping_gets_no_answer(start_ingest: StartIngest) -> None:
    vectors = [v for v in VECTOR_LIST if v["hex"] == "7f"]
    service = await start_ingest()
    tracker = await Tracker.connect(service.ports["navtelecom"])
    await tracker.login(unique_imei())
    await tracker.send(bytes.fromhex(vectors[0]["hex"]))
    assert await tracker.nothing_within(0.3)
    await tracker.close()
    assert service.stats.frames["ping"] == 1


async def test_byte_by_byte_and_all_in_one_read(db: Database, start_ingest: StartIngest) -> None:
    """Framing is independent of how TCP cuts the stream."""
    vectors = [v for v in group("testDecodeFlex20") if "NavisProtocolDecoderTest" in v["source"]["path"]]
    stream = b"".join(bytes.fromhex(v["hex"]) for v in vectors)
    expected = "".join(v["reference"]["server_reply_hex"] for v in vectors)
    service = await start_ingest()
    for split in ("bytes", "whole"):
        tracker = await Tracker.connect(service.ports["navtelecom"])
        if split == "whole":
            await tracker.send(stream)
        else:
            for position in range(len(stream)):
                await tracker.send(stream[position : position + 1])
        assert (await tracker.read(len(expected) // 2)).hex() == expected
        await tracker.close()
