"""Legacy static NTCB telemetry ``*>T``/``*>A`` with F1-F6 records (DOC §1, spec §4.2).

Each format is a sequence of blocks after a common header; the block table below is the data, the
decoder just walks it. Times are six bytes (hour, minute, second, day, month - 1, two-digit year), UTC.
"""

from __future__ import annotations

import math
import struct
from datetime import UTC, datetime
from typing import Any

from .flex import DecodeError
from .records import LegacyRecord

__all__ = ["LEGACY_FORMATS", "decode_legacy_archive", "decode_legacy_single"]

_U8 = struct.Struct("<B")
_U16 = struct.Struct("<H")
_I16 = struct.Struct("<h")
_HEADER = struct.Struct("<IH6sBBB")  # index, event, event time, armed/alarm, status, GSM level
_NAV_RADIANS = struct.Struct(
    "<B6sfffHff2H"
)  # state, time, lat rad, lon rad, speed, course, odo, segment, 2 × s
_NAV_F6 = struct.Struct("<B6siiifHff2H")  # state, time, lat, lon (1/600000 deg), alt dm, speed, ...
_F6_BLOCK = struct.Struct("<28s4biH")  # fuel sensors (kept raw), 4 temperatures, axle weight, rpm

# Format id -> blocks after the common header (DOC §1: F1..F6, F5.1 = 0x15, F5.2 = 0x25).
LEGACY_FORMATS: dict[int, tuple[str, ...]] = {
    0x01: ("out16", "in16", "power", "temp16", "adc2"),
    0x02: ("out16", "in16", "power", "temp16", "adc2", "counters", "nav_radians"),
    0x03: ("out16", "in16", "power", "temp16"),
    0x04: ("out8", "in16", "power", "temps4"),
    0x05: ("ext8", "in8", "power", "adc2", "counters", "nav_radians"),
    0x15: ("ext8", "in8", "power", "adc2", "counters", "nav_radians", "extra15"),
    0x25: ("ext8", "in8", "power", "adc2", "counters", "nav_radians", "extra15", "temps4"),
    0x06: ("out8", "in8", "power", "adc3", "counters", "f6", "nav_f6"),
}


def _six_byte_time(raw: bytes) -> datetime | None:
    hour, minute, second, day, month0, year = raw
    try:
        return datetime(2000 + year, month0 + 1, day, hour, minute, second, tzinfo=UTC)
    except ValueError:
        return None


def _temperatures(values: tuple[int, ...]) -> tuple[int | None, ...]:
    return tuple(None if value == -128 else value for value in values)


def decode_legacy_record(data: bytes, offset: int) -> tuple[LegacyRecord, int]:
    """Decode one F-format record at ``offset``; return it and the offset after it."""
    try:
        return _decode(data, offset)
    except struct.error as err:
        raise DecodeError(f"truncated legacy record: {err}") from err


