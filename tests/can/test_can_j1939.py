"""J1939 / FMS frames built by hand from the SPN definitions decode to the documented values."""

from __future__ import annotations

import pytest

from fleet.can import CanDecoder, CanSignal, J1939Id, j1939_split

NA8 = b"\xff" * 8


def j1939_id(pgn: int, source_address: int = 0x00, priority: int = 6, destination: int = 0xFF) -> int:
    pdu_format = (pgn >> 8) & 0xFF
    if pdu_format < 240:
        pgn = (pgn & 0x3FF00) | destination
    return priority << 26 | pgn << 8 | source_address


def values(signals: list[CanSignal]) -> dict[str, object]:
    return {s.name: s.value for s in signals}


def frame(*fields: tuple[int, bytes]) -> bytes:
    """An 8-byte payload of 0xFF (not available) with the given (offset, bytes) written in."""
    data = bytearray(NA8)
    for offset, chunk in fields:
        data[offset : offset + len(chunk)] = chunk
    return bytes(data)


@pytest.fixture
def decoder() -> CanDecoder:
    return CanDecoder()


class TestSplit:
    def test_pdu2_keeps_group_extension(self) -> None:
        assert j1939_split(0x0CF00400) == J1939Id(priority=3, pgn=61444, source_address=0, destination=None)
        assert j1939_split(0x18FEF117) == J1939Id(6, 65265, 0x17, None)

    def test_pdu1_clears_destination_from_pgn(self) -> None:
        # TSC1 (PGN 0) from the transmission (SA 3) to the engine (DA 0).
        assert j1939_split(0x0C000003) == J1939Id(3, 0, 3, 0)
        # Request (PGN 59904 = 0xEA00) to the global address.
        assert j1939_split(0x18EAFFF9) == J1939Id(6, 59904, 0xF9, 0xFF)
        # Same PGN, different destinations: one PGN.
        assert j1939_split(0x18EA00F9).pgn == j1939_split(0x18EA17F9).pgn == 0xEA00

    def test_pdu_format_boundary(self) -> None:
        assert j1939_split(0x18EFAB00) == J1939Id(6, 0xEF00, 0, 0xAB)  # PF 239: PDU1
        assert j1939_split(0x18F0AB00) == J1939Id(6, 0xF0AB, 0, None)  # PF 240: PDU2

    def test_data_page_bits_are_part_of_pgn(self) -> None:
        assert j1939_split(0x19FEF100).pgn == 0x1FEF1
        assert j1939_split(0x1BFEF100).pgn == 0x3FEF1

    @pytest.mark.parametrize("can_id", [-1, 0x20000000])
    def test_rejects_ids_outside_29_bits(self, can_id: int) -> None:
        with pytest.raises(ValueError):
            j1939_split(can_id)


