"""Encoder-built frames for every FLEX version and random masks: encode → decode gives the values back."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fleet.protocol.navtelecom import (
    ExtraRecord,
    FlexRecord,
    NavtelecomSession,
    Negotiation,
    Reply,
    Telemetry,
    TelemetryKind,
    archive,
    build_record,
    current,
    event,
    extra_archive,
    extra_event,
    extra_record,
    flex_negotiation,
    handshake,
    layout_for_fields,
    mask_from_fields,
    ping,
)

from .conftest import PROTOCOL_SETTINGS
from .strategies import layouts, record_values

FULL = {10: 69, 20: 122, 30: 255}


def negotiated(layout_fields: tuple[int, ...], field100_size: int = 2) -> NavtelecomSession:
    mask = mask_from_fields(layout_fields, 255)
    return NavtelecomSession.restore(Negotiation(30, 30, 255, mask, field100_size))


@PROTOCOL_SETTINGS
@given(st.data())
def test_encode_decode_any_mask(data: st.DataObject) -> None:
    layout = data.draw(layouts())
    values = data.draw(record_values(layout))
    raw = layout.encode(values)
    assert len(raw) == layout.size
    record = layout.decode_one(raw)
    assert record.fields == values
    assert record.raw == raw
    record.as_dict()  # every converter accepts every wire value


@settings(PROTOCOL_SETTINGS, max_examples=40)
@given(st.data())
def test_frames_cut_at_every_position_give_the_same_result(data: st.DataObject) -> None:
    layout = data.draw(layouts().filter(lambda lay: lay.size <= 300))
    records = [layout.encode(data.draw(record_values(layout))) for _ in range(data.draw(st.integers(1, 3)))]
    stream = archive(records) + event(77, records[0]) + ping() + current(records[-1])
    reference = negotiated(layout.fields, layout.field100_size).feed(stream)
    assert [type(out) for out in reference] == [Telemetry, Telemetry, type(reference[2]), Telemetry]
    assert [r.raw for r in reference[0].records] == records
    assert reference[1].event_index == 77
    for cut in range(1, len(stream)):
        session = negotiated(layout.fields, layout.field100_size)
        assert session.feed(stream[:cut]) + session.feed(stream[cut:]) == reference


@pytest.mark.parametrize("version", [10, 20, 30])
def test_full_session_per_flex_version(version: int) -> None:
    fields = tuple(range(1, FULL[version] + 1))
    layout = layout_for_fields(fields)
    when = datetime(2024, 5, 1, 12, 30, 15, tzinfo=UTC)
    named: dict[str, Any] = {
        "index": 41,
        "event_code": 0x1250,
        "device_time": when,
        "fix_time": when,
        "valid": True,
        "satellites": 17,
        "latitude": -33.868820,
        "longitude": 151.209296,
        "altitude_m": 58.3,
        "speed_kmh": 63.25,
        "course": 271,
        "odometer_km": 12345.5,
        "power_v": 27.771,
        "battery_v": 4.185,
        "inputs": 0x0102,
        "outputs": 0x8001,
    }
    if version >= 20:
        named.update(hdop=0.6, pdop=0.9)
    if version == 30:
        named["inputs"] = 0x030102
    record_bytes = build_record(layout, **named, fields={38: 65531, 45: -7})
    device_id = 0x02F6B5C9
    stream = (
        handshake("869696049722825", device_id=device_id)
        + flex_negotiation(fields, version=version, device_id=device_id)
        + archive([record_bytes, record_bytes])
        + event(41, record_bytes)
        + current(record_bytes)
    )
    session = NavtelecomSession()
    outputs = session.feed(stream)
    assert [type(out) for out in outputs] == [Reply, Reply, Telemetry, Telemetry, Telemetry]
    assert session.imei == "869696049722825"
    assert session.negotiation is not None and session.negotiation.struct_version == version
    assert outputs[1].data.endswith(b"*<FLEX\xb0" + bytes((version, version)))
    assert outputs[2].ack == b"~A\x02" + outputs[2].ack[3:] and len(outputs[2].ack) == 4
    assert [out.kind for out in outputs[2:]] == [
        TelemetryKind.ARCHIVE,
        TelemetryKind.EVENT,
        TelemetryKind.CURRENT,
    ]
    for out in outputs[2:]:
        for record in out.records:
            assert isinstance(record, FlexRecord)
            for name, expected in named.items():
                actual = getattr(record, name)
                if isinstance(expected, float):
                    assert actual == pytest.approx(expected, abs=1e-5), name
                else:
                    assert actual == expected, name
            assert record.attributes["fuel_rs485_1_error"] == 65531
            assert record.attributes["temperature1_c"] == -7
    assert session.command("*?V")[4:12] == device_id.to_bytes(4, "little") + b"\x01\x00\x00\x00"


@PROTOCOL_SETTINGS
@given(
    index=st.integers(0, 2**32 - 1),
    event_code=st.integers(0, 0xFFFF),
    key=st.integers(0, 2**64 - 1),
    card=st.binary(min_size=16, max_size=16),
    event_index=st.integers(0, 2**32 - 1),
)
def test_extra_records_round_trip(
    index: int, event_code: int, key: int, card: bytes, event_index: int
) -> None:
    when = datetime(2023, 1, 2, 3, 4, 5, tzinfo=UTC)
    one = extra_record(
        index=index,
        event_code=event_code,
        device_time=when,
        valid=True,
        satellites=9,
        fix_time=when,
        latitude=55.178877,
        longitude=30.233698,
        altitude_m=180.7,
        speed_kmh=12.5,
        course=90,
        odometer_km=100.25,
        items=[(1, key), (2, card)],
    )
    two = extra_record(index=index, event_code=event_code)
    session = negotiated((1, 2, 3))
    outputs = session.feed(extra_archive([one, two]) + extra_event(event_index, one))
    assert [out.kind for out in outputs] == [TelemetryKind.EXTRA_ARCHIVE, TelemetryKind.EXTRA_EVENT]
    assert outputs[0].ack[:3] == b"~E\x02"
    assert outputs[1].event_index == event_index
    first = outputs[0].records[0]
    assert isinstance(first, ExtraRecord)
    assert (first.index, first.event_code, first.device_time, first.valid, first.satellites) == (
        index,
        event_code,
        when,
        True,
        9,
    )
    assert first.latitude == pytest.approx(55.178877, abs=1e-6)
    assert first.altitude_m == pytest.approx(180.7)
    assert [(item.type, item.value) for item in first.items] == [(1, key), (2, card)]
    assert outputs[0].records[1].items == ()
    assert outputs[1].records[0] == first


def test_nan_floats_survive_the_round_trip() -> None:
    layout = layout_for_fields((13, 54))
    record = layout.decode_one(layout.encode({13: math.nan, 54: math.inf}))
    assert math.isnan(record.speed_kmh) and record.fields[54] == math.inf
