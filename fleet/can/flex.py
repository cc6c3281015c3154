"""Canonical CAN signals from the CAN fields of Navtelecom FLEX records (fields 53-69 and 201-204).

The tracker reads the vehicle bus itself and reports finished values in these fields (meanings from
the protocol document v6.1, appendix A.1, see /work/shared/spec/navtelecom.md section 3). The input
is ``FlexRecord.fields`` of fleet.protocol.navtelecom: ``{field number: wire value}``, lossless, so
each field's "not read" sentinel is recognised here; ``None`` for a field is accepted as "not read"
too. Everything comes out under the same names and units as decoded J1939 / OBD-II frames.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import structlog

from fleet.can.derived import DM1_LAMPS, lamp_state
from fleet.can.model import CanSignal

log = structlog.get_logger(__name__)

FUEL_LEVEL_FIELD = 53
ADBLUE_LEVEL_FIELD = 66
SECURITY_FLAGS_FIELD = 201
SECURITY_EVENT_FIELD = 202
WARNING_LAMPS_FIELD = 203
MALFUNCTION_FIELD = 204

SECONDS_PER_HOUR = 3600
U8_NOT_READ = 0xFF
U16_NOT_READ = 0xFFFF
I8_NOT_READ = -128
# Fields 53 and 66 as the raw U16: bit 15 set -> bits 0-14 are percent, clear -> 0.1 l units.
LEVEL_NOT_READ = 0x7FFF
LEVEL_PERCENT_FLAG = 0x8000
LEVEL_LITRES_PER_UNIT = 0.1


@dataclass(frozen=True, slots=True)
class _Numeric:
    name: str
    unit: str | None
    scale: float = 1
    not_read: int | None = None  # the field's own sentinel, in case a raw value slips through
    negative_is_missing: bool = False  # float fields report "not read" as a negative number
    decimals: int | None = None


_NUMERIC: dict[int, _Numeric] = {
    54: _Numeric("fuel_used_total", "l", negative_is_missing=True),
    55: _Numeric("engine_speed", "rpm", not_read=U16_NOT_READ),
    56: _Numeric("coolant_temperature", "°C", not_read=I8_NOT_READ),
    57: _Numeric("vehicle_distance", "km", negative_is_missing=True),
    **{58 + i: _Numeric(f"axle_weight_{i + 1}", "kg", not_read=U16_NOT_READ) for i in range(5)},
    63: _Numeric("accelerator_pedal", "%", not_read=U8_NOT_READ),
    64: _Numeric("brake_pedal", "%", not_read=U8_NOT_READ),
    65: _Numeric("engine_load", "%", not_read=U8_NOT_READ),
    # Seconds on the wire; hours everywhere else. Six decimals keep the one-second resolution.
    67: _Numeric("engine_hours", "h", scale=1 / SECONDS_PER_HOUR, decimals=6),
    # I16 in units of 5 km; "not read" is -1 (0xFFFF).
    68: _Numeric("service_distance", "km", scale=5, negative_is_missing=True),
    69: _Numeric("vehicle_speed", "km/h", not_read=U8_NOT_READ),
}

_LEVELS: dict[int, tuple[str, str]] = {
    FUEL_LEVEL_FIELD: ("fuel_level", "fuel_level_volume"),
    ADBLUE_LEVEL_FIELD: ("adblue_level", "adblue_level_volume"),
}
_PERCENT_KEYS = ("percent", "%", "pct")
_LITRE_KEYS = ("litres", "liters", "litre", "liter", "l")

# Field 201, CAN security flags: bit -> canonical name (bit 7 is not assigned).
SECURITY_FLAG_BITS: dict[int, str] = {
    0: "ignition",
    1: "factory_alarm_armed",
    2: "locked_by_key_fob",
    3: "key_in_lock",
    4: "ignition_2",
    5: "front_passenger_door_open",
    6: "rear_doors_open",
    8: "driver_door_open",
    9: "passenger_doors_open",
    10: "trunk_open",
    11: "hood_open",
    12: "parking_brake",
    13: "brake_switch",
    14: "engine_running",
    15: "webasto",
}
# Field 202, last CAN security event.
SECURITY_EVENTS: dict[int, str] = {
    0: "none",
    1: "locked_by_key_fob",
    2: "unlocked_by_key_fob",
    3: "trunk_opened_by_key_fob",
    4: "rearm",
    7: "module_sleep",
}
# Field 203, dashboard warning lamps: the bits the protocol document names unambiguously. The
# whole bitfield is reported too, so the unnamed bits are not lost.
WARNING_LAMP_BITS: dict[int, str] = {
    0: "warning_stop",
    1: "warning_oil",
    2: "warning_coolant",
    3: "warning_parking_brake",
    4: "warning_battery_charging",
    5: "warning_airbag",
    8: "warning_check_engine",
}
# Field 204 byte 0: bits 0-3 lamp on, bits 4-7 lamp flashing, in this order.
_MALFUNCTION_LAMPS = DM1_LAMPS
_MALFUNCTION_BYTES = 5


def _number(value: Any) -> float | int | None:
    """Return a finite int or float, or None for anything else (bools are not numbers here)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _numeric(field_no: int, spec: _Numeric, value: Any) -> CanSignal | None:
    source = f"FLEX:F{field_no}"
    # NaN and infinities are what an IEEE float field holds when nothing was measured.
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return CanSignal(spec.name, None, spec.unit, source)
    number = _number(value)
    if number is None:
        log.debug("can.flex_value_ignored", field=field_no, type=type(value).__name__)
        return None
    if number == spec.not_read or (spec.negative_is_missing and number < 0):
        return CanSignal(spec.name, None, spec.unit, source)
    if spec.scale != 1:
        number = number * spec.scale
        if isinstance(number, float) and not math.isfinite(number):  # a float near the limit, scaled past it
            return CanSignal(spec.name, None, spec.unit, source)
    if spec.decimals is not None:
        number = round(number, spec.decimals)
    return CanSignal(spec.name, number, spec.unit, source)


