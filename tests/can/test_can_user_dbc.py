"""User DBC files from a directory: proprietary messages, overrides, and files that must be skipped."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from fleet.can import CanDecoder, CanSignal

EXAMPLE_DIR = Path(__file__).parent / "dbc"
EXAMPLE = EXAMPLE_DIR / "example_proprietary.dbc"

DBC_HEADER = """VERSION ""

NS_ :

BS_:

BU_: Node

"""
J1939_ATTRIBUTES = """
BA_DEF_ BO_ "VFrameFormat" ENUM "StandardCAN","ExtendedCAN","reserved","J1939PG";
BA_DEF_DEF_ "VFrameFormat" "J1939PG";
"""
# Dash Display (PGN 65276) redefined: byte 2 as a plain percentage.
DD_OVERRIDE = (
    DBC_HEADER
    + """BO_ 2566847488 MY_DD: 8 Node
 SG_ fuel_level : 8|8@1+ (1,0) [0|100] "%" Vector__XXX
"""
    + J1939_ATTRIBUTES
)


def values(signals: list[CanSignal]) -> dict[str, object]:
    return {s.name: s.value for s in signals}


@pytest.fixture
def decoder() -> CanDecoder:
    return CanDecoder(EXAMPLE_DIR)


class TestExampleProprietaryDbc:
    def test_loaded(self, decoder: CanDecoder) -> None:
        assert decoder.dbc_files == [EXAMPLE]
        assert decoder.skipped_dbc_files == []

    def test_j1939_message_matched_by_pgn_from_any_source(self, decoder: CanDecoder) -> None:
        # Fifth wheel locked (01), 100000 * 0.05 h = 5000 h, counter 15, mode 2 (tipping).
        data = b"\xfd" + (100_000).to_bytes(4, "little") + b"\x2f\xff\xff"
        for source_address in (0x00, 0x21, 0xEE):
            signals = decoder.decode(0x18FF2100 | source_address, data)
            assert values(signals) == {
                "fifth_wheel_locked": 1,
                "body_pto_hours": 5000.0,
                "body_sequence": 15,
                "body_mode": "tipping",
            }
            assert {s.source for s in signals} == {f"J1939:PGN65313:SA{source_address}"}
            assert next(s.unit for s in signals if s.name == "body_pto_hours") == "h"

    def test_not_available_rules_follow_the_dbc(self, decoder: CanDecoder) -> None:
        # All ones: the counter keeps its value (rule switched off), the others are not available;
        # mode 14 is labelled "error" in the value table.
        got = values(decoder.decode(0x18FF2100, b"\xff" * 5 + b"\xef\xff\xff"))
        assert got == {
            "fifth_wheel_locked": None,
            "body_pto_hours": None,
            "body_sequence": 15,
            "body_mode": None,
        }

    def test_pdu1_message_matched_whatever_the_destination(self, decoder: CanDecoder) -> None:
        for can_id in (0x18EF0021, 0x18EF17FE, 0x1CEFFF00):
            signals = decoder.decode(can_id, b"\x07" + b"\xff" * 7)
            assert [(s.name, s.value) for s in signals] == [("body_command", 7)]
        assert signals[0].source == "J1939:PGN61184:SA0"

    def test_non_j1939_extended_message_needs_its_exact_id(self, decoder: CanDecoder) -> None:
        data = (1234).to_bytes(2, "little") + b"\xff" * 6
        assert decoder.decode(0x18FF5017, data) == [CanSignal("crane_load", 1234, "kg", "CAN:0x18FF5017")]
        # Not J1939: the raw value 0xFFFF is a reading, and another source address is another frame.
        assert values(decoder.decode(0x18FF5017, b"\xff" * 8)) == {"crane_load": 65535}
        assert decoder.decode(0x18FF5018, data) == []
        assert decoder.stats.unknown_keys == {"J1939:PGN65360": 1}

    def test_standard_message_with_signed_signal(self, decoder: CanDecoder) -> None:
        # -18.5 degC = -185 * 0.1 -> 0xFF47; door bit set. DLC 4 as declared; padded to 8 is fine too.
        data = b"\x01\x47\xff\x00"
        expected = [
            CanSignal("cargo_door_open", 1, None, "CAN:0x321"),
            CanSignal("cargo_temperature", -18.5, "°C", "CAN:0x321"),
        ]
        assert decoder.decode(0x321, data) == expected
        assert decoder.decode(0x321, data + b"\x00" * 4) == expected
        assert decoder.decode(0x321, data[:3]) == []
        assert decoder.stats.malformed == 1

    def test_built_in_messages_still_decode(self, decoder: CanDecoder) -> None:
        assert values(decoder.decode(0x18FEEE00, b"\x78" + b"\xff" * 7))["coolant_temperature"] == 80


def test_user_dbc_replaces_a_built_in_pgn(tmp_path: Path) -> None:
    (tmp_path / "dash.dbc").write_text(DD_OVERRIDE, encoding="utf-8")
    decoder = CanDecoder(tmp_path)
    assert decoder.decode(0x18FEFC17, b"\xff\x50" + b"\xff" * 6) == [
        CanSignal("fuel_level", 80, "%", "J1939:PGN65276:SA23")
    ]


def test_later_file_wins(tmp_path: Path) -> None:
    (tmp_path / "a.dbc").write_text(DD_OVERRIDE, encoding="utf-8")
    (tmp_path / "b.dbc").write_text(DD_OVERRIDE.replace("fuel_level", "tank_level"), encoding="utf-8")
    decoder = CanDecoder(tmp_path)
    assert [s.name for s in decoder.decode(0x18FEFC00, bytes(8))] == ["tank_level"]


MALFORMED = {
    "garbage.dbc": "this is not a DBC file at all {\n",
    "truncated.dbc": DD_OVERRIDE + 'CM_ SG_ 2566847488 fuel_level "cut off in the middle',
    "overlap.dbc": DBC_HEADER
    + """BO_ 2566847488 BAD: 8 Node
 SG_ a : 0|16@1+ (1,0) [0|0] "" Vector__XXX
 SG_ b : 8|16@1+ (1,0) [0|0] "" Vector__XXX
