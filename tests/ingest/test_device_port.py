"""Device identity on the device port (issue 15): takeover guard, allow-lists, per-address caps, policies.

Connections come from different loopback addresses (127.0.0.x: Linux routes all of 127/8 to `lo`), so the
tests see exactly what the server sees of trackers and attackers on different networks.
"""

from __future__ import annotations

import asyncio

import pytest
from structlog.testing import capture_logs

from fleet.config import Settings
from fleet.db import Database
from fleet.protocol.navtelecom import build_record, current
from fleet.protocol.teltonika import CODEC_8E, avl_packet, encode_record

from .conftest import LAYOUT, Driver, StartIngest, Tracker, positions_of, unique_imei, wait_for

REAL = "127.0.0.1"
ATTACKER = "127.0.0.2"
SYDNEY = (-33.8688, 151.2093)


def spoofed_record(proto: Driver) -> bytes:
    """The attacker's record: a position in Sydney at 180 km/h (a Navtelecom ~C, a Teltonika AVL packet)."""
    if proto.name == "navtelecom":
        record = build_record(
            LAYOUT,
            index=7777,
            event_code=0x1250,
            device_time=1_767_300_000,
            fix_time=1_767_300_000,
            valid=True,
            satellites=9,
            latitude=SYDNEY[0],
            longitude=SYDNEY[1],
            altitude_m=10.0,
            speed_kmh=180.0,
            course=0,
            power_v=12.5,
            battery_v=4.1,
            hdop=0.9,
            pdop=1.2,
        )
        return current(record)
    return avl_packet(
        CODEC_8E,
        [
            encode_record(
                CODEC_8E,
                timestamp_ms=1_767_300_000_000,
                latitude=SYDNEY[0],
                longitude=SYDNEY[1],
                altitude=10,
                angle=0,
                satellites=9,
                speed=180,
                io=[(239, 1, 1)],
            )
        ],
    )


def login_stream(proto: Driver, imei: str) -> bytes:
    """Everything an attacker sends at once: login (and FLEX negotiation), then the spoofed record."""
    from .conftest import negotiation_packet

    login = proto.login_bytes(imei)
    if proto.name == "navtelecom":
        login += negotiation_packet()
    return login + spoofed_record(proto)


async def everything_until_closed(tracker: Tracker, within: float = 5.0) -> tuple[bytes, bool]:
    """What the server sent before closing, and whether it closed within ``within`` seconds."""
    received = b""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    try:
        while (remaining := deadline - loop.time()) > 0:
            chunk = await asyncio.wait_for(tracker.reader.read(4096), remaining)
            if not chunk:
                return received, True
            received += chunk
    except TimeoutError:
        return received, False
    except (ConnectionError, OSError):
        return received, True
    return received, False


async def security_events(db: Database, imei: str) -> list[dict[str, object]]:
    async with db.system() as conn:
        rows = await conn.fetch(
            "SELECT kind, count, peer, protocol, device_id, details FROM security_events WHERE imei = $1",
            imei,
        )
    return [dict(row) for row in rows]


async def test_spoofed_takeover_is_refused_logged_and_stored_nowhere(
    db: Database, start_ingest: StartIngest, proto: Driver
) -> None:
    """A fake connection with a known IMEI from another address while the real tracker is online."""
    service = await start_ingest()
    port = proto.port(service)
    imei = unique_imei()
    real = await Tracker.connect(port, source=REAL)
    await proto.login(real, imei)
    await real.send(proto.frame(1, 2))
    assert await real.read(4) == proto.ack(2)

    fake = await Tracker.connect(port, source=ATTACKER)
    with capture_logs() as logs:
        await fake.send(login_stream(proto, imei))
        answer, closed = await everything_until_closed(fake)
    await fake.close()
    assert closed
    # No login accepted and no ACK: Navtelecom says nothing, Teltonika its refusal byte.
    assert answer == (b"\x00" if proto.name == "teltonika" else b"")

    # The real tracker was not replaced: its connection stays and its next frame is acknowledged.
    await real.send(proto.frame(3, 1))
    assert await real.read(4) == proto.ack(1)
    await real.close()
    assert service.stats.connections_refused["takeover_refused"] == 1
    assert service.stats.connections_closed.get("replaced", 0) == 0

    (entry,) = [e for e in logs if e["event"] == "ingest_takeover_refused"]
    assert entry["peer"].startswith(f"{ATTACKER}:") and entry["imei"] == imei
    assert entry["online_peer"].startswith(f"{REAL}:") and entry["protocol"] == proto.name

    async with db.system() as conn:
        stored = await positions_of(conn, imei)
    assert len(stored) == 3
    assert all(abs(row["latitude"] - SYDNEY[0]) > 1 for row in stored)

    async def event_stored() -> bool:
        return bool(await security_events(db, imei))

    await wait_for(event_stored)
    (event,) = await security_events(db, imei)
    assert event["kind"] == "takeover_refused" and event["count"] == 1
    assert str(event["peer"]).startswith(f"{ATTACKER}:") and event["protocol"] == proto.name
    details = event["details"]
    assert isinstance(details, dict) and details["address"] == ATTACKER
    assert str(details["online_peer"]).startswith(f"{REAL}:")


