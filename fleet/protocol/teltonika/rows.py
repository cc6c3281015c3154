"""Teltonika AVL records into the neutral rows (the protocol's RowSource).

* ``positions`` - one row per record. ``record_index`` is the record's CRC-32 fingerprint: Teltonika has
  no black-box index, and the table's key (device, time, index) then recognises a retransmitted record
  while keeping two different records that share a timestamp. ``event_code`` is the IO element that
  triggered the record (0: periodic). ``valid`` = satellites > 0 (spec §3); a 0/0 position is stored
  without coordinates. The fix time is the record time when valid. IO elements go to ``attributes`` by
  their names in docs/teltonika_io.md (unknown ones as ``io<id>``), with ``priority`` (and
  ``generation_type`` for Codec 16); a timestamp before 2010 or a day after reception adds
  ``time_valid: false`` (an RTC not set yet; the record is still stored as sent, spec §8 #3).
* ``can_data`` - CAN/LVCAN and OBD elements under the canonical names of docs/can.md, source
  ``TELTONIKA:IO<id>``, linked to the position.
* ``events`` - panic-priority records, and records triggered by an alarm element (alarm, towing, crash,
  jamming, unplug) with a non-zero value; event type ``alarm``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fleet.can.model import CanSignal
from fleet.protocol.base import Telemetry
from fleet.protocol.rows import FrameRows, can_rows, make_event, make_position, to_json

from .avl import AvlRecord
from .io_table import IO_ELEMENTS, IoSpec

__all__ = ["TeltonikaRows", "convert"]

HDOP_IO = 182
PANIC = 2
EARLIEST_VALID_TIME = 1_262_304_000.0  # 2010-01-01: earlier record times come from an unset RTC
FUTURE_SLACK_SEC = 86_400.0


def _number(spec: IoSpec, value: int) -> int:
    """Return the wire integer as the element's signedness says (two's complement of its size)."""
    if spec.signed:
        bits = (spec.size or 8) * 8
        if value >= 1 << (bits - 1):
            return value - (1 << bits)
    return value


def convert(spec: IoSpec, value: int | bytes) -> Any:
    """Return an element's attribute value from its raw wire value."""
    if isinstance(value, bytes):
        if spec.text:
            return value.decode("ascii", "replace").rstrip("\x00")
        return value.hex()
    number = _number(spec, value)
    if spec.scale is not None:
        return round(number * spec.scale, spec.decimals)
    return number


def _signals(spec: IoSpec, value: int | bytes) -> list[CanSignal]:
    if isinstance(value, bytes):
        return []
    source = f"TELTONIKA:IO{spec.id}"
    out = []
    if spec.can is not None:
        name, unit, factor = spec.can
        number = _number(spec, value)
        out.append(CanSignal(name, number if factor == 1.0 else round(number * factor, 6), unit, source))
    for mask, name in spec.can_bits:
        out.append(CanSignal(name, 1 if value & mask else 0, None, source))
    return out


class TeltonikaRows:
    """Builds rows from Teltonika Telemetry."""

    def telemetry(self, device_id: int, telemetry: Telemetry, received: datetime) -> FrameRows:
        """Return the rows of one AVL packet."""
        out = FrameRows()
        at = received.timestamp()
        table = IO_ELEMENTS
        for record in telemetry.records:
            out.records += 1
            self._record(out, device_id, record, at, table)
        return out

    def _record(
        self, out: FrameRows, device_id: int, record: AvlRecord, received: float, table: dict[int, IoSpec]
    ) -> None:
        attributes: dict[str, Any] = {"priority": record.priority}
        if record.generation_type is not None:
            attributes["generation_type"] = record.generation_type
        signals: list[CanSignal] = []
        hdop = None
        alarm: IoSpec | None = None
        for element, value in record.io:
            spec = table.get(element)
            if spec is None:
                attributes[f"io{element}"] = value.hex() if isinstance(value, bytes) else value
                continue
            if spec.missing and value in spec.missing:
                attributes[spec.name] = None
                attributes[spec.name + "_error"] = value
                continue
            converted = convert(spec, value)
            attributes[spec.name] = converted
            if element == HDOP_IO:
                hdop = converted
            if spec.can is not None or spec.can_bits:
                signals.extend(_signals(spec, value))
            if spec.alarm and element == record.event_id and value:
                alarm = spec
        seconds = record.timestamp_ms / 1000
        if not EARLIEST_VALID_TIME <= seconds <= received + FUTURE_SLACK_SEC:
            attributes["time_valid"] = False
        valid = record.satellites > 0
        lat: float | None = None
        lon: float | None = None
        latitude, longitude = record.latitude, record.longitude
        if not (-90.0 <= latitude <= 90.0 and -180.0 <= longitude <= 180.0):
            attributes["invalid_latitude"], attributes["invalid_longitude"] = latitude, longitude
        elif latitude or longitude:  # 0/0 is never a real position (spec §3)
            lat, lon = latitude, longitude
        index = record.fingerprint
        out.positions.append(
            make_position(
                (
                    device_id,
                    index,
                    record.event_id,
                    seconds,
                    seconds if valid else None,
                    valid,
                    lat,
                    lon,
                    float(record.altitude),
                    float(record.speed),
                    float(record.angle),
                    record.satellites,
                    hdop,
                    to_json(attributes),
                )
            )
        )
        if signals:
            out.can.extend(can_rows(device_id, index, seconds, signals))
        if record.priority == PANIC or alarm is not None:
            details = {"priority": record.priority, "io": alarm.name if alarm else None}
            if alarm is not None:
                details["value"] = attributes.get(alarm.name)
            description = alarm.name if alarm is not None else "panic"
            out.events.append(
                make_event(
                    (device_id, seconds, record.event_id, "alarm", description, index, to_json(details))
                )
            )