class TestFmsParameterGroups:
    def test_eec1_engine_speed_and_torque(self, decoder: CanDecoder) -> None:
        # SPN 190 raw 0x3E80 * 0.125 = 2000 rpm; SPN 512 raw 0x91 - 125 = 20 %.
        signals = decoder.decode(0x0CF00400, frame((1, b"\x91\x7d\x80\x3e")))
        assert values(signals) == {
            "driver_demand_torque": 20,
            "actual_engine_torque": 0,
            "engine_speed": 2000.0,
        }
        speed = next(s for s in signals if s.name == "engine_speed")
        assert speed == CanSignal("engine_speed", 2000.0, "rpm", "J1939:PGN61444:SA0")

    def test_ccvs_speed_brakes_and_cruise(self, decoder: CanDecoder) -> None:
        # Byte 1 bits 3-4 parking brake = 1; speed 0x5000 / 256 = 80 km/h; byte 4: cruise active 1,
        # enable switch 1, brake switch 0, clutch switch 1 -> 0b01_00_01_01; set speed 85 km/h;
        # byte 7 bits 6-8 cruise state 1 (hold).
        data = frame((0, b"\xf4\x00\x50\x45"), (5, b"\x55\x3f"))
        assert values(decoder.decode(0x18FEF100, data)) == {
            "parking_brake": 1,
            "vehicle_speed": 80.0,
            "cruise_control_active": 1,
            "cruise_control_enable_switch": 1,
            "brake_switch": 0,
            "clutch_switch": 1,
            "cruise_control_set_speed": 85,
            "cruise_control_state": "hold",
        }

    def test_et1_coolant_offset(self, decoder: CanDecoder) -> None:
        # 0x78 - 40 = 80 degC; oil 0x2A20 * 0.03125 - 273 = 64.0 degC.
        signals = decoder.decode(0x18FEEE00, frame((0, b"\x78\x50\x20\x2a")))
        assert values(signals) == {"coolant_temperature": 80, "fuel_temperature": 40, "oil_temperature": 64.0}
        assert {s.unit for s in signals} == {"°C"}

    def test_lfc_total_fuel_half_litre_steps(self, decoder: CanDecoder) -> None:
        trip = (1001).to_bytes(4, "little")
        total = (2_000_001).to_bytes(4, "little")
        assert values(decoder.decode(0x18FEE900, trip + total)) == {
            "fuel_used_trip": 500.5,
            "fuel_used_total": 1_000_000.5,
        }

    def test_lfe_fuel_rate_and_economy(self, decoder: CanDecoder) -> None:
        # 0x01F4 * 0.05 = 25 l/h; 0x0C00 / 512 = 6 km/l; throttle 0x7D * 0.4 = 50 %.
        data = frame((0, b"\xf4\x01\x00\x0c"), (6, b"\x7d"))
        assert values(decoder.decode(0x18FEF200, data)) == {
            "fuel_rate": 25.0,
            "fuel_economy": 6.0,
            "average_fuel_economy": None,
            "throttle_position": 50.0,
        }

    def test_dash_display_fuel_level(self, decoder: CanDecoder) -> None:
        # 0xC8 * 0.4 = 80 %; the low 0.4 steps come out without binary noise.
        assert values(decoder.decode(0x18FEFC17, frame((1, b"\xc8")))) == {
            "fuel_level": 80.0,
            "fuel_level_2": None,
        }
        assert values(decoder.decode(0x18FEFC17, frame((1, b"\x03"))))["fuel_level"] == 1.2

    def test_engine_hours(self, decoder: CanDecoder) -> None:
        # 200001 * 0.05 h = 10000.05 h; revolutions 3000 * 1000.
        data = (200_001).to_bytes(4, "little") + (3000).to_bytes(4, "little")
        assert values(decoder.decode(0x18FEE500, data)) == {
            "engine_hours": 10000.05,
            "engine_revolutions_total": 3_000_000,
        }

    def test_high_resolution_distance(self, decoder: CanDecoder) -> None:
        # 5 m per bit: 200_000_000 * 5 m = 1_000_000 km; trip 1001 * 5 m = 5.005 km.
        data = (200_000_000).to_bytes(4, "little") + (1001).to_bytes(4, "little")
        assert values(decoder.decode(0x18FEC1EE, data)) == {
            "vehicle_distance": 1_000_000.0,
            "trip_distance": 5.005,
        }

    def test_vehicle_distance(self, decoder: CanDecoder) -> None:
        data = (80).to_bytes(4, "little") + (8_000_001).to_bytes(4, "little")
        signals = decoder.decode(0x18FEE0EE, data)
        assert values(signals) == {"trip_distance": 10.0, "vehicle_distance": 1_000_000.125}
        assert {s.source for s in signals} == {"J1939:PGN65248:SA238"}

    def test_vehicle_weight_names_the_axle(self, decoder: CanDecoder) -> None:
        # Axle location 0x2F: second axle; 0x3A98 * 0.5 = 7500 kg.
        signals = decoder.decode(0x18FEEA2F, frame((0, b"\x2f\x98\x3a")))
        assert values(signals) == {
            "axle_location": 0x2F,
            "axle_weight_2": 7500.0,
            "trailer_weight": None,
            "cargo_weight": None,
        }
        assert next(s for s in signals if s.name == "axle_weight_2").unit == "kg"

    def test_vehicle_weight_without_axle_position(self, decoder: CanDecoder) -> None:
        signals = decoder.decode(0x18FEEA2F, frame((1, b"\x98\x3a")))
        assert values(signals)["axle_weight"] == 7500.0
        assert values(signals)["axle_location"] is None

    def test_tachograph(self, decoder: CanDecoder) -> None:
        # Byte 1: driver 1 drive (3), driver 2 available (1), motion detected (1) -> 0b01_001_011.
        # Byte 2: driver 1 time state 2 (4h30 reached), card present, no overspeed -> 0b00_01_0010.
        # Byte 3: driver 2 normal, card absent. Byte 4: all zero (forward).
        # Speed 0x5000 / 256 = 80 km/h; output shaft 0x2710 * 0.125 = 1250 rpm.
        data = bytes([0x4B, 0x12, 0x00, 0x00, 0x10, 0x27, 0x00, 0x50])
        assert values(decoder.decode(0x0CFE6CEE, data)) == {
            "driver1_working_state": "drive",
            "driver2_working_state": "driver_available",
            "vehicle_motion": 1,
            "driver1_time_related_states": "4h30_reached",
            "driver1_card_present": 1,
            "vehicle_overspeed": 0,
            "driver2_time_related_states": "normal",
            "driver2_card_present": 0,
            "tacho_system_event": 0,
            "tacho_handling_information": 0,
            "tacho_performance": 0,
            "direction_indicator": "forward",
            "tacho_output_shaft_speed": 1250.0,
            "tacho_vehicle_speed": 80.0,
        }

    def test_tachograph_error_states_are_none(self, decoder: CanDecoder) -> None:
        # Working states 6 (error) and 7 (not available); time state 14 (error).
        data = bytes([0b00_111_110, 0x0E, 0x00, 0x00, 0, 0, 0, 0])
        got = values(decoder.decode(0x0CFE6CEE, data))
        assert got["driver1_working_state"] is None
        assert got["driver2_working_state"] is None
        assert got["driver1_time_related_states"] is None

    def test_eec2_pedal_and_load(self, decoder: CanDecoder) -> None:
        # Accelerator 0x64 * 0.4 = 40 %, load 0x37 = 55 %, kickdown switch byte 1 bits 3-4 = 0.
        data = frame((0, b"\xf3\x64\x37"))
        assert values(decoder.decode(0x0CF00300, data)) == {
            "kickdown_switch": 0,
            "accelerator_pedal": 40.0,
            "engine_load": 55,
        }

    def test_brake_pedal(self, decoder: CanDecoder) -> None:
        assert values(decoder.decode(0x18F0010B, frame((0, b"\xdf\x32")))) == {
            "abs_active": 1,
            "brake_pedal": 20.0,
        }

    def test_ambient_conditions(self, decoder: CanDecoder) -> None:
        # Ambient 0x21E0 * 0.03125 - 273 = -2.0 degC; inlet 0x3C - 40 = 20 degC; pressure 0xC8 * 0.5.
        data = frame((0, b"\xc8"), (3, b"\xe0\x21\x3c"))
        assert values(decoder.decode(0x18FEF500, data)) == {
            "barometric_pressure": 100.0,
            "cab_temperature": None,
            "ambient_temperature": -2.0,
            "intake_air_temperature": 20,
            "road_surface_temperature": None,
        }

    def test_adblue_and_service_distance(self, decoder: CanDecoder) -> None:
        assert values(decoder.decode(0x18FE563D, frame((0, b"\x7d\x3c")))) == {
            "adblue_level": 50.0,
            "adblue_temperature": 20,
        }
        # 0x7D6B * 5 km - 160635 km = -100 km (overdue); 0x7F0F * 5 km - 160635 km = 2000 km.
        assert values(decoder.decode(0x18FEC017, frame((1, b"\x6b\x7d")))) == {"service_distance": -100}
        assert values(decoder.decode(0x18FEC017, frame((1, b"\x0f\x7f")))) == {"service_distance": 2000}

    def test_gears_and_park(self, decoder: CanDecoder) -> None:
        data = frame((0, b"\x83"), (3, b"\xfb"))  # selected 0x83 - 125 = 6, current 0xFB = park
        assert values(decoder.decode(0x18F00503, data)) == {"selected_gear": 6, "current_gear": "park"}
        reverse = frame((0, b"\x7c"), (3, b"\x7d"))
        assert values(decoder.decode(0x18F00503, reverse)) == {"selected_gear": -1, "current_gear": 0}

    def test_high_resolution_fuel(self, decoder: CanDecoder) -> None:
        data = (12_345).to_bytes(4, "little") + (987_654_321).to_bytes(4, "little")
        assert values(decoder.decode(0x18FD0900, data)) == {
            "fuel_used_trip": 12.345,
            "fuel_used_total": 987654.321,
        }

    def test_weights_and_voltages(self, decoder: CanDecoder) -> None:
        data = frame((0, (1200).to_bytes(2, "little") + (4000).to_bytes(2, "little")))
        assert values(decoder.decode(0x18FE700F, data)) == {
            "powered_vehicle_weight": 12000,
            "gross_combination_weight": 40000,
        }
        data = frame((4, (560).to_bytes(2, "little") + (561).to_bytes(2, "little")))
        assert values(decoder.decode(0x18FEF700, data)) == {
            "battery_voltage": 28.0,
            "keyswitch_voltage": 28.05,
        }

    def test_fms_identity(self, decoder: CanDecoder) -> None:
        # Diagnostics supported (01), requests supported (01): 0b1111_01_01; version "0400" = 04.00.
        assert values(decoder.decode(0x18FDD127, b"\xf5" + b"0400" + b"\xff\xff\xff")) == {
            "fms_diagnostics_supported": 1,
            "fms_requests_supported": 1,
            "fms_sw_version": "04.00",
        }
        assert values(decoder.decode(0x18FDD127, NA8))["fms_sw_version"] is None


