"""Decoded telemetry records: FLEX main records, FLEX 2.0 extra records, legacy NTCB F-format records."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from .convert import unix_to_datetime

if TYPE_CHECKING:
    from .layout import FlexLayout

__all__ = ["CanFrame", "ExtraItem", "ExtraRecord", "FlexRecord", "LegacyRecord"]


@dataclass(frozen=True, slots=True)
class FlexRecord:
    """One FLEX main record decoded with a negotiated layout.

    The record holds the values unpacked by the layout's single ``struct.Struct`` (``values``, in field
    order, multi-part fields spread over several items) and its raw bytes. Typed, unit-bearing values are
    derived on access so that decoding an archive costs one ``unpack`` per record:

    * position and status properties (``index``, ``device_time``, ``latitude``, ``power_v``...), None when
      the field is not in the mask or carries its "not available" value;
    * ``fields``: ``{field number: wire value}`` (int/float, tuple for multi-part fields, bytes for
      opaque user parameters), lossless, for code that maps fields itself (fleet/can: 53-69, 201-204);
    * ``attributes``: ``{snake_case name: converted value}`` for every present non-core field, names and
      units as published in docs/navtelecom_fields.md.
    Both mappings are new dicts built on each access: keep a reference instead of calling repeatedly.
    """

    layout: FlexLayout = field(repr=False)
    values: tuple[Any, ...]
    raw: bytes = field(repr=False)

    def _value(self, number: int) -> Any:
        slot = self.layout.slot[number]
        return None if slot < 0 else self.values[slot]

    @property
    def index(self) -> int | None:
        """Return the black-box record index (field 1)."""
        return self._value(1)

    @property
    def event_code(self) -> int | None:
        """Return the event code (field 2)."""
        return self._value(2)

    @property
    def device_time(self) -> datetime | None:
        """Return the event time (field 3) as an aware UTC datetime."""
        slot = self.layout.slot[3]
        return None if slot < 0 else unix_to_datetime(self.values[slot])

    @property
    def fix_time(self) -> datetime | None:
        """Return the time of the last valid fix (field 9)."""
        slot = self.layout.slot[9]
        return None if slot < 0 else unix_to_datetime(self.values[slot])

    @property
    def valid(self) -> bool | None:
        """Return whether the receiver had a valid fix (field 8, bit 1)."""
        slot = self.layout.slot[8]
        return None if slot < 0 else bool(self.values[slot] & 2)

    @property
    def satellites(self) -> int | None:
        """Return the number of satellites used (field 8, bits 2-7)."""
        slot = self.layout.slot[8]
        return None if slot < 0 else self.values[slot] >> 2

    @property
    def latitude(self) -> float | None:
        """Return the last valid latitude in degrees (field 10)."""
        slot = self.layout.slot[10]
        return None if slot < 0 else self.values[slot] / 600000

    @property
    def longitude(self) -> float | None:
        """Return the last valid longitude in degrees (field 11)."""
        slot = self.layout.slot[11]
        return None if slot < 0 else self.values[slot] / 600000

    @property
    def altitude_m(self) -> float | None:
        """Return the last valid altitude in metres (field 12)."""
        slot = self.layout.slot[12]
        return None if slot < 0 else self.values[slot] / 10

    @property
    def speed_kmh(self) -> float | None:
        """Return the speed at the last valid fix in km/h (field 13)."""
        return self._value(13)

    @property
    def course(self) -> int | None:
        """Return the course in degrees (field 14)."""
        return self._value(14)

    @property
    def hdop(self) -> float | None:
        """Return the HDOP (field 71, first byte / 10); None when 0."""
        slot = self.layout.slot[71]
        if slot < 0 or not self.values[slot]:
            return None
        return self.values[slot] / 10

    @property
    def pdop(self) -> float | None:
        """Return the PDOP (field 71, second byte / 10); None when 0."""
        slot = self.layout.slot[71]
        if slot < 0 or not self.values[slot + 1]:
            return None
        return self.values[slot + 1] / 10

    @property
    def odometer_km(self) -> float | None:
        """Return the GNSS mileage in km (field 15)."""
        return self._value(15)

    @property
    def power_v(self) -> float | None:
        """Return the main power voltage in volts (field 19)."""
        slot = self.layout.slot[19]
        return None if slot < 0 else self.values[slot] / 1000

    @property
    def battery_v(self) -> float | None:
        """Return the backup battery voltage in volts (field 20)."""
        slot = self.layout.slot[20]
        return None if slot < 0 else self.values[slot] / 1000

    @property
    def inputs(self) -> int | None:
        """Return discrete inputs as one bit mask: In1-8 (field 29), In9-16 (30), In17-24 (126)."""
        return self._bits((29, 0), (30, 8), (126, 16))

    @property
    def outputs(self) -> int | None:
        """Return outputs as one bit mask: Out1-8 (field 31), Out9-16 (field 32)."""
        return self._bits((31, 0), (32, 8))

    def _bits(self, *parts: tuple[int, int]) -> int | None:
        slot_of = self.layout.slot
        result = None
        for number, shift in parts:
            slot = slot_of[number]
            if slot >= 0:
                result = (result or 0) | (self.values[slot] << shift)
        return result

    @property
    def fields(self) -> dict[int, Any]:
        """Return ``{field number: wire value}`` for every field of the layout."""
        values = self.values
        plans = self.layout.plans
        out = dict(zip(plans.scalar_numbers, plans.scalar_get(values), strict=True))
        for number, start, count in plans.multi_fields:
            out[number] = values[start : start + count]
        return out

    @property
    def attributes(self) -> dict[str, Any]:
        """Return ``{name: converted value}`` for every present field not exposed as a property."""
        plans = self.layout.plans
        if plans.attributes is not None:
            return plans.attributes(self.values)
        return self.recipe_attributes()

    def recipe_attributes(self) -> dict[str, Any]:
        """The attributes built step by step from the layout's recipes: the fallback for a layout without
        generated code, and the reference the generated code is tested against."""
        values = self.values
        plans = self.layout.plans
        out: dict[str, Any] = dict(zip(plans.plain_names, plans.plain_get(values), strict=True))
        out.update(
            zip(
                plans.converted_names,
                [
                    convert(value)
                    for convert, value in zip(plans.converters, plans.converted_get(values), strict=True)
                ],
                strict=True,
            )
        )
        for names, start, count, converter in plans.general:
            value = values[start] if count == 1 else values[start : start + count]
            if converter is not None:
                value = converter(value)
            if len(names) == 1:
                out[names[0]] = value
            else:
                out.update(zip(names, value, strict=True))
        return out

    def as_dict(self) -> dict[str, Any]:
        """Return the core properties and the attributes in one flat dict (for storage and logs)."""
        out: dict[str, Any] = {
            "index": self.index,
            "event_code": self.event_code,
            "device_time": self.device_time,
            "fix_time": self.fix_time,
            "valid": self.valid,
            "latitude": self.latitude,
            "longitude": self.longitude,
            "altitude_m": self.altitude_m,
            "speed_kmh": self.speed_kmh,
            "course": self.course,
            "satellites": self.satellites,
            "hdop": self.hdop,
            "pdop": self.pdop,
            "odometer_km": self.odometer_km,
            "power_v": self.power_v,
            "battery_v": self.battery_v,
            "inputs": self.inputs,
            "outputs": self.outputs,
        }
        out.update(self.attributes)
        return out


@dataclass(frozen=True, slots=True)
class ExtraItem:
    """One TLV item of a FLEX 2.0 extra record's dynamic part."""

    type: int  # 1 Touch-Memory key, 2 tachograph card, 3 RFID tag, others reserved
    value: int | bytes  # U64 for types 1 and 3, raw bytes otherwise


