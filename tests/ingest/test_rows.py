"""Row building: the values that would make PostgreSQL refuse a whole batch never reach it."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fleet.db.queries.ingest import CAN_COLUMNS, EVENT_COLUMNS, POSITION_COLUMNS
from fleet.protocol import rows as rows_module
from fleet.protocol.navtelecom import (
    NavtelecomSession,
    Telemetry,
    TelemetryKind,
    archive,
    build_record,
    event,
    flex_negotiation,
    handshake,
    layout_for_fields,
)
from fleet.protocol.navtelecom.fields import field_spec
from fleet.protocol.navtelecom.rows import RowBuilder
from fleet.protocol.rows import NO_INDEX, to_json

FIELDS = (1, 2, 3, 8, 9, 10, 11, 13, 69)
NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def decode(frame: bytes, fields: tuple[int, ...] = FIELDS) -> Telemetry:
    session = NavtelecomSession()
    session.feed(handshake("123456789012345"))
    session.feed(flex_negotiation(fields, version=20, bit_count=122))
    (output,) = session.feed(frame)
    assert isinstance(output, Telemetry)
    return output


def column(row: tuple[object, ...], name: str, columns: tuple[str, ...] = POSITION_COLUMNS) -> object:
    return row[columns.index(name)]


@pytest.mark.parametrize("accelerated", [True, False])
def test_json_is_valid_for_jsonb(monkeypatch: pytest.MonkeyPatch, accelerated: bool) -> None:
    if not accelerated:
        monkeypatch.setattr(rows_module, "orjson", None)
    text = to_json(
        {"nan": math.nan, "inf": -math.inf, "raw": b"\x01\xff", "pair": (1, 2), "when": NOW, "big": 2**70}
    )
    assert json.loads(text) == {
        "nan": None,
        "inf": None,
        "raw": "01ff",
        "pair": [1, 2],
        "when": NOW.isoformat(),
        "big": 2**70,
    }


def test_flex_record_row() -> None:
    layout = layout_for_fields(FIELDS)
    record = build_record(
        layout,
        index=7,
        event_code=0x1250,
        device_time=1_767_225_600,
        fix_time=1_767_225_599,
        valid=True,
        satellites=8,
        latitude=55.5,
        longitude=37.25,
        speed_kmh=math.nan,
        fields={69: 57},
    )
    out = RowBuilder().telemetry(42, decode(archive([record])), NOW)
    (row,) = out.positions
    assert column(row, "device_id") == 42 and column(row, "record_index") == 7
    assert column(row, "device_time") == 1_767_225_600  # epoch seconds, to_timestamp() in SQL
    assert column(row, "fix_time") == 1_767_225_599
    assert column(row, "valid") is True and column(row, "satellites") == 8
    assert column(row, "latitude") == pytest.approx(55.5) and column(row, "longitude") == pytest.approx(37.25)
    assert column(row, "speed") is None  # NaN would be stored as NaN in `real`: treated as unknown
    json.loads(str(column(row, "attributes")))
    (can,) = out.can  # one reading per record, whatever the number of its signals
    assert json.loads(str(column(can, "signals", CAN_COLUMNS))) == [
        {"name": "vehicle_speed", "value": 57.0, "unit": "km/h", "source": "FLEX:F69"}
    ]
    assert column(can, "record_index", CAN_COLUMNS) == 7  # linked to its position
    assert column(can, "frame", CAN_COLUMNS) == ""
    assert out.events == []  # archive records are not events


def test_out_of_range_coordinates_and_missing_times() -> None:
    layout = layout_for_fields((1, 10, 11))
    record = layout.encode({1: 3, 10: 600000 * 200, 11: 600000 * 10})
    (row,) = RowBuilder().telemetry(1, decode(archive([record]), (1, 10, 11)), NOW).positions
    assert column(row, "latitude") is None and column(row, "longitude") is None
    attributes = json.loads(str(column(row, "attributes")))
    assert attributes["invalid_latitude"] == pytest.approx(200.0)
    assert column(row, "device_time") == NOW.timestamp()  # no event time, no fix time: the reception time


def test_missing_index_and_not_available_can_values() -> None:
    layout = layout_for_fields((3, 69))
    record = layout.encode({3: 1_767_225_600, 69: 0xFF})
    out = RowBuilder().telemetry(1, decode(archive([record]), (3, 69)), NOW)
    assert column(out.positions[0], "record_index") == NO_INDEX
    assert out.can == []  # "not available" is not a value worth a row


def test_out_of_turn_record_is_also_an_event() -> None:
    layout = layout_for_fields(FIELDS)
    record = build_record(layout, index=9, event_code=0x1301, device_time=1_767_225_600)
    out = RowBuilder().telemetry(5, decode(event(9, record)), NOW)
    assert len(out.positions) == 1
    (row,) = out.events
    assert column(row, "event_type", EVENT_COLUMNS) == "alarm"
    assert (
        column(row, "event_code", EVENT_COLUMNS) == 0x1301 and column(row, "record_index", EVENT_COLUMNS) == 9
    )
    assert json.loads(str(column(row, "attributes", EVENT_COLUMNS))) == {"frame": "T", "event_index": 9}


# Layouts of the simulator's FLEX profiles plus sparse ones that leave core fields out.
LAYOUTS = [
    layout_for_fields(fields)
    for fields in (
        (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 29, 37, 45, 69, 70, 71),
        (1, 2, 3, 8, 9, 10, 11, 12, 13, 14, 53, 54, 55, 56, 57, 63, 64, 65, 69),
        (3, 10, 11),
        (1, 8, 71),
        (2, 9, 13, 14),
    )
]
_STRUCT_RANGES = {"B": (0, 255), "b": (-128, 127), "H": (0, 65535), "h": (-32768, 32767)}


@st.composite
def wire_record(draw: st.DrawFn) -> tuple[object, dict[int, object]]:
    layout = draw(st.sampled_from(LAYOUTS))
    values: dict[int, object] = {}
    for number in layout.fields:
        fmt = field_spec(number, layout.field100_size).fmt
        if fmt in ("I", "i"):
            values[number] = draw(
                st.integers(0 if fmt == "I" else -(2**31), 2**32 - 1 if fmt == "I" else 2**31 - 1)
            )
        elif fmt in _STRUCT_RANGES:
            values[number] = draw(st.integers(*_STRUCT_RANGES[fmt]))
        elif fmt == "f":
            values[number] = draw(st.floats(width=32, allow_nan=True, allow_infinity=True))
    return layout, values


@settings(max_examples=300, deadline=None)
@given(wire_record())
def test_fast_path_matches_record_properties(case: tuple[object, dict[int, object]]) -> None:
    """The row builder reads FlexRecord.values directly; it must agree with the codec's properties."""
    layout, values = case
    (record,) = layout.decode(layout.encode(values))  # type: ignore[attr-defined]
    out = RowBuilder().telemetry(1, Telemetry(TelemetryKind.ARCHIVE, [record], b"", b""), NOW)
    (row,) = out.positions

    def epoch(value: datetime | None) -> float | None:
        return None if value is None else value.timestamp()

    expected_fix = epoch(record.fix_time)
    expected_time = epoch(record.device_time) or expected_fix or NOW.timestamp()
    assert column(row, "record_index") == (NO_INDEX if record.index is None else record.index)
    assert column(row, "event_code") == record.event_code
    assert column(row, "device_time") == expected_time
    assert column(row, "fix_time") == expected_fix
    assert column(row, "valid") is bool(record.valid)
    assert column(row, "satellites") == record.satellites
    assert column(row, "course") == record.course
    assert column(row, "hdop") == record.hdop
    assert column(row, "altitude") == record.altitude_m
    speed = record.speed_kmh
    assert column(row, "speed") == (None if speed is None or not math.isfinite(speed) else speed)
    lat, lon = record.latitude, record.longitude
    if lat is not None and lon is not None and -90 <= lat <= 90 and -180 <= lon <= 180:
        assert (column(row, "latitude"), column(row, "longitude")) == (lat, lon)
    else:
        assert column(row, "latitude") is None and column(row, "longitude") is None


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.integers(1, 255), min_size=1, max_size=80, unique=True),
    st.sampled_from([TelemetryKind.ARCHIVE, TelemetryKind.EVENT, TelemetryKind.CURRENT]),
    st.randoms(use_true_random=False),
)
def test_generated_attributes_match_the_recipes(fields: list[int], kind: TelemetryKind, rng: Any) -> None:
    """Attributes (FlexRecord's and the position row's JSON) come from code generated per layout; they hold
    the same keys, in the same order, with the same values as the recipes and properties they replace."""
    layout = layout_for_fields(tuple(sorted(fields)))
    (record,) = layout.decode(bytes(rng.getrandbits(8) for _ in range(layout.size)))
    expected = record.recipe_attributes()
    assert repr(list(record.attributes.items())) == repr(list(expected.items()))
    for name in ("pdop", "odometer_km", "power_v", "battery_v", "inputs", "outputs"):
        value = getattr(record, name)
        if value is not None:
            expected[name] = value
    if kind is not TelemetryKind.ARCHIVE:
        expected["frame"] = str(kind)
    rows_module.coordinates(record.latitude, record.longitude, expected)
    (row,) = RowBuilder().telemetry(1, Telemetry(kind, [record], b"", b"", 3), NOW).positions
    assert column(row, "attributes") == to_json(expected)