def _level(field_no: int, value: Any) -> CanSignal | None:
    percent_name, volume_name = _LEVELS[field_no]
    source = f"FLEX:F{field_no}"
    if value is None:
        return CanSignal(percent_name, None, "%", source)
    if isinstance(value, Mapping):
        for key in _PERCENT_KEYS:
            if key in value:
                return CanSignal(percent_name, _number(value[key]), "%", source)
        for key in _LITRE_KEYS:
            if key in value:
                return CanSignal(volume_name, _number(value[key]), "l", source)
    elif isinstance(value, tuple | list) and len(value) == 2:
        # (unit, number) or (number, unit)
        unit, number = value if isinstance(value[0], str) else value[::-1]
        if isinstance(unit, str):
            return _level(field_no, {unit.lower(): number})
    elif isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= U16_NOT_READ:
        # A bare integer can only be the field's raw U16: a decoded level needs its unit.
        if value & LEVEL_NOT_READ == LEVEL_NOT_READ:
            return CanSignal(percent_name, None, "%", source)
        if value & LEVEL_PERCENT_FLAG:
            return CanSignal(percent_name, value & LEVEL_NOT_READ, "%", source)
        return CanSignal(volume_name, round(value * LEVEL_LITRES_PER_UNIT, 1), "l", source)
    log.debug("can.flex_value_ignored", field=field_no, type=type(value).__name__)
    return None


def _bits(value: int, names: Mapping[int, str], source: str) -> list[CanSignal]:
    return [CanSignal(name, (value >> bit) & 1, None, source) for bit, name in names.items()]