async def test_a_dead_link_is_replaced_after_the_silence_threshold(
    start_ingest: StartIngest, proto: Driver
) -> None:
    """A tracker that changed networks without closing its old link gets in once that link is silent."""
    service = await start_ingest(ingest_takeover_silence_sec=0.3)
    port = proto.port(service)
    imei = unique_imei()
    old = await Tracker.connect(port, source=REAL)
    await proto.login(old, imei)
    await asyncio.sleep(0.6)
    new = await Tracker.connect(port, source=ATTACKER)
    await proto.login(new, imei)
    assert await old.closed_within(5)
    await new.send(proto.frame(1, 1))
    assert await new.read(4) == proto.ack(1)
    assert service.stats.connections_closed["replaced"] == 1
    assert service.stats.connections_refused.get("takeover_refused", 0) == 0
    await old.close()
    await new.close()


async def test_per_device_allow_list(db: Database, start_ingest: StartIngest, proto: Driver) -> None:
    imei = unique_imei()
    async with db.system() as conn:
        await conn.execute(
            "INSERT INTO devices (imei, protocol, allowed_networks) VALUES ($1, $2, '{127.0.0.3/32}')",
            imei,
            proto.name,
        )
    service = await start_ingest()
    port = proto.port(service)
    outsider = await Tracker.connect(port, source=ATTACKER)
    await outsider.send(proto.login_bytes(imei))
    answer, closed = await everything_until_closed(outsider)
    await outsider.close()
    assert closed and answer == (b"\x00" if proto.name == "teltonika" else b"")
    assert service.stats.connections_refused["device_address_refused"] == 1

    insider = await Tracker.connect(port, source="127.0.0.3")
    await proto.login(insider, imei)
    await insider.send(proto.frame(1, 1))
    assert await insider.read(4) == proto.ack(1)
    await insider.close()

    async def event_stored() -> bool:
        return any(e["kind"] == "device_address_refused" for e in await security_events(db, imei))

    await wait_for(event_stored)


async def test_allowed_cidrs_refuse_other_networks_before_a_byte_is_read(
    start_ingest: StartIngest, proto: Driver
) -> None:
    service = await start_ingest(ingest_allowed_cidrs=["127.0.0.2/32", "10.0.0.0/24"])
    port = proto.port(service)
    with capture_logs() as logs:
        outsiders = [await Tracker.connect(port, source=REAL) for _ in range(3)]
        for tracker in outsiders:
            assert await tracker.closed_within(5)
            await tracker.close()
    assert service.stats.connections_refused["address_not_allowed"] == 3
    (line,) = [e for e in logs if e["event"] == "ingest_connection_refused"]  # once per interval
    assert line["counts"] == {"address_not_allowed": 1}
    inside = await Tracker.connect(port, source=ATTACKER)
    await proto.login(inside, unique_imei())
    await inside.send(proto.frame(1, 1))
    assert await inside.read(4) == proto.ack(1)
    await inside.close()
    # The counts of refusals not yet logged are logged by the periodic sweep once the interval passed.
    service.admission._refused_logged_at = float("-inf")
    with capture_logs() as later:
        service.admission.tick(service.loop.time())
    (summary,) = [e for e in later if e["event"] == "ingest_connection_refused"]
    assert summary["counts"] == {"address_not_allowed": 2}


