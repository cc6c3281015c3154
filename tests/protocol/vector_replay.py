"""Replaying recorded vectors through a session, and checking decoded values against their references."""

from __future__ import annotations

import struct
from datetime import UTC, datetime
from typing import Any

import pytest

from fleet.protocol.navtelecom import (
    CommandAnswer,
    FlexRecord,
    KeepAlive,
    LegacyRecord,
    NavtelecomSession,
    Negotiation,
    Output,
    Reply,
    Telemetry,
    mask_from_fields,
)
from fleet.protocol.navtelecom.fields import field_spec

from .conftest import Vector, load_vectors


def utc(text: str) -> datetime:
    """Parse '2019-01-17 10:23:20[.000]' as UTC."""
    return datetime.strptime(text.split(".")[0], "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)


def _mask_fields(group: list[Vector]) -> list[int] | None:
    """Find the field set of a group that has FLEX frames but no negotiation packet."""
    for vector in group:
        bits = vector.expects.get("bitfield_bits")
        if bits:
            return [i + 1 for i, bit in enumerate(bits) if bit == "1"]
        fields = vector.reference.get("fields_from_negotiation")
        if fields:
            return list(fields)
    # Frame-decoder tests only force a record size: take the field set another test decoded the same
    # frame with.
    for vector in group:
        for other in load_vectors():
            if other.raw == vector.raw and other.reference.get("fields_from_negotiation"):
                return list(other.reference["fields_from_negotiation"])
    return None


def session_for(group: list[Vector]) -> NavtelecomSession:
    """Return a fresh session for a group, pre-negotiated when the group carries its mask out of band."""
    if any(v.kind == "flex_negotiation" for v in group) or not any(v.raw[:1] == b"~" for v in group):
        return NavtelecomSession()
    fields = _mask_fields(group)
    assert fields is not None, "group with FLEX frames but no mask"
    mask = mask_from_fields(fields, 69 if max(fields) <= 69 else 255)
    bit_count = 69 if max(fields) <= 69 else 255
    return NavtelecomSession.restore(
        Negotiation(10 if bit_count == 69 else 30, 10 if bit_count == 69 else 30, bit_count, mask)
    )


def replay(group: list[Vector], chunks: str) -> list[list[Output]]:
    """Feed a group's vectors ('whole': one feed per vector; 'bytes': byte by byte; 'one': a single feed).

    Returns the outputs attributed to each vector (for 'one', all outputs under the first vector).
    """
    session = session_for(group)
    result: list[list[Output]] = []
    if chunks == "one":
        outputs = session.feed(b"".join(v.raw for v in group))
        return [outputs] + [[] for _ in group[1:]]
    for vector in group:
        outputs: list[Output] = []
        if chunks == "whole":
            outputs = session.feed(vector.raw)
        else:
            for i in range(len(vector.raw)):
                outputs.extend(session.feed(vector.raw[i : i + 1]))
        result.append(outputs)
    return result


def approx(expected: float, tolerance: float) -> Any:
    return pytest.approx(expected, abs=tolerance)


def _field_hex(record: FlexRecord, number: int) -> str:
    spec = field_spec(number, record.layout.field100_size)
    value = record.fields[number]
    items = value if isinstance(value, tuple) else (value,)
    return struct.pack("<" + spec.fmt, *items).hex()


def check_flex_reference(record: FlexRecord, ref: dict[str, Any]) -> None:
    """Compare a decoded FLEX record with an independently decoded reference record."""
    checks = {
        "index": lambda: record.index == ref["index"],
        "event": lambda: record.event_code == ref["event"],
        "event_time": lambda: record.device_time == utc(ref["event_time"]),
        "status": lambda: (
            record.fields[4] == ref["status"] and record.attributes["device_status"] == ref["status"]
        ),
        "modules1": lambda: record.fields[5] == ref["modules1"],
        "modules2": lambda: record.fields[6] == ref["modules2"],
        "gsm": lambda: record.fields[7] == ref["gsm"],
        "nav_valid": lambda: record.valid is ref["nav_valid"],
        "nav_on": lambda: bool(record.fields[8] & 1) is ref["nav_on"],
        "sats": lambda: record.satellites == ref["sats"],
        "fix_time": lambda: record.fix_time == utc(ref["fix_time"]),
        "lat": lambda: record.latitude == approx(ref["lat"], 1e-5),
        "lon": lambda: record.longitude == approx(ref["lon"], 1e-5),
        "alt_m": lambda: record.altitude_m == approx(ref["alt_m"], 1e-6),
        "speed_kmh": lambda: record.speed_kmh == approx(ref["speed_kmh"], 5e-4),
        "course": lambda: record.course == ref["course"],
        "odometer_km": lambda: record.odometer_km == approx(ref["odometer_km"], 5e-4),
        "segment_km": lambda: record.attributes["segment_km"] == approx(ref["segment_km"], 5e-5),
        "power_mv": lambda: record.fields[19] == ref["power_mv"] and record.power_v == ref["power_mv"] / 1000,
        "battery_mv": lambda: (
            record.fields[20] == ref["battery_mv"] and record.battery_v == ref["battery_mv"] / 1000
        ),
        "in1_8": lambda: record.fields[29] == ref["in1_8"] and record.inputs & 0xFF == ref["in1_8"],
        "out1_8": lambda: record.fields[31] == ref["out1_8"] and record.outputs & 0xFF == ref["out1_8"],
        "temp1": lambda: record.attributes["temperature1_c"] == ref["temp1"],
        "can_fuel_raw": lambda: record.fields[53] == ref["can_fuel_raw"],
        "sat_visible": lambda: (
            list(record.fields[70]) == ref["sat_visible"]
            and list(record.attributes["satellites_visible"]) == ref["sat_visible"]
        ),
        "hdop": lambda: record.hdop == approx(ref["hdop"], 1e-9),
        "pdop": lambda: record.pdop == approx(ref["pdop"], 1e-9),
    }
    for key in ref:
        if key.startswith("f") and key[1:].isdigit():
            assert _field_hex(record, int(key[1:])) == ref[key], key
            continue
        assert key in checks, f"reference key {key!r} not covered by the test"
        assert checks[key](), f"{key}: expected {ref[key]!r}"


def check_legacy_reference(record: LegacyRecord, ref: dict[str, Any]) -> None:
    """Compare a decoded F-format record with its reference."""
    assert record.format == int(ref["format"], 16)
    assert record.index == ref["index"]
    assert record.event_code == ref["event"]
    assert record.armed_raw == ref["armed_raw"]
    assert record.status == ref["status"]
    assert record.gsm_level == ref["rssi"]
    assert record.outputs == ref["output"]
    assert record.satellites == ref["sat"]
    assert record.inputs == ref["input"]
    assert record.power_v == approx(ref["power_v"], 1e-9)
    assert record.battery_v == approx(ref["battery_v"], 1e-9)
    assert record.adc[:2] == (ref["adc1"], ref["adc2"])
    assert record.valid is ref["valid"]
    assert record.fix_time == utc(ref["fix_time"])
    assert record.latitude == approx(ref["lat"], 1e-5)
    assert record.longitude == approx(ref["lon"], 1e-5)
    assert record.speed_kmh == approx(ref["speed_kmh"], 5e-4)
    assert record.course == ref["course"]
    assert record.odometer_km == approx(ref["odometer_km"], 5e-4)
    assert record.segment_km == approx(ref["distance_km"], 5e-4)
    assert [(-128 if t is None else t) for t in record.temperatures_c] == ref["temps"]


def check_vector(vector: Vector, outputs: list[Output], session: NavtelecomSession | None = None) -> None:
    """Check the outputs of one vector against its expects/reference."""
    ref, exp = vector.reference, vector.expects
    if vector.call == "verifyCommand":
        return  # server->device encoding; covered by the encoder test
    assert len(outputs) == 1, outputs
    (out,) = outputs
    reply = vector.reply
    if vector.kind == "handshake":
        assert isinstance(out, Reply)
        assert out.data == reply
        if session is not None and "imei" in ref:
            assert session.imei == ref["imei"]
    elif vector.kind == "flex_negotiation":
        assert isinstance(out, Reply)
        assert out.data == reply
        if session is not None:
            assert session.layout is not None
            fields = ref.get("fields") or exp.get("fields")
            assert list(session.layout.fields) == fields
            if "record_size" in ref:
                assert session.layout.size == ref["record_size"]
            if "protocol_version" in ref:
                assert session.negotiation is not None
                assert session.negotiation.protocol_version == ref["protocol_version"]
                assert session.negotiation.struct_version == ref["struct_version"]
                assert session.negotiation.bit_count == ref["data_size_bits"]
                assert session.mask == bytes.fromhex(ref["bitfield_hex"])
    elif exp.get("frame", "missing") is None:  # a ping: nothing to decode, nothing to answer
        assert isinstance(out, KeepAlive)
    elif vector.kind in ("A", "T", "C", "E", "X"):
        assert isinstance(out, Telemetry), out
        assert out.kind.value == vector.kind
        assert out.raw == vector.raw
        if reply is not None:
            assert out.ack == reply
        if "event_index" in ref:
            assert out.event_index == ref["event_index"]
        if "count" in exp:
            assert len(out.records) == exp["count"]
        for record, record_ref in zip(out.records, ref.get("records", []), strict=False):
            check_flex_reference(record, record_ref)
        if len(out.records) == 1 and isinstance(out.records[0], FlexRecord):
            check_flex_expects(out.records[0], exp)
        if vector.kind == "E":
            check_extra(out, exp, ref)
    else:  # legacy NTCB telemetry
        assert isinstance(out, Telemetry | CommandAnswer), out
        assert isinstance(out, Telemetry)
        assert out.ack == reply
        legacy = ref["legacy_decode"]
        assert len(out.records) == len(legacy["records"])
        for record, record_ref in zip(out.records, legacy["records"], strict=True):
            check_legacy_reference(record, record_ref)
        if "fix_time_utc" in exp:
            record = out.records[0]
            assert record.fix_time == utc(exp["fix_time_utc"])
            assert record.valid is exp["valid"]
            assert record.latitude == approx(exp["latitude"], exp["tolerance_deg"])
            assert record.longitude == approx(exp["longitude"], exp["tolerance_deg"])


def check_flex_expects(record: FlexRecord, exp: dict[str, Any]) -> None:
    """Check the assertions of the originating test on a single-record frame."""
    if "fix_time_utc" in exp:
        assert record.fix_time == utc(exp["fix_time_utc"])
        assert record.valid is exp["valid"]
        assert record.latitude == approx(exp["latitude"], exp["tolerance_deg"])
        assert record.longitude == approx(exp["longitude"], exp["tolerance_deg"])
    for key, value in exp.get("fields", {}).items():
        actual = record.fields[int(key)]
        if isinstance(value, float):
            assert actual == pytest.approx(value, rel=1e-6), key
        else:
            assert actual == value, key
    if "index" in exp:
        assert record.index == exp["index"]
        assert record.event_code == exp["event"]
        assert record.device_time == datetime.fromtimestamp(exp["event_time_unix"], UTC)
        assert record.device_time == utc(exp["event_time_utc"])
        assert record.fields[4] == exp["status"]
        assert record.attributes["gsm_level"] == exp["gsm"]
        assert record.fields[19] == exp["power_mv"]


def check_extra(out: Telemetry, exp: dict[str, Any], ref: dict[str, Any]) -> None:
    """Check a ~E frame against the DOC example's values."""
    (record,) = out.records
    assert int.from_bytes(out.raw[3:5], "little") == exp["record_length_u16le"]
    assert record.static_version == exp["static_version"]
    assert record.raw[1] == exp["static_length"]
    assert record.index == exp["index"]
    assert record.event_code == exp["event"]
    assert record.raw[12] == int(exp["nav_state"], 16)
    assert [
        (item.type, item.value.hex() if isinstance(item.value, bytes) else item.value)
        for item in record.items
    ] == [(d["type"], d["hex"]) for d in exp["dynamic"]]
    assert record.device_time == utc(ref["event_time_utc"])
    assert record.latitude == approx(ref["lat"], 1e-5)
    assert record.longitude == approx(ref["lon"], 1e-5)
    assert record.altitude_m == approx(ref["alt_m"], 1e-6)
    assert out.raw[-1] == int(exp["crc8"], 16)
