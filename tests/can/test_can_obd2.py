"""OBD-II service 01 responses (ISO 15765-4 single frames on 0x7E8..0x7EF)."""

from __future__ import annotations

import pytest

from fleet.can import CanDecoder, CanSignal


def obd(hex_frame: str) -> bytes:
    return bytes.fromhex(hex_frame)


@pytest.fixture
def decoder() -> CanDecoder:
    return CanDecoder()


@pytest.mark.parametrize(
    ("frame", "name", "value", "unit"),
    [
        ("04 41 0C 1A F8", "engine_speed", 1726.0, "rpm"),  # (0x1A * 256 + 0xF8) / 4
        ("03 41 0D 32", "vehicle_speed", 50, "km/h"),
        ("03 41 05 7B", "coolant_temperature", 83, "°C"),  # 0x7B - 40
        ("03 41 2F 80", "fuel_level", 50.196078431, "%"),  # 100 * 128 / 255, nine decimals
        ("03 41 2F FF", "fuel_level", 100.0, "%"),
        ("04 41 10 01 F4", "mass_air_flow", 5.0, "g/s"),  # 500 / 100
        ("03 41 11 33", "throttle_position", 20.0, "%"),  # 100 * 51 / 255
        ("03 41 04 FF", "engine_load", 100.0, "%"),
        ("03 41 0F 28", "intake_air_temperature", 0, "°C"),
        ("03 41 0B 65", "intake_manifold_pressure", 101, "kPa"),
        ("04 41 5E 01 F4", "fuel_rate", 25.0, "l/h"),  # 500 / 20
        ("04 41 1F 0E 10", "engine_run_time", 3600, "s"),
        ("04 41 21 00 0C", "distance_with_mil", 12, "km"),
        ("04 41 42 36 B0", "control_module_voltage", 14.0, "V"),  # 14000 / 1000
        ("03 41 46 32", "ambient_temperature", 10, "°C"),
        ("06 41 A6 00 01 E2 41", "vehicle_distance", 12345.7, "km"),  # 123457 / 10
        ("03 41 0A 64", "fuel_pressure", 300, "kPa"),
        ("03 41 0E 90", "timing_advance", 8.0, "°"),  # 144 / 2 - 64
        ("04 41 31 01 00", "distance_since_codes_cleared", 256, "km"),
        ("03 41 33 64", "barometric_pressure", 100, "kPa"),
        ("03 41 5A 66", "accelerator_pedal", 40.0, "%"),
        ("03 41 5C 82", "oil_temperature", 90, "°C"),
    ],
)
def test_pid_formulas(decoder: CanDecoder, frame: str, name: str, value: float, unit: str) -> None:
    pid = obd(frame)[2]
    assert decoder.decode(0x7E8, obd(frame)) == [CanSignal(name, value, unit, f"OBD2:PID0x{pid:02X}")]


@pytest.mark.parametrize("padding", ["", "00 00 00", "55 55 55", "AA AA AA", "CC CC CC"])
def test_padding_after_the_declared_length_is_ignored(decoder: CanDecoder, padding: str) -> None:
    signals = decoder.decode(0x7E8, obd(f"04 41 0C 1A F8 {padding}"))
    assert [(s.name, s.value) for s in signals] == [("engine_speed", 1726.0)]


@pytest.mark.parametrize("can_id", range(0x7E8, 0x7F0))
def test_every_ecu_response_id(decoder: CanDecoder, can_id: int) -> None:
    assert decoder.decode(can_id, obd("03 41 0D 32 55 55 55 55"))[0].value == 50


def test_several_pids_in_one_frame(decoder: CanDecoder) -> None:
    signals = decoder.decode(0x7E8, obd("06 41 0C 1A F8 0D 32 00"))
    assert [(s.name, s.value, s.source) for s in signals] == [
        ("engine_speed", 1726.0, "OBD2:PID0x0C"),
        ("vehicle_speed", 50, "OBD2:PID0x0D"),
    ]


def test_extended_flag_none_means_standard(decoder: CanDecoder) -> None:
    assert decoder.decode(0x7E8, obd("03 41 0D 32"), extended=None)[0].value == 50
    assert decoder.decode(0x7E8, obd("03 41 0D 32"), extended=False)[0].value == 50


class TestRejected:
    def test_unknown_pid_is_counted(self, decoder: CanDecoder) -> None:
        assert decoder.decode(0x7E8, obd("06 41 00 BE 3E B8 11")) == []
        assert decoder.stats.unknown_keys == {"OBD2:PID0x00": 1}

    def test_known_pid_before_an_unknown_one_is_kept(self, decoder: CanDecoder) -> None:
        signals = decoder.decode(0x7E8, obd("05 41 0D 32 99 01"))
        assert [(s.name, s.value) for s in signals] == [("vehicle_speed", 50)]
        assert decoder.stats.unknown_keys == {"OBD2:PID0x99": 1}

    def test_other_services_are_unknown(self, decoder: CanDecoder) -> None:
        assert decoder.decode(0x7E8, obd("03 7F 01 12")) == []  # negative response
        assert decoder.decode(0x7E8, obd("10 14 49 02 01 57 50 30")) == []  # first frame of a VIN
        assert decoder.stats.unknown_keys == {"OBD2:SID0x7F": 1, "OBD2:ISO-TP-multi-frame": 1}

    @pytest.mark.parametrize(
        "frame",
        [
            "",
            "04",
            "04 41",
            "03 41 0C 1A",  # PID 0x0C needs two data bytes, the length says one
            "04 41 0C 1A",  # length beyond the frame
            "01 41 0C 1A F8",  # length too short for a PID
            "08 41 0C 1A F8 00 00 00",  # single frames hold at most 7 bytes
            "04 41 0C 1A F8 00 00 00 00",  # nine bytes
        ],
    )
    def test_malformed(self, decoder: CanDecoder, frame: str) -> None:
        assert decoder.decode(0x7E8, obd(frame)) == []
        assert decoder.stats.malformed == 1
        assert decoder.stats.unknown == 0

    def test_other_standard_ids_are_unknown(self, decoder: CanDecoder) -> None:
        assert decoder.decode(0x7DF, obd("02 01 0C 00 00 00 00 00")) == []  # the request itself
        assert decoder.decode(0x123, b"\x00") == []
        assert decoder.stats.unknown_keys == {"CAN:0x7DF": 1, "CAN:0x123": 1}
