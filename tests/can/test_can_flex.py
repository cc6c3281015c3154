"""FLEX record CAN fields map to the same canonical names as decoded CAN frames."""

from __future__ import annotations

from typing import Any

import pytest

from fleet.can import CanDecoder, CanSignal, flex_can_signals


def one(fields: dict[int, Any]) -> CanSignal:
    signals = flex_can_signals(fields)
    assert len(signals) == 1, signals
    return signals[0]


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        (54, 12345.5, CanSignal("fuel_used_total", 12345.5, "l", "FLEX:F54")),
        (55, 1726, CanSignal("engine_speed", 1726, "rpm", "FLEX:F55")),
        (56, -12, CanSignal("coolant_temperature", -12, "°C", "FLEX:F56")),
        (57, 250000.25, CanSignal("vehicle_distance", 250000.25, "km", "FLEX:F57")),
        (58, 7500, CanSignal("axle_weight_1", 7500, "kg", "FLEX:F58")),
        (62, 6100, CanSignal("axle_weight_5", 6100, "kg", "FLEX:F62")),
        (63, 40, CanSignal("accelerator_pedal", 40, "%", "FLEX:F63")),
        (64, 15, CanSignal("brake_pedal", 15, "%", "FLEX:F64")),
        (65, 55, CanSignal("engine_load", 55, "%", "FLEX:F65")),
        (67, 36_000_180, CanSignal("engine_hours", 10000.05, "h", "FLEX:F67")),
        (68, 300, CanSignal("service_distance", 1500, "km", "FLEX:F68")),  # 5 km units
        (69, 80, CanSignal("vehicle_speed", 80, "km/h", "FLEX:F69")),
    ],
)
def test_numeric_fields(field: int, value: Any, expected: CanSignal) -> None:
    assert one({field: value}) == expected


@pytest.mark.parametrize(
    ("field", "value"),
    [
        (54, None),
        (54, -1.0),  # float fields say "not read" with a negative number
        (54, float("nan")),
        (55, 0xFFFF),
        (56, -128),
        (57, -1.0),
        (60, 0xFFFF),
        (63, 0xFF),
        (64, 0xFF),
        (65, 0xFF),
        (67, None),
        (68, -1),
        (69, 0xFF),
    ],
)
def test_not_read_is_none(field: int, value: Any) -> None:
    signal = one({field: value})
    assert signal.value is None
    assert signal.source == f"FLEX:F{field}"


class TestLevels:
    @pytest.mark.parametrize(
        ("value", "name", "level", "unit"),
        [
            ({"percent": 62}, "fuel_level", 62, "%"),
            ({"litres": 310.5}, "fuel_level_volume", 310.5, "l"),
            ({"liters": 310.5}, "fuel_level_volume", 310.5, "l"),
            (("percent", 62), "fuel_level", 62, "%"),
            ((310.5, "l"), "fuel_level_volume", 310.5, "l"),
            (0x8000 | 62, "fuel_level", 62, "%"),  # the raw U16: bit 15 = percent
            (3105, "fuel_level_volume", 310.5, "l"),  # the raw U16: 0.1 l units
            (None, "fuel_level", None, "%"),
            (0x7FFF, "fuel_level", None, "%"),
            ({"percent": None}, "fuel_level", None, "%"),
        ],
    )
    def test_fuel_level_shapes(self, value: Any, name: str, level: Any, unit: str) -> None:
        assert one({53: value}) == CanSignal(name, level, unit, "FLEX:F53")

    def test_adblue(self) -> None:
        assert one({66: {"percent": 45}}) == CanSignal("adblue_level", 45, "%", "FLEX:F66")
        assert one({66: {"litres": 20.0}}) == CanSignal("adblue_level_volume", 20.0, "l", "FLEX:F66")
        assert one({66: None}) == CanSignal("adblue_level", None, "%", "FLEX:F66")

    @pytest.mark.parametrize("value", [{"gallons": 3}, "62%", 12.5, (1, 2), [], True, -1, 0x10000])
    def test_unreadable_shapes_are_skipped(self, value: Any) -> None:
        assert flex_can_signals({53: value}) == []


def test_security_flags() -> None:
    # Ignition, driver door, hand brake, engine running.
    flags = 1 << 0 | 1 << 8 | 1 << 12 | 1 << 14
    got = {s.name: s.value for s in flex_can_signals({201: flags})}
    assert got["ignition"] == 1
    assert got["driver_door_open"] == 1
    assert got["parking_brake"] == 1
    assert got["engine_running"] == 1
    assert got["brake_switch"] == 0
    assert got["hood_open"] == 0
    assert len(got) == 15
    assert {s.source for s in flex_can_signals({201: flags})} == {"FLEX:F201"}


def test_security_event_and_warning_lamps() -> None:
    assert one({202: 2}) == CanSignal("security_last_event", "unlocked_by_key_fob", None, "FLEX:F202")
    assert one({202: 9}).value == "event_9"
    lamps = {s.name: s.value for s in flex_can_signals({203: 1 << 1 | 1 << 8 | 1 << 31})}
    assert lamps["dashboard_warning_lamps"] == 1 << 1 | 1 << 8 | 1 << 31
    assert (lamps["warning_oil"], lamps["warning_check_engine"], lamps["warning_stop"]) == (1, 1, 0)


