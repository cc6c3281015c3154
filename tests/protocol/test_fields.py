"""The FLEX field table: sizes from the spec, mask bit mapping, converters, and the published doc."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import pytest

from fleet.protocol.navtelecom import (
    FIELDS,
    LayoutError,
    fields_from_mask,
    layout_for_fields,
    mask_from_fields,
)
from fleet.protocol.navtelecom.docgen import render
from fleet.protocol.navtelecom.layout import layout_for_mask

# Copied from the spec's "copy-paste friendly" size list (§3), as an independent reference.
SPEC_SIZES = """
  4 2 4 1 1 1 1 1 4 4 4 4 4 2 4 4 2 2 2 2
  2 2 2 2 2 2 2 2 1 1 1 1 4 4 2 2 4 2 2 2
  2 2 2 2 1 1 1 1 1 1 1 1 2 4 2 1 4 2 2 2
  2 2 1 1 1 2 4 2 1 8 2 1 16 4 2 4 37 1 1 1
  1 1 1 3 3 3 3 3 3 3 3 3 3 6 12 24 48 1 1 2
  1 4 4 1 4 2 6 2 6 2 2 2 2 2 2 2 2 1 2 2
  2 1 1 1 1 1 4 4 4 4 4 4 2 2 2 2 2 2 1 1
  2 3 2 1 1 3 2 2 2 2 2 2 2 2 2 2 2 2 2 2
  2 2 2 2 2 2 1 1 1 1 2 4 4 4 2 4 2 2 4 2
  2 2 2 2 2 2 2 2 2 2 2 2 4 4 4 4 6 3 1 2
  2 1 4 5 4 4 1 1 1 1 1 1 1 1 1 1 1 1 1 1
  1 1 2 2 2 2 2 2 2 2 2 2 2 2 2 2 2 4 4 4
  4 4 4 4 4 4 4 4 4 4 4 4 8 8 8
