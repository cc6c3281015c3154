"""Navtelecom telemetry into the neutral rows of :mod:`fleet.protocol.rows` (the protocol's RowSource).

What goes where:

* ``positions`` - every FLEX main record (``~A``, ``~T``, ``~C``), legacy NTCB record (``*>T``/``*>A``) and
  text ``~A``. Core values get columns; everything else decoded goes to ``attributes`` (jsonb).
* ``can_data`` - one row per reading: the CAN values a FLEX record carries (via
  :func:`fleet.can.flex_can_signals`), linked to its position; a raw CAN frame of the text dialect
  (``~T``/``~X``) decoded by :class:`fleet.can.CanDecoder`, named by its identifier (an unknown identifier
  is kept as one ``raw`` signal with the data in hex). Signals the vehicle reported as "not available" are
  not stored (the raw frame still holds them).
* ``events`` - what the device reported *as* an event: out-of-turn ``~T`` records (alarms, which the device
  sends ahead of its archive), FLEX 2.0 extra records (``~E``/``~X``: cards, keys, RFID tags) and text
  ``~E``. The event code of ordinary archive records stays in ``positions.event_code``: most of them are
  periodic track points (by time, distance or heading), and copying each into ``events`` would double the
  write volume to repeat what the positions table already indexes by time.

Records without an index get -1 (the ``events`` default), without an event time the fix time, and
without either the reception time (such records cannot be recognised when retransmitted; FLEX masks
without field 3 are not seen in practice). Coordinates outside the valid ranges are dropped (kept in
``attributes``) rather than failing the batch on the table's CHECK constraint.

The FLEX fast path (:class:`FlexPlan`) reads the unpacked record tuple directly instead of the record's
properties; a test holds the two equal.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime
from functools import lru_cache
from typing import Any

from fleet.can import CanDecoder, CanSignal, flex_can_signals
from fleet.can.flex import CAN_FIELDS
from fleet.protocol.base import Telemetry
from fleet.protocol.rows import (
    MAX_UNIX,
    NO_INDEX,
    FrameRows,
    can_rows,
    can_signals_json,
    coordinates,
    epoch,
    make_can,
    make_event,
    make_position,
    real,
    to_json,
)

from .layout import FlexLayout
from .outputs import TelemetryKind
from .records import CanFrame, ExtraRecord, FlexRecord, LegacyRecord
from .text import TextEvent, TextPosition

_ARCHIVE = TelemetryKind.ARCHIVE
_EVENT = TelemetryKind.EVENT
_CAN_FIELD_SET = frozenset(CAN_FIELDS)
# FlexRecord properties that are not columns and not in `attributes`: stored in attributes under these names.
_FLEX_EXTRA_PROPERTIES = ("pdop", "odometer_km", "power_v", "battery_v", "inputs", "outputs")
_LEGACY_COLUMNS = frozenset(
    {
        "index",
        "event_code",
        "device_time",
        "fix_time",
        "valid",
        "latitude",
        "longitude",
        "altitude_m",
        "speed_kmh",
        "course",
        "satellites",
        "raw",
    }
)
_LEGACY_ATTRIBUTES = tuple(f.name for f in dataclasses.fields(LegacyRecord) if f.name not in _LEGACY_COLUMNS)


class FlexPlan:
    """Where a layout's core values sit in ``FlexRecord.values`` (``FlexLayout.slot``), resolved once.

    Reading the unpacked tuple directly costs a fraction of the equivalent ``FlexRecord`` properties; the
    scalings are the protocol's (coordinates 1/600000 degree, altitude dm, HDOP 0.1, validity bit 1 and
    satellites bits 2-7 of field 8), and a test holds them equal to the properties for random records.
    """

    __slots__ = (
        "alt",
        "can",
        "course",
        "event",
        "fix",
        "hdop",
        "index",
        "lat",
        "lon",
        "nav",
        "speed",
        "time",
    )

    def __init__(self, layout: FlexLayout) -> None:
        slot = layout.slot
        self.index, self.event, self.time, self.nav, self.fix = slot[1], slot[2], slot[3], slot[8], slot[9]
        self.lat, self.lon, self.alt, self.speed, self.course = (
            slot[10],
            slot[11],
            slot[12],
            slot[13],
            slot[14],
        )
        self.hdop = slot[71]
        # (field, first value slot, value count) of the CAN fields flex_can_signals reads.
        self.can = tuple(span for span in layout.spans if span[0] in _CAN_FIELD_SET)


class RowBuilder:
    """Builds rows for one process; holds the CAN decoder (not thread-safe, like the event loop)."""

    def __init__(self, can_decoder: CanDecoder | None = None) -> None:
        self.can_decoder = can_decoder or CanDecoder()
        self._plans: dict[int, tuple[FlexLayout, FlexPlan]] = {}

    def telemetry(self, device_id: int, telemetry: Telemetry, received: datetime) -> FrameRows:
        """Return the rows of one decoded telemetry frame."""
        out = FrameRows()
        kind = telemetry.kind
        at = received.timestamp()
        for record in telemetry.records:
            out.records += 1
            if type(record) is FlexRecord:
                self._flex(out, device_id, record, kind, telemetry.event_index, at)
            elif isinstance(record, LegacyRecord):
                self._legacy(out, device_id, record, kind, at)
            elif isinstance(record, ExtraRecord):
                self._extra(out, device_id, record, kind, telemetry.event_index, at)
            elif isinstance(record, TextPosition):
                self._text_position(out, device_id, record)
            elif isinstance(record, CanFrame):
                self._text_can(out, device_id, record, at)
            elif isinstance(record, TextEvent):
                out.events.append(
                    make_event(
                        (
                            device_id,
                            record.time.timestamp(),
                            record.event_type,
                            "text",
                            record.description,
                            NO_INDEX,
                            "{}",
                        )
                    )
                )
        return out

    def plan(self, layout: FlexLayout) -> FlexPlan:
        """Return the (cached) plan of a layout."""
        known = self._plans.get(id(layout))
        if known is not None and known[0] is layout:
            return known[1]
        plan = FlexPlan(layout)
        self._plans[id(layout)] = (layout, plan)  # the layout is kept alive, so its id stays its own
        return plan

    # --- FLEX --------------------------------------------------------------------------------------------
    def _flex(
        self,
        out: FrameRows,
        device_id: int,
        record: FlexRecord,
        kind: str,
        event_index: int | None,
        received: float,
    ) -> None:
        plan = self.plan(record.layout)
        v = record.values
        attributes = record.attributes
        for name in _FLEX_EXTRA_PROPERTIES:
            value = getattr(record, name)
            if value is not None:
                attributes[name] = value
        if kind is not _ARCHIVE:
            attributes["frame"] = str(kind)
        index = v[plan.index] if plan.index >= 0 else NO_INDEX
        event_code = v[plan.event] if plan.event >= 0 else None
        seconds = v[plan.fix] if plan.fix >= 0 else 0
        fix_time = float(seconds) if 0 < seconds <= MAX_UNIX else None
        seconds = v[plan.time] if plan.time >= 0 else 0
        device_time = (
            float(seconds) if 0 < seconds <= MAX_UNIX else fix_time if fix_time is not None else received
        )
        nav = v[plan.nav] if plan.nav >= 0 else None
        lat, lon = (
            coordinates(v[plan.lat] / 600000, v[plan.lon] / 600000, attributes)
            if plan.lat >= 0 and plan.lon >= 0
            else (None, None)
        )
        hdop = v[plan.hdop] if plan.hdop >= 0 else 0
        out.positions.append(
            make_position(
                (
                    device_id,
                    index,
                    event_code,
                    device_time,
                    fix_time,
                    nav is not None and bool(nav & 2),
                    lat,
                    lon,
                    v[plan.alt] / 10 if plan.alt >= 0 else None,
                    real(v[plan.speed]) if plan.speed >= 0 else None,
                    v[plan.course] if plan.course >= 0 else None,
                    nav >> 2 if nav is not None else None,
                    hdop / 10 if hdop else None,
                    to_json(attributes),
                )
            )
        )
        if plan.can:
            wire = tuple(
                (n, v[start] if count == 1 else v[start : start + count]) for n, start, count in plan.can
            )
            signals = _flex_can_json(wire)
            if signals is not None:
                out.can.append(make_can((device_id, index, device_time, "", signals)))
        if kind is _EVENT:
            details = {"frame": "T", "event_index": event_index}
            out.events.append(
                make_event((device_id, device_time, event_code or 0, "alarm", None, index, to_json(details)))
            )

    # --- legacy NTCB, FLEX 2.0 extra records ---------------------------------------------------------------
    def _legacy(
        self, out: FrameRows, device_id: int, record: LegacyRecord, kind: str, received: float
    ) -> None:
        attributes = {name: getattr(record, name) for name in _LEGACY_ATTRIBUTES}
        attributes["frame"] = str(kind)
        lat, lon = coordinates(record.latitude, record.longitude, attributes)
        fix_time = epoch(record.fix_time)
        device_time = epoch(record.device_time) or fix_time or received
        out.positions.append(
            make_position(
                (
                    device_id,
                    record.index,
                    record.event_code,
                    device_time,
                    fix_time,
                    bool(record.valid),
                    lat,
                    lon,
                    record.altitude_m,
                    real(record.speed_kmh),
                    record.course,
                    record.satellites,
                    None,
                    to_json(attributes),
                )
            )
        )

    def _extra(
        self,
        out: FrameRows,
        device_id: int,
        record: ExtraRecord,
        kind: str,
        event_index: int | None,
        received: float,
    ) -> None:
        lat, lon = (record.latitude, record.longitude) if record.valid else (None, None)
        details: dict[str, Any] = {
            "frame": str(kind),
            "valid": record.valid,
            "satellites": record.satellites,
            "fix_time": record.fix_time,
            "latitude": lat,
            "longitude": lon,
            "altitude_m": record.altitude_m,
            "speed_kmh": record.speed_kmh,
            "course": record.course,
            "odometer_km": record.odometer_km,
            "items": [{"type": item.type, "value": item.value} for item in record.items],
        }
        if event_index is not None:
            details["event_index"] = event_index
        time = epoch(record.device_time) or epoch(record.fix_time) or received
        out.events.append(
            make_event((device_id, time, record.event_code, "extra", None, record.index, to_json(details)))
        )

    # --- text dialect ------------------------------------------------------------------------------------------
    def _text_position(self, out: FrameRows, device_id: int, record: TextPosition) -> None:
        time = record.time.timestamp()
        out.positions.append(
            make_position(
                (
                    device_id,
                    NO_INDEX,
                    None,
                    time,
                    time,
                    record.satellites > 0,
                    record.latitude,
                    record.longitude,
                    None,
                    record.speed_kmh,
                    record.course,
                    record.satellites,
                    record.hdop,
                    '{"frame":"text"}',
                )
            )
        )

    def _text_can(self, out: FrameRows, device_id: int, frame: CanFrame, received: float) -> None:
        time = epoch(frame.time) or received
        width = 8 if frame.extended else 3
        name = f"0x{frame.can_id:0{width}X}"
        signals = self.can_decoder.decode(frame.can_id, frame.data, frame.extended)
        if signals:
            out.can.extend(can_rows(device_id, None, time, signals, name))
            return
        raw = CanSignal("raw", frame.data.hex(), None, f"CAN:{name}")
        out.can.extend(can_rows(device_id, None, time, (raw,), name))


@lru_cache(maxsize=1024)
def _flex_can_signals(wire: tuple[tuple[int, Any], ...]) -> tuple[CanSignal, ...]:
    """Return flex_can_signals for one record's CAN fields, memoised.

    Consecutive records mostly repeat these values ("not available" on trackers without a CAN adapter,
    slowly changing readings otherwise) and signals are immutable, so sharing results is safe.
    """
    return tuple(flex_can_signals(dict(wire)))


@lru_cache(maxsize=1024)
def _flex_can_json(wire: tuple[tuple[int, Any], ...]) -> str | None:
    """Return the stored signals (JSON text) of one record's CAN fields, memoised like
    ``_flex_can_signals``: the checks and the encoding run once per distinct reading, not once per record."""
    return can_signals_json(_flex_can_signals(wire))