async def test_per_address_caps(start_ingest: StartIngest, proto: Driver) -> None:
    service = await start_ingest(ingest_max_unidentified_per_address=3, ingest_max_connections_per_address=5)
    port = proto.port(service)
    source = "127.0.0.4"
    waiting = [await Tracker.connect(port, source=source) for _ in range(3)]
    await wait_for(lambda: _counted(service, source, 3))
    extra = await Tracker.connect(port, source=source)
    assert await extra.closed_within(5)
    assert service.stats.connections_refused["address_unidentified_limit"] == 1
    # Another address is not affected.
    other = await Tracker.connect(port, source="127.0.0.5")
    await proto.login(other, unique_imei())
    # Identified connections leave room for new unidentified ones, up to the total per address.
    for tracker in waiting:
        await proto.login(tracker, unique_imei())
    more = [await Tracker.connect(port, source=source) for _ in range(2)]
    await wait_for(lambda: _counted(service, source, 5))
    sixth = await Tracker.connect(port, source=source)
    assert await sixth.closed_within(5)
    assert service.stats.connections_refused["address_limit"] == 1
    for tracker in [*waiting, *more, extra, other, sixth]:
        await tracker.close()
    await wait_for(lambda: _counted(service, source, 0))
    assert service.admission.counts.unidentified.get(source, 0) == 0


async def _counted(service: object, address: str, expected: int) -> bool:
    return service.admission.counts.total.get(address, 0) == expected  # type: ignore[attr-defined]


async def test_unknown_device_policy_per_protocol(db: Database, start_ingest: StartIngest) -> None:
    from .conftest import DRIVERS

    service = await start_ingest(
        unknown_device_policy="register", unknown_device_policies={"teltonika": "reject"}
    )
    teltonika, navtelecom = DRIVERS["teltonika"], DRIVERS["navtelecom"]
    refused_imei = unique_imei()
    tracker = await Tracker.connect(teltonika.port(service))
    await tracker.send(teltonika.login_bytes(refused_imei))
    answer, closed = await everything_until_closed(tracker)
    await tracker.close()
    assert closed and answer == b"\x00"
    registered = unique_imei()
    tracker = await Tracker.connect(navtelecom.port(service))
    await navtelecom.login(tracker, registered)
    await tracker.close()
    async with db.system() as conn:
        known = {
            r["imei"]
            for r in await conn.fetch(
                "SELECT imei FROM devices WHERE imei = ANY($1)", [refused_imei, registered]
            )
        }
    assert known == {registered}
    # The refusal is cached per protocol: the same IMEI over Navtelecom is registered at once.
    tracker = await Tracker.connect(navtelecom.port(service))
    await navtelecom.login(tracker, refused_imei)
    await tracker.close()


async def test_unknown_protocol_in_the_policies_is_a_config_error(start_ingest: StartIngest) -> None:
    from fleet.errors import ConfigError

    with pytest.raises(ConfigError, match="UNKNOWN_DEVICE_POLICIES names unknown protocols gps103"):
        await start_ingest(unknown_device_policies={"gps103": "reject"})


@pytest.mark.parametrize(
    ("env", "explicit", "expected"),
    [
        ("development", None, "register"),
        ("test", None, "register"),
        ("production", None, "reject"),
        ("production", "register", "register"),
        ("development", "reject", "reject"),
    ],
)
def test_unknown_device_policy_defaults(
    monkeypatch: pytest.MonkeyPatch, env: str, explicit: str | None, expected: str
) -> None:
    monkeypatch.setenv("ENV", env)
    if explicit is None:
        monkeypatch.delenv("UNKNOWN_DEVICE_POLICY", raising=False)
    else:
        monkeypatch.setenv("UNKNOWN_DEVICE_POLICY", explicit)
    assert Settings().unknown_device_policy == expected


def test_allowed_cidrs_are_parsed_and_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    from pydantic import ValidationError

    monkeypatch.setenv("INGEST_ALLOWED_CIDRS", "10.0.0.1/24, fd00:1::/64")
    assert Settings().ingest_allowed_cidrs == ["10.0.0.0/24", "fd00:1::/64"]
    monkeypatch.setenv("INGEST_ALLOWED_CIDRS", "10.0.0.0/33")
    with pytest.raises(ValidationError, match="CIDR"):
        Settings()
