"""Device-side encoder: the bytes a tracker sends, for tests and the load simulator.

Everything here is the inverse of the decoder: ``handshake`` → ``*>S``, ``flex_negotiation`` → ``*>FLEX``,
``build_record`` + ``archive``/``event``/``current`` → FLEX telemetry, ``extra_record`` +
``extra_archive``/``extra_event`` → FLEX 2.0 extra records, ``device_answer`` → ``*@``/``*#`` answers.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from .checksum import crc8
from .layout import FULL_MASK_BITS, FlexLayout, mask_from_fields
from .ntcb import DEVICE_ID, SERVER_ID, build_packet
from .session import FLEX_PROTOCOL

__all__ = [
    "archive",
    "build_record",
    "current",
    "device_answer",
    "event",
    "extra_archive",
    "extra_event",
    "extra_record",
    "flex_negotiation",
    "handshake",
    "ping",
]

_EXTRA_STATIC = struct.Struct("<BBIHIBIiiifHf")


def handshake(imei: str, *, device_id: int = DEVICE_ID, server_id: int = SERVER_ID) -> bytes:
    """Return the device's ``*>S:<imei>`` packet."""
    return build_packet(b"*>S:" + imei.encode("ascii"), server_id, device_id)


def flex_negotiation(
    fields_or_mask: Iterable[int] | bytes,
    *,
    version: int = 30,
    struct_version: int | None = None,
    bit_count: int | None = None,
    device_id: int = DEVICE_ID,
    server_id: int = SERVER_ID,
) -> bytes:
    """Return a ``*>FLEX`` packet for a field set (or a ready mask) and FLEX version code (10, 20, 30)."""
    struct_version = version if struct_version is None else struct_version
    if bit_count is None:
        bit_count = FULL_MASK_BITS.get(struct_version, 255)
    if isinstance(fields_or_mask, bytes | bytearray):
        mask = bytes(fields_or_mask)
    else:
        mask = mask_from_fields(fields_or_mask, bit_count)
    body = b"*>FLEX" + bytes((FLEX_PROTOCOL, version, struct_version, bit_count)) + mask
    return build_packet(body, server_id, device_id)


def _with_crc(body: bytes) -> bytes:
    return body + bytes((crc8(body),))


def archive(records: Sequence[bytes]) -> bytes:
    """Return a ``~A`` frame holding the encoded records (at most 255)."""
    if len(records) > 255:
        raise ValueError("a ~A frame holds at most 255 records")
    return _with_crc(b"~A" + bytes((len(records),)) + b"".join(records))


def event(event_index: int, record: bytes) -> bytes:
    """Return a ``~T`` frame (out-of-turn event) for one encoded record."""
    return _with_crc(b"~T" + event_index.to_bytes(4, "little") + record)


def current(record: bytes) -> bytes:
    """Return a ``~C`` frame (current state) for one encoded record."""
    return _with_crc(b"~C" + record)


def ping() -> bytes:
    """Return the FLEX keep-alive byte."""
    return b"\x7f"


def _unix(value: datetime | int | None) -> int | None:
    if value is None or isinstance(value, int):
        return value
    return int(value.timestamp())


def build_record(
    layout: FlexLayout,
    *,
    index: int | None = None,
    event_code: int | None = None,
    device_time: datetime | int | None = None,
    fix_time: datetime | int | None = None,
    valid: bool | None = None,
    satellites: int | None = None,
    latitude: float | None = None,
    longitude: float | None = None,
    altitude_m: float | None = None,
    speed_kmh: float | None = None,
    course: int | None = None,
    odometer_km: float | None = None,
    power_v: float | None = None,
    battery_v: float | None = None,
    inputs: int | None = None,
    outputs: int | None = None,
    hdop: float | None = None,
    pdop: float | None = None,
    fields: Mapping[int, Any] | None = None,
) -> bytes:
    """Encode one record for ``layout`` from FlexRecord-like values.

    Named values go to their fields when the layout has them (and are ignored otherwise, like a device
    whose mask leaves them out); ``fields`` gives wire values by field number and wins over named ones.
    Unset fields are zero.
    """
    values: dict[int, Any] = {}
    named: dict[int, Any] = {
        1: index,
        2: event_code,
        3: _unix(device_time),
        9: _unix(fix_time),
        10: None if latitude is None else round(latitude * 600000),
        11: None if longitude is None else round(longitude * 600000),
        12: None if altitude_m is None else round(altitude_m * 10),
        13: speed_kmh,
        14: course,
        15: odometer_km,
        19: None if power_v is None else round(power_v * 1000),
        20: None if battery_v is None else round(battery_v * 1000),
    }
    if valid is not None or satellites is not None:
        named[8] = 1 | (2 if valid else 0) | ((satellites or 0) << 2)
    if inputs is not None:
        named.update({29: inputs & 0xFF, 30: (inputs >> 8) & 0xFF, 126: (inputs >> 16) & 0xFF})
    if outputs is not None:
        named.update({31: outputs & 0xFF, 32: (outputs >> 8) & 0xFF})
    if hdop is not None or pdop is not None:
        named[71] = (round((hdop or 0) * 10), round((pdop or 0) * 10))
    present = set(layout.fields)
    for number, value in named.items():
        if value is not None and number in present:
            values[number] = value
    if fields:
        values.update(fields)
    return layout.encode(values)


def extra_record(
    *,
    index: int,
    event_code: int,
    device_time: datetime | int = 0,
    valid: bool = False,
    satellites: int = 0,
    fix_time: datetime | int = 0,
    latitude: float = 0.0,
    longitude: float = 0.0,
    altitude_m: float = 0.0,
    speed_kmh: float = 0.0,
    course: int = 0,
    odometer_km: float = 0.0,
    items: Iterable[tuple[int, int | bytes]] = (),
) -> bytes:
    """Encode one FLEX 2.0 extra record including its U16 length prefix.

    ``items`` are (type, value) pairs; int values are written as U64 (Touch-Memory key, RFID tag).
    """
    nav = 1 | (2 if valid else 0) | (satellites << 2)
    body = _EXTRA_STATIC.pack(
        10,
        37,
        index,
        event_code,
        _unix(device_time) or 0,
        nav,
        _unix(fix_time) or 0,
        round(latitude * 600000),
        round(longitude * 600000),
        round(altitude_m * 10),
        speed_kmh,
        course,
        odometer_km,
    )
    for item_type, value in items:
        data = value.to_bytes(8, "little") if isinstance(value, int) else bytes(value)
        body += bytes((item_type, len(data))) + data
    return len(body).to_bytes(2, "little") + body


def extra_archive(records: Sequence[bytes]) -> bytes:
    """Return a ``~E`` frame holding encoded extra records (from :func:`extra_record`)."""
    if len(records) > 255:
        raise ValueError("a ~E frame holds at most 255 records")
    return _with_crc(b"~E" + bytes((len(records),)) + b"".join(records))


def extra_event(event_index: int, record: bytes) -> bytes:
    """Return a ``~X`` frame for one encoded extra record."""
    return _with_crc(b"~X" + event_index.to_bytes(4, "little") + record)


def device_answer(body: bytes | str, *, device_id: int = DEVICE_ID, server_id: int = SERVER_ID) -> bytes:
    """Return a device's NTCB answer packet (``*@...``/``*#...``) as it arrives at the server."""
    data = body.encode("ascii") if isinstance(body, str) else bytes(body)
    return build_packet(data, server_id, device_id)
