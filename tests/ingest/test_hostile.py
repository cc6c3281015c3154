"""Hostile and broken input: the listener survives, the peer is named in the log, others are unaffected."""

from __future__ import annotations

import asyncio
import contextlib
import os

from structlog.testing import capture_logs

from fleet.db import Database
from fleet.protocol.navtelecom import archive, flex_negotiation, handshake

from .conftest import (
    DRIVERS,
    Driver,
    StartIngest,
    Tracker,
    archive_frame,
    negotiation_packet,
    record,
    unique_imei,
    wait_for,
)

# What each protocol says about the same garbage: the first bytes cannot start an NTCB message; for
# Teltonika they are a login whose IMEI length is not 15.
GARBAGE_CODE = {"navtelecom": "bad_start", "teltonika": "bad_imei"}
TOO_MANY_BAD = {"navtelecom": "too_many_invalid_frames", "teltonika": "protocol_too_many_bad_crc"}


async def healthy_device_works(port: int, imei: str, first: int = 1, proto: Driver | None = None) -> float:
    """Log in, upload one frame, return the ACK latency in seconds."""
    driver = proto or DRIVERS["navtelecom"]
    tracker = await Tracker.connect(port)
    await driver.login(tracker, imei)
    loop = asyncio.get_running_loop()
    started = loop.time()
    await tracker.send(driver.frame(first, 5))
    assert await tracker.read(4) == driver.ack(5)
    latency = loop.time() - started
    await tracker.close()
    return latency


async def test_garbage_closes_the_connection_with_a_useful_log_line(
    db: Database, start_ingest: StartIngest, proto: Driver
) -> None:
    service = await start_ingest()
    tracker = await Tracker.connect(proto.port(service))
    with capture_logs() as logs:
        await tracker.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert await tracker.closed_within(5)
    await tracker.close()
    (entry,) = [e for e in logs if e["event"] == "ingest_connection_protocol_error"]
    assert entry["peer"].startswith("127.0.0.1:")
    assert entry["excerpt"].startswith(b"GET / HTTP".hex())
    assert entry["code"] == GARBAGE_CODE[proto.name] and entry["protocol"] == proto.name
    await healthy_device_works(proto.port(service), unique_imei(), proto=proto)

    async def evidence_kept() -> bool:
        async with db.system() as conn:
            return bool(
                await conn.fetchval(
                    "SELECT count(*) FROM raw_frames WHERE outcome = 'error' AND data = $1",
                    b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[:32],
                )
            )

    await wait_for(evidence_kept)


async def test_garbage_after_handshake_names_the_imei(start_ingest: StartIngest) -> None:
    service = await start_ingest()
    imei = unique_imei()
    tracker = await Tracker.connect(service.ports["navtelecom"])
    await tracker.login(imei)
    with capture_logs() as logs:
        await tracker.send(b"\x00\x01\x02garbage")
        assert await tracker.closed_within(5)
    await tracker.close()
    (entry,) = [e for e in logs if e["event"] == "ingest_connection_protocol_error"]
    assert entry["imei"] == imei
    assert entry["excerpt"] == b"\x00\x01\x02garbage".hex()


async def test_oversized_frame_is_refused_before_buffering(start_ingest: StartIngest) -> None:
    """A ~A array longer than the frame cap (255 full FLEX 3.0 records: 187 KB) is fatal at its header."""
    service = await start_ingest()
    tracker = await Tracker.connect(service.ports["navtelecom"])
    await tracker.send(handshake(unique_imei()))
    await tracker.read_ntcb()
    await tracker.send(flex_negotiation(range(1, 256), version=30))
    await tracker.read_ntcb()
    with capture_logs() as logs:
        await tracker.send(b"~A\xff")
        closed = await tracker.closed_within(5)
    await tracker.close()
    assert closed
    assert service.stats.decode_errors["too_large"] == 1
    (entry,) = [e for e in logs if e["event"] == "ingest_connection_protocol_error"]
    assert entry["excerpt"] == "7e41ff"


async def test_oversized_text_frame_is_fatal(start_ingest: StartIngest) -> None:
    service = await start_ingest()
    tracker = await Tracker.connect(service.ports["navtelecom"])
    await tracker.send(b"~A123456789012345," + b"1" * 4000)
    assert await tracker.closed_within(5)
    await tracker.close()
    assert service.stats.decode_errors["too_large"] == 1


async def test_bad_checksum_gets_no_ack_and_keeps_the_connection(
    db: Database, start_ingest: StartIngest, proto: Driver
) -> None:
    service = await start_ingest()
    imei = unique_imei()
    tracker = await Tracker.connect(proto.port(service))
    await proto.login(tracker, imei)
    await tracker.send(proto.corrupt(proto.frame(1, 2)))
    assert await tracker.nothing_within(0.5)
    # The device resends it intact on the same connection: acknowledged and stored.
    await tracker.send(proto.frame(1, 2))
    assert await tracker.read(4) == proto.ack(2)
    await tracker.close()
    assert service.stats.decode_errors["bad_checksum"] == 1

    async def rejected_kept() -> bool:
        async with db.system() as conn:
            return bool(
                await conn.fetchval(
                    """SELECT count(*) FROM raw_frames r JOIN devices d ON d.id = r.device_id
                       WHERE d.imei = $1 AND r.outcome = 'rejected'""",
                    imei,
                )
            )

    await wait_for(rejected_kept)