class TestDm1:
    def test_lamps_and_first_dtc(self, decoder: CanDecoder) -> None:
        # MIL on, amber on; flash bytes "do not flash"; SPN 110 (coolant temperature) FMI 0, seen 3x.
        data = bytes([0b01_00_01_00, 0xFF, 110, 0x00, 0x00, 0x03, 0xFF, 0xFF])
        assert values(decoder.decode(0x18FECA00, data)) == {
            "mil_lamp": "on",
            "red_stop_lamp": "off",
            "amber_warning_lamp": "on",
            "protect_lamp": "off",
            "dtc_spn": 110,
            "dtc_fmi": 0,
            "dtc_occurrence_count": 3,
        }

    def test_spn_high_bits_and_flashing(self, decoder: CanDecoder) -> None:
        # SPN 520192 = 0x7F000: low 16 bits 0xF000, high 3 bits 0b111; FMI 31; MIL fast flash.
        data = bytes([0b01_00_00_00, 0b01_11_11_11, 0x00, 0xF0, 0b111_11111, 0x01, 0xFF, 0xFF])
        got = values(decoder.decode(0x18FECA00, data))
        assert got["mil_lamp"] == "flashing"
        assert (got["dtc_spn"], got["dtc_fmi"], got["dtc_occurrence_count"]) == (520192, 31, 1)

    def test_no_active_dtc(self, decoder: CanDecoder) -> None:
        got = values(decoder.decode(0x18FECA00, bytes([0, 0xFF, 0, 0, 0, 0, 0xFF, 0xFF])))
        assert got == {
            "mil_lamp": "off",
            "red_stop_lamp": "off",
            "amber_warning_lamp": "off",
            "protect_lamp": "off",
        }


