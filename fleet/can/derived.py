"""Signals that a DBC file cannot express: names chosen by a value, fields split across bytes, text.

Each function takes the raw signal values cantools decoded, the signals already converted from
them, the frame bytes and the source label, and returns the final list. They are attached by PGN
to the built-in J1939 messages only; a user DBC that redefines one of these PGNs gets plain DBC
decoding.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

from fleet.can.model import CanSignal

Derive = Callable[[Mapping[str, Any], list[CanSignal], bytes, str], list[CanSignal]]

PGN_FMS = 64977
PGN_DM1 = 65226
PGN_VW = 65258

# SPN 928: the high nibble counts axles front to back; 0 and 0xF give no position.
_MAX_AXLE = 14

# DM1 byte 1 (status) and byte 2 (flash), two bits per lamp, in canonical-name order.
DM1_LAMPS = ("mil_lamp", "red_stop_lamp", "amber_warning_lamp", "protect_lamp")
# A DTC slot of all zeros means "no active fault"; all ones in the SPN means "not available".
_SPN_NONE = (0, 0x7FFFF)
_OCCURRENCE_NOT_AVAILABLE = 0x7F


def lamp_state(on: bool, flashing: bool) -> str:
    """Name a warning lamp state the same way for DM1 and the FLEX malfunction-lamp field."""
    if flashing:
        return "flashing"
    return "on" if on else "off"


def _vehicle_weight(
    raw: Mapping[str, Any], signals: list[CanSignal], data: bytes, source: str
) -> list[CanSignal]:
    axle = int(raw.get("axle_location", 0xFF)) >> 4
    if not 1 <= axle <= _MAX_AXLE:
        return signals
    return [replace(s, name=f"axle_weight_{axle}") if s.name == "axle_weight" else s for s in signals]


def _dm1(raw: Mapping[str, Any], signals: list[CanSignal], data: bytes, source: str) -> list[CanSignal]:
    out: list[CanSignal] = []
    for lamp in DM1_LAMPS:
        status = int(raw[lamp])
        # Flash codes: 0 slow, 1 fast, 2 reserved, 3 "do not flash".
        flash = int(raw[f"{lamp}_flash"]) in (0, 1)
        value = lamp_state(status == 1, status == 1 and flash) if status in (0, 1) else None
        out.append(CanSignal(lamp, value, None, source))
    spn = int(raw["dtc_spn_low"]) | int(raw["dtc_spn_high"]) << 16
    # Conversion method 1 marks the pre-2003 SPN bit orders, which this decoder does not read.
    if spn in _SPN_NONE or int(raw["dtc_conversion_method"]) != 0:
        return out
    occurrences = int(raw["dtc_occurrence_count"])
    out.append(CanSignal("dtc_spn", spn, None, source))
    out.append(CanSignal("dtc_fmi", int(raw["dtc_fmi"]), None, source))
    out.append(
        CanSignal(
            "dtc_occurrence_count",
            None if occurrences == _OCCURRENCE_NOT_AVAILABLE else occurrences,
            None,
            source,
        )
    )
    return out


def _fms_identity(
    raw: Mapping[str, Any], signals: list[CanSignal], data: bytes, source: str
) -> list[CanSignal]:
    digits = data[1:5]
    # Four ASCII digits "abcd" stand for version ab.cd; anything else is not a version.
    version = None
    if len(digits) == 4 and digits.isdigit():
        text = digits.decode("ascii")
        version = f"{text[:2]}.{text[2:]}"
    return [*signals, CanSignal("fms_sw_version", version, None, source)]


DERIVED_BY_PGN: dict[int, Derive] = {
    PGN_VW: _vehicle_weight,
    PGN_DM1: _dm1,
    PGN_FMS: _fms_identity,
}