async def test_endless_bad_frames_end_the_connection(start_ingest: StartIngest, proto: Driver) -> None:
    service = await start_ingest()
    tracker = await Tracker.connect(proto.port(service))
    await proto.login(tracker, unique_imei())
    bad = proto.corrupt(archive([record(1)]) if proto.name == "navtelecom" else proto.frame(1, 1))
    with contextlib.suppress(ConnectionError):
        for _ in range(100):
            await tracker.send(bytes(bad))
    assert await tracker.closed_within(5)
    await tracker.close()
    assert service.stats.connections_closed[TOO_MANY_BAD[proto.name]] == 1


async def test_flex_before_handshake_closes(db: Database, start_ingest: StartIngest) -> None:
    service = await start_ingest()
    tracker = await Tracker.connect(service.ports["navtelecom"])
    await tracker.send(negotiation_packet())
    await tracker.read_ntcb()  # the protocol document itself negotiates first; that is answered
    with capture_logs() as logs:
        await tracker.send(archive_frame(1, 1))
        assert await tracker.closed_within(5)
    await tracker.close()
    assert [e for e in logs if e["event"] == "ingest_telemetry_before_handshake"]
    assert service.stats.decode_errors["no_handshake"] == 1


async def test_telemetry_without_any_negotiation_closes(start_ingest: StartIngest) -> None:
    service = await start_ingest()
    tracker = await Tracker.connect(service.ports["navtelecom"])
    await tracker.send(handshake(unique_imei()))
    await tracker.read_ntcb()
    await tracker.send(archive_frame(1, 1))
    assert await tracker.closed_within(5)
    await tracker.close()
    assert service.stats.decode_errors["not_negotiated"] == 1


async def test_slow_loris_is_cut_off_and_others_are_unaffected(
    start_ingest: StartIngest, proto: Driver
) -> None:
    service = await start_ingest(ingest_handshake_timeout_sec=1.0)
    port = proto.port(service)
    # One connection trickles a handshake one byte at a time, another connects and says nothing,
    # a third logs in and then trickles a frame.
    trickler = await Tracker.connect(port)
    silent = await Tracker.connect(port)
    partial = await Tracker.connect(port)
    await proto.login(partial, unique_imei())
    packet = proto.login_bytes(unique_imei())
    frame = proto.frame(1, 3)

    async def trickle(tracker: Tracker, data: bytes) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            for byte in data:
                await tracker.send(bytes([byte]))
                await asyncio.sleep(0.15)

    tasks = [asyncio.create_task(trickle(trickler, packet)), asyncio.create_task(trickle(partial, frame))]
    latency = await healthy_device_works(port, unique_imei(), proto=proto)
    assert latency < 1.0
    for tracker in (trickler, silent, partial):
        assert await tracker.closed_within(4)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for tracker in (trickler, silent, partial):
        await tracker.close()
    closed = service.stats.connections_closed
    assert closed["handshake_timeout"] == 2
    assert closed["partial_frame_timeout"] == 1


async def test_connection_limit_refuses_with_one_log_line(start_ingest: StartIngest) -> None:
    service = await start_ingest(ingest_max_connections=3)
    held = [await Tracker.connect(service.ports["navtelecom"]) for _ in range(3)]
    await wait_for(lambda: _count(service, 3))
    with capture_logs() as logs:
        extra = [await Tracker.connect(service.ports["navtelecom"]) for _ in range(5)]
        for tracker in extra:
            assert await tracker.closed_within(5)
    refusals = [e for e in logs if e["event"] == "ingest_connection_refused"]
    assert len(refusals) == 1  # rate-limited: one line, not one per connection
    assert service.stats.connections_refused["limit"] == 5
    for tracker in held + extra:
        await tracker.close()


async def _count(service: object, expected: int) -> bool:
    return len(service.connections) == expected  # type: ignore[attr-defined]


async def test_listener_survives_a_storm_of_bad_clients(start_ingest: StartIngest, proto: Driver) -> None:
    """Many hostile connections at once; a real device still gets prompt ACKs."""
    service = await start_ingest()
    port = proto.port(service)
    huge = b"\x00\x00\x00\x00\x7f\xff\xff\xff"  # a Teltonika data length far over the cap

    async def hostile(kind: int) -> None:
        with contextlib.suppress(ConnectionError, OSError, TimeoutError):
            tracker = await Tracker.connect(port)
            if kind == 0:
                await tracker.send(os.urandom(512))
            elif kind == 1:
                await tracker.send(b"~A\x05" + os.urandom(30))
            elif kind == 2:
                await tracker.send(proto.login_bytes(unique_imei()) + b"@NTC" + os.urandom(60))
            elif kind == 3:
                await tracker.send(proto.login_bytes(unique_imei()) + huge + os.urandom(20))
            else:
                await tracker.send(b"~T" + os.urandom(3))
            await tracker.closed_within(2)
            await tracker.close()

    storm = asyncio.gather(*(hostile(i % 5) for i in range(200)))
    latency = await healthy_device_works(port, unique_imei(), proto=proto)
    await storm
    assert latency < 1.0
    await healthy_device_works(port, unique_imei(), proto=proto)