""",
    "binary.dbc": "\x00\x01\x02\x03",
    "empty.dbc": "",
}


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_malformed_user_dbc_is_skipped(tmp_path: Path, name: str) -> None:
    (tmp_path / name).write_text(MALFORMED[name], encoding="utf-8")
    shutil.copy(EXAMPLE, tmp_path / "zz_good.dbc")
    decoder = CanDecoder(tmp_path)
    assert decoder.skipped_dbc_files == [tmp_path / name]
    assert decoder.dbc_files == [tmp_path / "zz_good.dbc"]
    assert decoder.decode(0x18FF5017, bytes(8)) == [CanSignal("crane_load", 0, "kg", "CAN:0x18FF5017")]
    # Nothing of the bad file was applied: the built-in Dash Display is untouched.
    assert values(decoder.decode(0x18FEFC00, b"\xff\xc8" + b"\xff" * 6))["fuel_level"] == 80.0


def test_message_without_signals_is_ignored(tmp_path: Path) -> None:
    # cantools accepts a file that ends right after a message header; such a message must not
    # replace the built-in one nor swallow frames.
    cut = DD_OVERRIDE[: DD_OVERRIDE.index(" SG_")]
    (tmp_path / "cut.dbc").write_text(cut + " SG_ fuel_le", encoding="utf-8")
    decoder = CanDecoder(tmp_path)
    assert values(decoder.decode(0x18FEFC00, b"\xff\xc8" + b"\xff" * 6))["fuel_level"] == 80.0


def test_malformed_file_is_logged(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "garbage.dbc").write_text("BO_ nonsense", encoding="utf-8")
    CanDecoder(tmp_path)
    captured = capsys.readouterr()
    assert "can.dbc_skipped" in captured.out + captured.err
    assert "garbage.dbc" in captured.out + captured.err


def test_windows_1252_file(tmp_path: Path) -> None:
    (tmp_path / "legacy.dbc").write_bytes(EXAMPLE.read_text(encoding="utf-8").encode("cp1252"))
    decoder = CanDecoder(tmp_path)
    assert decoder.decode(0x321, b"\x00\x10\x00\x00")[1].unit == "°C"


def test_other_files_and_folders_are_ignored(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("not a dbc", encoding="utf-8")
    (tmp_path / "sub.dbc").mkdir()
    shutil.copy(EXAMPLE, tmp_path / "UPPER.DBC")
    decoder = CanDecoder(tmp_path)
    assert decoder.dbc_files == [tmp_path / "UPPER.DBC"]
    assert decoder.skipped_dbc_files == []


def test_missing_directory_is_not_fatal(tmp_path: Path) -> None:
    decoder = CanDecoder(tmp_path / "does-not-exist")
    assert decoder.dbc_files == []
    assert values(decoder.decode(0x0CF00400, b"\xff\xff\xff\x80\x3e\xff\xff\xff"))["engine_speed"] == 2000.0


def test_oversized_file_is_skipped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("fleet.can.catalog.MAX_DBC_BYTES", 100)
    shutil.copy(EXAMPLE, tmp_path / "big.dbc")
    decoder = CanDecoder(tmp_path)
    assert decoder.skipped_dbc_files == [tmp_path / "big.dbc"]