class TestNotAvailable:
    def test_all_ones_is_none(self, decoder: CanDecoder) -> None:
        for can_id in (0x0CF00400, 0x18FEF100, 0x18FEEE00, 0x18FEE900, 0x18FEE500, 0x18FEC1EE, 0x18FEFC00):
            signals = decoder.decode(can_id, NA8)
            assert signals, hex(can_id)
            assert all(s.value is None for s in signals), hex(can_id)

    @pytest.mark.parametrize(
        ("payload", "expected"),
        [
            (b"\x7f\xfa", 8015.875),  # 0xFA7F: still a measurement
            (b"\xff\xfa", 8031.875),  # 0xFAFF: the largest valid value
            (b"\x00\xfb", None),  # parameter-specific indicator
            (b"\x00\xfe", None),  # error indicator
            (b"\x12\xff", None),  # not available
        ],
    )
    def test_two_byte_ranges(self, decoder: CanDecoder, payload: bytes, expected: float | None) -> None:
        assert values(decoder.decode(0x0CF00400, frame((3, payload))))["engine_speed"] == expected

    @pytest.mark.parametrize(("raw", "expected"), [(0xFA, 210), (0xFB, None), (0xFE, None), (0xFF, None)])
    def test_one_byte_ranges(self, decoder: CanDecoder, raw: int, expected: int | None) -> None:
        assert values(decoder.decode(0x18FEEE00, frame((0, bytes([raw])))))["coolant_temperature"] == expected

    def test_four_byte_error_range(self, decoder: CanDecoder) -> None:
        data = b"\xff\xff\xff\xfa" + b"\x00\x00\x00\xfe"
        assert values(decoder.decode(0x18FEE500, data)) == {
            "engine_hours": 210554060.75,
            "engine_revolutions_total": None,
        }

    def test_two_bit_error_and_not_available(self, decoder: CanDecoder) -> None:
        # Parking brake field (byte 1 bits 3-4): 10 error, 11 not available.
        assert values(decoder.decode(0x18FEF100, frame((0, b"\xf8"))))["parking_brake"] is None
        assert values(decoder.decode(0x18FEF100, frame((0, b"\xfc"))))["parking_brake"] is None
        assert values(decoder.decode(0x18FEF100, frame((0, b"\xf0"))))["parking_brake"] == 0


