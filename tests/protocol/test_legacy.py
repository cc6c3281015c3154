"""Legacy NTCB telemetry *>T / *>A with static F-format records."""

from __future__ import annotations

import math
import struct
from datetime import UTC, datetime

import pytest

from fleet.protocol.navtelecom import LegacyRecord, NavtelecomSession, RejectCode, Telemetry, TelemetryKind
from fleet.protocol.navtelecom.flex import DecodeError
from fleet.protocol.navtelecom.legacy import LEGACY_FORMATS, decode_legacy_single
from fleet.protocol.navtelecom.ntcb import build_packet

TIME = bytes((21, 0, 4, 11, 10, 16))  # 2016-11-11 21:00:04: hour, minute, second, day, month - 1, year


def header(fmt: int, index: int = 501475, event: int = 5889) -> bytes:
    return bytes((fmt,)) + struct.pack("<IH", index, event) + TIME + bytes((0x30, 0x21, 0x0C))


def f6_record() -> bytes:
    body = header(0x06)
    body += bytes((0x05, 0x81)) + struct.pack("<HH", 12600, 4100)  # outputs, inputs, power, battery
    body += struct.pack("<3H2I", 1, 2, 3, 10, 20)  # adc1-3, counters
    body += bytes(28) + struct.pack("<4biH", 21, -128, 5, -128, 7000, 2100)  # fuel, temps, axle, rpm
    body += (
        bytes((0x2B,))
        + TIME
        + struct.pack("<iiifHff2H", 33_803_978, 26_284_574, 929, 47.5, 90, 12.5, 0.25, 30, 29)
    )
    return body


def test_f6_record_decodes_every_block() -> None:
    record = decode_legacy_single(b"*>T" + f6_record())
    assert record.format == 6 and record.index == 501475 and record.event_code == 5889
    assert record.device_time == datetime(2016, 11, 11, 21, 0, 4, tzinfo=UTC)
    assert (record.outputs, record.inputs, record.power_v, record.battery_v) == (5, 0x81, 12.6, 4.1)
    assert record.adc == (1, 2, 3) and record.counters == (10, 20)
    assert record.temperatures_c == (21, None, 5, None) and (record.axle_weight, record.rpm) == (7000, 2100)
    assert record.valid and record.satellites == 10
    assert record.latitude == pytest.approx(56.339963, abs=1e-6) and record.altitude_m == pytest.approx(92.9)
    assert (record.speed_kmh, record.course, record.odometer_km, record.segment_km) == (47.5, 90, 12.5, 0.25)
    assert record.segment_times_s == (30, 29) and record.fuel_raw == bytes(28)


def test_u16_format_id_and_radian_formats() -> None:
    # A leading 0 announces a U16 (little-endian) format id; none is defined, so it is a format error.
    with pytest.raises(DecodeError, match="0x600"):
        decode_legacy_single(b"*>T\x00\x06" + f6_record()[1:])
    nav = (
        bytes((0x02,))
        + TIME
        + struct.pack("<fffHff2H", math.radians(53.5), math.radians(-87.25), 10.0, 5, 1.0, 0.5, 1, 2)
    )
    f2 = header(0x02) + struct.pack("<HHHHhHH2I", 3, 4, 12000, 4000, -5, 7, 8, 1, 2) + nav
    record = decode_legacy_single(b"*>T" + f2)
    assert (record.outputs, record.inputs, record.temperature_c, record.adc) == (3, 4, -5, (7, 8))
    assert record.latitude == pytest.approx(53.5) and record.longitude == pytest.approx(-87.25)
    assert record.satellites is None and record.valid is True
    f4 = (
        header(0x04)
        + bytes((0x0F,))
        + struct.pack("<HHH", 0x1234, 12000, 4000)
        + struct.pack("<4b", 1, 2, 3, -128)
    )
    record = decode_legacy_single(b"*>T" + f4)
    assert record.temperatures_c == (1, 2, 3, None) and record.fix_time is None


def test_every_format_is_known_by_its_blocks() -> None:
    assert sorted(LEGACY_FORMATS) == [0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x15, 0x25]


def test_archive_of_two_records_and_its_ack() -> None:
    body = b"*>A\x02" + f6_record() + f6_record()
    packet = build_packet(body, 0, 4)
    session = NavtelecomSession()
    (out,) = session.feed(packet)
    assert isinstance(out, Telemetry) and out.kind is TelemetryKind.LEGACY_ARCHIVE
    assert len(out.records) == 2 and all(isinstance(r, LegacyRecord) for r in out.records)
    assert out.ack == build_packet(b"*<A\x02", 4, 0)


def test_single_record_ack_carries_its_index() -> None:
    (out,) = NavtelecomSession().feed(build_packet(b"*>T" + f6_record(), 1, 0))
    assert out.kind is TelemetryKind.LEGACY_SINGLE and out.ack == build_packet(
        b"*<T" + (501475).to_bytes(4, "little"), 0, 1
    )


def test_wrong_lengths_are_format_errors() -> None:
    session = NavtelecomSession()
    outputs = session.feed(
        build_packet(b"*>T" + f6_record() + b"\x00", 1, 0)
        + build_packet(b"*>A\x02" + f6_record(), 1, 0)
        + build_packet(b"*>A", 1, 0)
    )
    assert [out.code for out in outputs] == [
        RejectCode.BAD_FORMAT,
        RejectCode.BAD_FORMAT,
        RejectCode.UNKNOWN_MESSAGE,
    ]


def test_invalid_six_byte_time_is_none() -> None:
    record = bytearray(f6_record())
    record[10] = 40  # day 40
    assert decode_legacy_single(b"*>T" + bytes(record)).device_time is None