@pytest.mark.parametrize(
    "value",
    [
        {"lamps": 0b0001_0011, "dtc": 0x1234},
        (0b0001_0011, 0x1234),
        bytes([0b0001_0011]) + (0x1234).to_bytes(4, "little"),
        0x1234 << 8 | 0b0001_0011,
    ],
)
def test_malfunction_lamps_and_dtc(value: Any) -> None:
    got = {s.name: s.value for s in flex_can_signals({204: value})}
    assert got == {
        "mil_lamp": "flashing",
        "red_stop_lamp": "on",
        "amber_warning_lamp": "off",
        "protect_lamp": "off",
        "dtc_code": 0x1234,
    }


def test_malfunction_without_code() -> None:
    assert [s.name for s in flex_can_signals({204: (0, 0)})] == [
        "mil_lamp",
        "red_stop_lamp",
        "amber_warning_lamp",
        "protect_lamp",
    ]
    assert flex_can_signals({204: "broken"}) == []
    assert flex_can_signals({204: {"lamps": 300, "dtc": 1}}) == []


def test_only_can_fields_in_field_order() -> None:
    fields = {1: 17, 69: 80, 13: 55.5, 55: 1500, 201: None, 70: b"\x00" * 8}
    assert [(s.name, s.source) for s in flex_can_signals(fields)][:2] == [
        ("engine_speed", "FLEX:F55"),
        ("vehicle_speed", "FLEX:F69"),
    ]
    assert all(s.value is None for s in flex_can_signals(fields)[2:])
    assert flex_can_signals({}) == []


@pytest.mark.parametrize("bad", ["1500", True, [1500], {"rpm": 1500}, float("inf")])
def test_wrong_types_never_raise(bad: Any) -> None:
    for field in range(53, 70):
        flex_can_signals({field: bad})
    for field in range(201, 205):
        flex_can_signals({field: bad})


def test_same_names_and_units_as_can_frames() -> None:
    """A FLEX record and a J1939 frame with the same readings give the same name/value/unit."""
    decoder = CanDecoder()
    frames = [
        (0x0CF00400, bytes([0xFF, 0xFF, 0xFF, 0x80, 0x3E, 0xFF, 0xFF, 0xFF])),  # 2000 rpm
        (0x18FEF100, bytes([0xFF, 0x00, 0x50, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF])),  # 80 km/h
        (0x18FEEE00, bytes([0x78] + [0xFF] * 7)),  # 80 degC
        (0x18FEE900, (0).to_bytes(4, "little") + (2001).to_bytes(4, "little")),  # 1000.5 l
        (0x18FEE500, (200_000).to_bytes(4, "little") + b"\xff" * 4),  # 10000 h
        (0x18FEC1EE, (200_000).to_bytes(4, "little") + b"\xff" * 4),  # 1000 km
        (0x18FEEA0F, bytes([0x1F, 0x98, 0x3A, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF])),  # axle 1: 7500 kg
        (0x18FEFC17, bytes([0xFF, 0xC8, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF])),  # 80 %
        (0x0CF00300, bytes([0xFF, 0x64, 0x37, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF])),  # 40 %, 55 %
    ]
    from_can = {(s.name, s.value, s.unit) for can_id, data in frames for s in decoder.decode(can_id, data)}
    flex = {
        55: 2000,
        69: 80,
        56: 80,
        54: 1000.5,
        67: 36_000_000,
        57: 1000,
        58: 7500,
        53: {"percent": 80},
        63: 40,
        65: 55,
    }
    from_flex = {(s.name, s.value, s.unit) for s in flex_can_signals(flex)}
    assert from_flex <= from_can


def test_wire_values_of_a_decoded_flex_record() -> None:
    """The contract with fleet.protocol.navtelecom: FlexRecord.fields in, canonical signals out."""
    from fleet.protocol.navtelecom import layout_for_fields
    from fleet.protocol.navtelecom.encoder import build_record

    layout = layout_for_fields((*range(53, 70), 201, 202, 203, 204))
    wire = {
        53: 0x8000 | 62,  # 62 %
        54: 15000.5,
        55: 0xFFFF,  # not read
        56: 85,
        57: -1.0,  # not read
        58: 7100,
        63: 0xFF,  # not read
        66: 205,  # 20.5 l
        67: 36_000_000,
        68: 400,  # 400 * 5 km
        69: 72,
        201: 1 | 1 << 14,
        202: 1,
        203: 1 << 8,
        204: (0b0000_0001, 0x00FA_0203),
    }
    record = layout.decode_one(build_record(layout, fields=wire))
    got = {s.name: (s.value, s.unit) for s in flex_can_signals(record.fields)}
    assert got["fuel_level"] == (62, "%")
    assert got["fuel_used_total"] == (15000.5, "l")
    assert got["engine_speed"] == (None, "rpm")
    assert got["coolant_temperature"] == (85, "°C")
    assert got["vehicle_distance"] == (None, "km")
    assert got["axle_weight_1"] == (7100, "kg")
    assert got["axle_weight_2"] == (0, "kg")
    assert got["accelerator_pedal"] == (None, "%")
    assert got["adblue_level_volume"] == (20.5, "l")
    assert got["engine_hours"] == (10000.0, "h")
    assert got["service_distance"] == (2000, "km")
    assert got["vehicle_speed"] == (72, "km/h")
    assert (got["ignition"], got["engine_running"], got["driver_door_open"]) == (
        (1, None),
        (1, None),
        (0, None),
    )
    assert got["security_last_event"] == ("locked_by_key_fob", None)
    assert got["warning_check_engine"] == (1, None)
    assert got["mil_lamp"] == ("on", None)
    assert got["dtc_code"] == (0x00FA_0203, None)