def _unsigned(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return None
    return value


def _malformed_field(field_no: int, value: Any) -> list[CanSignal]:
    log.debug("can.flex_value_ignored", field=field_no, type=type(value).__name__)
    return []


def _security_flags(value: Any) -> list[CanSignal]:
    source = f"FLEX:F{SECURITY_FLAGS_FIELD}"
    if value is None:
        return [CanSignal(name, None, None, source) for name in SECURITY_FLAG_BITS.values()]
    flags = _unsigned(value)
    if flags is None:
        return _malformed_field(SECURITY_FLAGS_FIELD, value)
    return _bits(flags, SECURITY_FLAG_BITS, source)


def _security_event(value: Any) -> list[CanSignal]:
    source = f"FLEX:F{SECURITY_EVENT_FIELD}"
    if value is None:
        return [CanSignal("security_last_event", None, None, source)]
    code = _unsigned(value)
    if code is None:
        return _malformed_field(SECURITY_EVENT_FIELD, value)
    label = SECURITY_EVENTS.get(code, f"event_{code}")
    return [CanSignal("security_last_event", label, None, source)]


def _warning_lamps(value: Any) -> list[CanSignal]:
    source = f"FLEX:F{WARNING_LAMPS_FIELD}"
    if value is None:
        return [CanSignal("dashboard_warning_lamps", None, None, source)]
    lamps = _unsigned(value)
    if lamps is None:
        return _malformed_field(WARNING_LAMPS_FIELD, value)
    return [
        CanSignal("dashboard_warning_lamps", lamps, None, source),
        *_bits(lamps, WARNING_LAMP_BITS, source),
    ]


def _malfunction_parts(value: Any) -> tuple[int, int] | None:
    """Accept field 204 as {"lamps", "dtc"}, a (lamps, dtc) pair, its 5 raw bytes or a 40-bit int."""
    if isinstance(value, Mapping):
        lamps, dtc = value.get("lamps"), value.get("dtc")
    elif isinstance(value, tuple | list) and len(value) == 2:
        lamps, dtc = value
    elif isinstance(value, bytes | bytearray) and len(value) == _MALFUNCTION_BYTES:
        lamps, dtc = value[0], int.from_bytes(value[1:], "little")
    elif (number := _unsigned(value)) is not None and number < 1 << 40:
        lamps, dtc = number & 0xFF, number >> 8
    else:
        return None
    lamps, dtc = _unsigned(lamps), _unsigned(dtc)
    if lamps is None or dtc is None or lamps > 0xFF:
        return None
    return lamps, dtc


def _malfunction(value: Any) -> list[CanSignal]:
    source = f"FLEX:F{MALFUNCTION_FIELD}"
    if value is None:
        return [CanSignal(lamp, None, None, source) for lamp in _MALFUNCTION_LAMPS]
    parts = _malfunction_parts(value)
    if parts is None:
        return _malformed_field(MALFUNCTION_FIELD, value)
    lamps, dtc = parts
    out = [
        CanSignal(lamp, lamp_state(bool(lamps >> i & 1), bool(lamps >> (i + 4) & 1)), None, source)
        for i, lamp in enumerate(_MALFUNCTION_LAMPS)
    ]
    # The document gives the code as a plain U32; zero means no active code.
    if dtc:
        out.append(CanSignal("dtc_code", dtc, None, source))
    return out


_STRUCTURED = {
    SECURITY_FLAGS_FIELD: _security_flags,
    SECURITY_EVENT_FIELD: _security_event,
    WARNING_LAMPS_FIELD: _warning_lamps,
    MALFUNCTION_FIELD: _malfunction,
}
CAN_FIELDS = tuple(sorted({*_NUMERIC, *_LEVELS, *_STRUCTURED}))


def flex_can_signals(fields: Mapping[int, Any]) -> list[CanSignal]:
    """Return canonical signals for the CAN fields present in one FLEX record, in field order.

    A field present with the value None yields its signal(s) with value None, as a J1939 "not
    available" does; absent fields yield nothing; values of an unexpected shape are skipped.
    """
    out: list[CanSignal] = []
    for field_no in CAN_FIELDS:
        if field_no not in fields:
            continue
        value = fields[field_no]
        if field_no in _NUMERIC:
            signal = _numeric(field_no, _NUMERIC[field_no], value)
            if signal is not None:
                out.append(signal)
        elif field_no in _LEVELS:
            signal = _level(field_no, value)
            if signal is not None:
                out.append(signal)
        else:
            out.extend(_STRUCTURED[field_no](value))
    return out
