"""FLEX telemetry messages (``~A ~T ~C ~E ~X``): body decoding and the exact acknowledgements (DOC §1.2.1)."""

from __future__ import annotations

import struct
from dataclasses import dataclass

from .checksum import crc8
from .convert import unix_to_datetime
from .layout import FlexLayout
from .records import ExtraItem, ExtraRecord, FlexRecord

__all__ = [
    "DecodeError",
    "FlexMessage",
    "ack_archive",
    "ack_current",
    "ack_event",
    "ack_extra_archive",
    "ack_extra_event",
    "decode_extra_record",
    "decode_flex",
]


class DecodeError(ValueError):
    """A delimited frame with a valid checksum whose content violates the format."""


@dataclass(frozen=True, slots=True)
class FlexMessage:
    """A decoded FLEX telemetry frame and the acknowledgement it needs."""

    type: str  # "A", "T", "C", "E" or "X"
    records: list[FlexRecord] | list[ExtraRecord]
    ack: bytes
    event_index: int | None = None


def _with_crc(body: bytes) -> bytes:
    return body + bytes((crc8(body),))


def ack_archive(count: int) -> bytes:
    """Return the ``~A`` acknowledgement: ``~A`` + count + crc8."""
    return _with_crc(b"~A" + bytes((count,)))


def ack_event(event_index: int) -> bytes:
    """Return the ``~T`` acknowledgement: ``~T`` + the received event index (U32 LE) + crc8."""
    return _with_crc(b"~T" + event_index.to_bytes(4, "little"))


def ack_current() -> bytes:
    """Return the ``~C`` acknowledgement: ``~C`` + crc8."""
    return _ACK_CURRENT


_ACK_CURRENT = _with_crc(b"~C")


def ack_extra_archive(count: int) -> bytes:
    """Return the ``~E`` acknowledgement: ``~E`` + count + crc8."""
    return _with_crc(b"~E" + bytes((count,)))


def ack_extra_event(event_index: int) -> bytes:
    """Return the ``~X`` acknowledgement: ``~X`` + the received event index (U32 LE) + crc8."""
    return _with_crc(b"~X" + event_index.to_bytes(4, "little"))


def decode_flex(raw: bytes, layout: FlexLayout) -> FlexMessage:
    """Decode a delimited, checksum-verified FLEX frame with the negotiated layout."""
    letter = chr(raw[1])
    size = layout.size
    if letter == "A":
        count = raw[2]
        if len(raw) != 4 + count * size:
            raise DecodeError("~A length does not match count × record size")
        return FlexMessage("A", layout.decode(raw, 3, count), ack_archive(count))
    if letter == "T":
        if len(raw) != 7 + size:
            raise DecodeError("~T length does not match the record size")
        event_index = int.from_bytes(raw[2:6], "little")
        return FlexMessage("T", [layout.decode_one(raw, 6)], ack_event(event_index), event_index)
    if letter == "C":
        if len(raw) != 3 + size:
            raise DecodeError("~C length does not match the record size")
        return FlexMessage("C", [layout.decode_one(raw, 2)], ack_current())
    if letter == "E":
        count = raw[2]
        records = []
        cursor = 3
        for _ in range(count):
            length = int.from_bytes(raw[cursor : cursor + 2], "little")
            records.append(decode_extra_record(raw[cursor + 2 : cursor + 2 + length]))
            cursor += 2 + length
        if cursor != len(raw) - 1:
            raise DecodeError("~E records do not fill the frame")
        return FlexMessage("E", records, ack_extra_archive(count))
    if letter == "X":
        event_index = int.from_bytes(raw[2:6], "little")
        length = int.from_bytes(raw[6:8], "little")
        if len(raw) != 9 + length:
            raise DecodeError("~X length does not match its record length")
        return FlexMessage(
            "X", [decode_extra_record(raw[8 : 8 + length])], ack_extra_event(event_index), event_index
        )
    raise DecodeError(f"not a FLEX telemetry message: ~{letter}")


# Static part of an extra record, version 10 (DOC App. A.2): after the version and length bytes.
_EXTRA_STATIC = struct.Struct("<IHIBIiiifHf")
_EXTRA_STATIC_VERSION = 10
_ITEM_U64 = {1, 3}  # Touch-Memory key, RFID tag


def decode_extra_record(body: bytes) -> ExtraRecord:
    """Decode one FLEX 2.0 extra record (the bytes after its U16 length)."""
    if len(body) < 2:
        raise DecodeError("extra record shorter than its static header")
    version, static_length = body[0], body[1]
    if version != _EXTRA_STATIC_VERSION:
        raise DecodeError(f"unknown extra-record static version {version}")
    if static_length < _EXTRA_STATIC.size or 2 + static_length > len(body):
        raise DecodeError("extra-record static part has a wrong length")
    (index, event, event_time, nav, fix_time, lat, lon, alt, speed, course, mileage) = (
        _EXTRA_STATIC.unpack_from(body, 2)
    )
    # A longer static part (a future version) is skipped up to its declared length.
    cursor = 2 + static_length
    items = []
    while cursor < len(body):
        if cursor + 2 > len(body):
            raise DecodeError("truncated extra-record item header")
        item_type, item_length = body[cursor], body[cursor + 1]
        value = body[cursor + 2 : cursor + 2 + item_length]
        if len(value) != item_length:
            raise DecodeError("extra-record item runs past the record")
        if item_type in _ITEM_U64 and item_length == 8:
            items.append(ExtraItem(item_type, int.from_bytes(value, "little")))
        else:
            items.append(ExtraItem(item_type, bytes(value)))
        cursor += 2 + item_length
    return ExtraRecord(
        index=index,
        event_code=event,
        device_time=unix_to_datetime(event_time),
        valid=bool(nav & 2),
        satellites=nav >> 2,
        fix_time=unix_to_datetime(fix_time),
        latitude=lat / 600000,
        longitude=lon / 600000,
        altitude_m=alt / 10,
        speed_kmh=speed,
        course=course,
        odometer_km=mileage,
        items=tuple(items),
        static_version=version,
        raw=bytes(body),
    )