"""

DOC = Path(__file__).parents[2] / "docs" / "navtelecom_fields.md"


def test_sizes_match_the_spec() -> None:
    sizes = [int(size) for size in SPEC_SIZES.split()]
    assert len(sizes) == 255
    assert [FIELDS[n].size for n in range(1, 256)] == sizes


def test_full_mask_record_sizes() -> None:
    assert layout_for_fields(tuple(range(1, 70))).size == 146
    assert layout_for_fields(tuple(range(1, 123))).size == 404
    assert layout_for_fields(tuple(range(1, 256))).size == 734
    assert layout_for_fields(tuple(range(1, 256)), field100_size=1).size == 733


def test_attribute_names_are_unique_snake_case() -> None:
    names = [name for spec in FIELDS.values() if not spec.core for name in spec.names]
    assert len(names) == len(set(names))
    assert all(re.fullmatch(r"[a-z][a-z0-9_]*", name) for name in names)
    for spec in FIELDS.values():
        assert spec.core or len(spec.units) == len(spec.names), spec.number


def test_mask_bits_are_msb_first() -> None:
    mask = bytes.fromhex("fffe300a08")
    assert fields_from_mask(mask) == (*range(1, 16), 19, 20, 29, 31, 37)
    assert mask_from_fields(fields_from_mask(mask), 40) == mask


def test_bits_beyond_the_declared_size_are_ignored() -> None:
    mask = bytes.fromhex("ffffffffffffffffff")  # 72 bits set, 69 declared
    assert fields_from_mask(mask, 69) == tuple(range(1, 70))
    assert layout_for_mask(mask, 69) == layout_for_fields(tuple(range(1, 70)))


def test_mask_beyond_field_255_is_refused() -> None:
    with pytest.raises(LayoutError):
        fields_from_mask(b"\x00" * 31 + b"\x01\x80")


def test_layouts_are_cached_per_mask() -> None:
    mask = mask_from_fields((1, 2, 3), 69)
    assert layout_for_mask(mask, 69) is layout_for_mask(mask, 69)
    assert layout_for_mask(mask, 69, 1).struct.format == layout_for_mask(mask, 69, 2).struct.format


def test_field_100_size_is_a_layout_parameter() -> None:
    two = layout_for_fields((99, 100, 101))
    one = layout_for_fields((99, 100, 101), field100_size=1)
    assert (two.size, one.size) == (4, 3)
    assert two != one
    assert two.decode_one(bytes((1, 0x34, 0x12, 7))).fields == {99: 1, 100: 0x1234, 101: 7}
    assert one.decode_one(bytes((1, 0x34, 7))).fields == {99: 1, 100: 0x34, 101: 7}


def _decode(fields: dict[int, object]) -> dict[str, object]:
    layout = layout_for_fields(tuple(sorted(fields)))
    return layout.decode_one(layout.encode(fields)).attributes


def test_fuel_error_codes_are_not_levels() -> None:
    attributes = _decode({38: 1234, 39: 65530, 44: 65535, 84: (65532, -5), 85: (100, 21)})
    assert attributes["fuel_rs485_1"] == 1234 and attributes["fuel_rs485_1_error"] is None
    assert attributes["fuel_rs485_2"] is None and attributes["fuel_rs485_2_error"] == 65530
    assert attributes["fuel_rs232"] is None and attributes["fuel_rs232_error"] == 65535
    assert attributes["fuel_rs485_7"] is None and attributes["fuel_rs485_7_error"] == 65532
    assert attributes["fuel_rs485_7_temperature_c"] == -5
    assert attributes["fuel_rs485_8"] == 100 and attributes["fuel_rs485_8_temperature_c"] == 21


def test_can_levels_and_sentinels() -> None:
    attributes = _decode(
        {53: 0x8000 | 55, 66: 1234, 55: 0xFFFF, 56: -128, 57: -1.0, 54: 12.5, 69: 255, 68: -1}
    )
    assert (attributes["can_fuel_pct"], attributes["can_fuel_l"]) == (55, None)
    assert (attributes["can_adblue_pct"], attributes["can_adblue_l"]) == (None, 123.4)
    assert attributes["can_rpm"] is None
    assert attributes["can_coolant_temperature_c"] is None
    assert attributes["can_odometer_km"] is None
    assert attributes["can_fuel_used_l"] == 12.5
    assert attributes["can_speed_kmh"] is None
    assert attributes["can_service_distance_km"] is None
    assert _decode({53: 0x7FFF})["can_fuel_pct"] is None
    assert _decode({68: 100})["can_service_distance_km"] == 500


def test_structured_fields() -> None:
    lbs = (1001, 2, 250, 1, -70, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1_600_000_000)
    attributes = _decode(
        {
            45: -128,
            46: 21,
            70: (8, 10, 0, 0, 0, 0, 0, 0),
            73: (33_422_389_000, 22_616_063_000),
            77: lbs,
            94: (1, 82, 20, 0, 0, -128),
            107: (-32768, 10, -20),
            141: (-5, 4),
            163: -32768,
            164: 500,
            167: 0xFF,
            168: 91,
            207: b"\x7f",
        }
    )
    assert attributes["temperature1_c"] is None and attributes["temperature2_c"] == 21
    assert attributes["satellites_visible"] == (8, 10, 0, 0, 0, 0, 0, 0)
    assert attributes["hp_latitude"] == pytest.approx(55.7039816667)
    assert attributes["lbs_cells"][0] == {
        "cell_id": 1001,
        "lac": 2,
        "mcc": 250,
        "mnc": 1,
        "rx_level_dbm": -70,
    }
    assert attributes["lbs_time"] == datetime.fromtimestamp(1_600_000_000, UTC)
    assert attributes["tyres_1_2"] == ({"wheel": 1, "pressure_bar": 8.2, "temperature_c": 20},)
    assert attributes["acceleration_mg"] == (None, 10, -20)
    assert (attributes["pitch_deg"], attributes["roll_deg"]) == (-5, 6.0)
    assert attributes["temperature_hp1_c"] is None and attributes["temperature_hp2_c"] == 25.0
    assert attributes["humidity1_pct"] is None and attributes["humidity2_pct"] == 45.5
    assert attributes["user_1byte_1"] == b"\x7f"


def test_every_field_decodes_from_zeros_and_ones() -> None:
    layout = layout_for_fields(tuple(range(1, 256)))
    for fill in (0x00, 0xFF, 0x7F, 0x80):
        record = layout.decode_one(bytes([fill]) * layout.size)
        assert len(record.fields) == 255
        record.as_dict()  # every converter copes with extreme values


def test_doc_matches_the_table() -> None:
    assert DOC.read_text(encoding="utf-8") == render(), (
        "docs/navtelecom_fields.md is stale: python -m fleet.protocol.navtelecom.docgen > docs/navtelecom_fields.md"
    )