@dataclass(frozen=True, slots=True)
class ExtraRecord:
    """A FLEX 2.0 extra record (``~E``/``~X``, DOC App. A.2): rarely changing data such as keys and cards."""

    index: int
    event_code: int
    device_time: datetime | None
    valid: bool
    satellites: int
    fix_time: datetime | None
    latitude: float
    longitude: float
    altitude_m: float
    speed_kmh: float
    course: int
    odometer_km: float
    items: tuple[ExtraItem, ...]
    static_version: int
    raw: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class LegacyRecord:
    """A record of the static NTCB telemetry formats F1-F6 (``*>T``/``*>A``, DOC §1, "no longer used")."""

    format: int  # 0x01 F1 .. 0x06 F6, 0x15 F5.1, 0x25 F5.2
    index: int
    event_code: int
    device_time: datetime | None
    armed_raw: int
    status: int
    gsm_level: int
    outputs: int
    inputs: int
    power_v: float
    battery_v: float
    satellites: int | None = None
    temperature_c: int | None = None  # F1-F3 board temperature
    adc: tuple[int, ...] = ()
    counters: tuple[int, ...] = ()
    valid: bool | None = None
    fix_time: datetime | None = None
    latitude: float | None = None
    longitude: float | None = None
    altitude_m: float | None = None
    speed_kmh: float | None = None
    course: int | None = None
    odometer_km: float | None = None
    segment_km: float | None = None
    segment_times_s: tuple[int, ...] = ()
    temperatures_c: tuple[int | None, ...] = ()  # F4, F5.2, F6: four 1-Wire sensors, None if -128
    fuel_raw: bytes = b""  # F6 fuel-sensor block, kept uninterpreted
    extra_raw: bytes = b""  # F5.1/F5.2 15-byte block, kept uninterpreted
    axle_weight: int | None = None
    rpm: int | None = None
    raw: bytes = field(default=b"", repr=False)


@dataclass(frozen=True, slots=True)
class CanFrame:
    """A raw CAN frame reported by the text dialect (decoded elsewhere, in fleet/can)."""

    can_id: int
    data: bytes
    extended: bool
    time: datetime | None


# Decoding an archive builds one FlexRecord per record; storing the three slots through their member
# descriptors skips the frozen dataclass __init__ (object.__setattr__ per field) and is ~15 % faster on
# the hot path. Only the codec uses this; everyone else constructs records normally.
_new_object = object.__new__
_slots = vars(FlexRecord)
_set_layout = _slots["layout"].__set__
_set_values = _slots["values"].__set__
_set_raw = _slots["raw"].__set__


def new_flex_record(layout: FlexLayout, values: tuple[Any, ...], raw: bytes) -> FlexRecord:
    """Return ``FlexRecord(layout, values, raw)`` built without the dataclass ``__init__``."""
    record = _new_object(FlexRecord)
    _set_layout(record, layout)
    _set_values(record, values)
    _set_raw(record, raw)
    return record