class TestMatching:
    def test_matched_by_pgn_whatever_priority_and_source(self, decoder: CanDecoder) -> None:
        data = frame((3, b"\x80\x3e"))
        for can_id in (0x0CF00400, 0x18F00400, 0x0CF00417, 0x1CF004EE):
            assert values(decoder.decode(can_id, data))["engine_speed"] == 2000.0
        assert decoder.decode(0x0CF00417, data)[0].source == "J1939:PGN61444:SA23"

    def test_other_data_page_is_another_pgn(self, decoder: CanDecoder) -> None:
        assert decoder.decode(0x0DF00400, NA8) == []
        assert decoder.stats.unknown_keys == {f"J1939:PGN{0x1F004}": 1}

    def test_unknown_pgn_counted(self, decoder: CanDecoder) -> None:
        assert decoder.decode(0x18FF0000, NA8) == []
        assert decoder.decode(0x18FF0017, NA8) == []
        assert decoder.stats.unknown == 2
        assert decoder.stats.unknown_keys == {"J1939:PGN65280": 2}

    @pytest.mark.parametrize("length", [0, 1, 7, 9, 64])
    def test_wrong_length_is_empty(self, decoder: CanDecoder, length: int) -> None:
        assert decoder.decode(0x0CF00400, bytes(length)) == []
        assert decoder.stats.malformed == 1

    def test_extended_flag(self, decoder: CanDecoder) -> None:
        # Small 29-bit identifiers are J1939 when the caller says so; 11-bit ids cannot exceed 0x7FF.
        assert decoder.decode(0x0000_0400, NA8, extended=True) == []
        assert decoder.stats.unknown_keys == {"J1939:PGN0": 1}
        assert decoder.decode(0x18FEEE00, NA8, extended=False) == []
        assert decoder.stats.malformed == 1

    def test_accepts_bytearray_and_memoryview(self, decoder: CanDecoder) -> None:
        data = frame((3, b"\x80\x3e"))
        assert decoder.decode(0x0CF00400, bytearray(data)) == decoder.decode(0x0CF00400, memoryview(data))

    def test_stats_reset(self, decoder: CanDecoder) -> None:
        decoder.decode(0x0CF00400, NA8)
        decoder.decode(0x18FF0000, NA8)
        assert (decoder.stats.frames, decoder.stats.decoded, decoder.stats.unknown) == (2, 1, 1)
        decoder.stats.reset()
        assert (decoder.stats.frames, decoder.stats.unknown, len(decoder.stats.unknown_keys)) == (0, 0, 0)

    def test_unknown_key_tally_is_bounded(self, decoder: CanDecoder) -> None:
        for pdu_specific in range(256):
            for pdu_format in range(0xF8, 0xFE):
                decoder.decode(0x18000000 | pdu_format << 16 | pdu_specific << 8, NA8)
        assert len(decoder.stats.unknown_keys) <= 1024 + 1
        assert decoder.stats.unknown == sum(decoder.stats.unknown_keys.values())