def _decode(data: bytes, offset: int) -> tuple[LegacyRecord, int]:
    start = offset
    if offset >= len(data):
        raise DecodeError("legacy record missing")
    if data[offset] == 0:
        fmt = _U16.unpack_from(data, offset)[0]
        offset += 2
    else:
        fmt = data[offset]
        offset += 1
    blocks = LEGACY_FORMATS.get(fmt)
    if blocks is None:
        raise DecodeError(f"unknown legacy record format 0x{fmt:02X}")
    index, event, event_time, armed, status, gsm = _HEADER.unpack_from(data, offset)
    offset += _HEADER.size
    values: dict[str, Any] = {}
    for block in blocks:
        if block == "out16":
            values["outputs"] = _U16.unpack_from(data, offset)[0]
            offset += 2
        elif block == "out8":
            values["outputs"] = _U8.unpack_from(data, offset)[0]
            offset += 1
        elif block == "ext8":
            ext = _U8.unpack_from(data, offset)[0]
            values["outputs"] = ext & 0x03
            values["satellites"] = ext >> 2
            offset += 1
        elif block == "in16":
            values["inputs"] = _U16.unpack_from(data, offset)[0]
            offset += 2
        elif block == "in8":
            values["inputs"] = _U8.unpack_from(data, offset)[0]
            offset += 1
        elif block == "power":
            power, battery = struct.unpack_from("<2H", data, offset)
            values["power_v"] = power / 1000
            values["battery_v"] = battery / 1000
            offset += 4
        elif block == "temp16":
            values["temperature_c"] = _I16.unpack_from(data, offset)[0]
            offset += 2
        elif block in ("adc2", "adc3"):
            count = 2 if block == "adc2" else 3
            values["adc"] = struct.unpack_from(f"<{count}H", data, offset)
            offset += 2 * count
        elif block == "counters":
            values["counters"] = struct.unpack_from("<2I", data, offset)
            offset += 8
        elif block == "f6":
            fuel, t1, t2, t3, t4, axle, rpm = _F6_BLOCK.unpack_from(data, offset)
            values.update(
                fuel_raw=fuel, temperatures_c=_temperatures((t1, t2, t3, t4)), axle_weight=axle, rpm=rpm
            )
            offset += _F6_BLOCK.size
        elif block == "nav_radians":
            state, fix, lat, lon, speed, course, odometer, segment, s1, s2 = _NAV_RADIANS.unpack_from(
                data, offset
            )
            offset += _NAV_RADIANS.size
            values.update(
                valid=bool(state & 2),
                fix_time=_six_byte_time(fix),
                latitude=math.degrees(lat),
                longitude=math.degrees(lon),
                speed_kmh=speed,
                course=course,
                odometer_km=odometer,
                segment_km=segment,
                segment_times_s=(s1, s2),
            )
        elif block == "nav_f6":
            state, fix, lat, lon, alt, speed, course, odometer, segment, s1, s2 = _NAV_F6.unpack_from(
                data, offset
            )
            offset += _NAV_F6.size
            values.update(
                valid=bool(state & 2),
                satellites=state >> 2,
                fix_time=_six_byte_time(fix),
                latitude=lat / 600000,
                longitude=lon / 600000,
                altitude_m=alt / 10,
                speed_kmh=speed,
                course=course,
                odometer_km=odometer,
                segment_km=segment,
                segment_times_s=(s1, s2),
            )
        elif block == "extra15":
            values["extra_raw"] = bytes(data[offset : offset + 15])
            if len(values["extra_raw"]) != 15:
                raise DecodeError("truncated legacy record")
            offset += 15
        elif block == "temps4":
            values["temperatures_c"] = _temperatures(struct.unpack_from("<4b", data, offset))
            offset += 4
    record = LegacyRecord(
        format=fmt,
        index=index,
        event_code=event,
        device_time=_six_byte_time(event_time),
        armed_raw=armed,
        status=status,
        gsm_level=gsm,
        outputs=values.pop("outputs"),
        inputs=values.pop("inputs"),
        power_v=values.pop("power_v"),
        battery_v=values.pop("battery_v"),
        raw=bytes(data[start:offset]),
        **values,
    )
    return record, offset


def decode_legacy_single(body: bytes) -> LegacyRecord:
    """Decode the body of ``*>T`` (one record after the 3-byte prefix)."""
    record, end = decode_legacy_record(body, 3)
    if end != len(body):
        raise DecodeError("*>T body longer than its record")
    return record


def decode_legacy_archive(body: bytes) -> list[LegacyRecord]:
    """Decode the body of ``*>A`` (count U8 and that many records after the 3-byte prefix)."""
    if len(body) < 4:
        raise DecodeError("*>A body without a record count")
    count = body[3]
    offset = 4
    records = []
    for _ in range(count):
        record, offset = decode_legacy_record(body, offset)
        records.append(record)
    if offset != len(body):
        raise DecodeError("*>A body does not match its records")
    return records
