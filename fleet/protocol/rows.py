"""The neutral rows every protocol produces, and the helpers that keep them storable.

A protocol's :class:`fleet.protocol.base.RowSource` turns its Telemetry into :class:`FrameRows`: positions
(one position model for every protocol, protocol-specific values in ``attributes``), CAN signals under
the canonical names of docs/can.md, and events. The writer stages these rows with binary COPY in exactly
the field order declared here; the SQL module derives its column lists from the same declarations
(``PositionRow._fields`` ...), so the two cannot drift apart.

Times are float epoch seconds (``to_timestamp()`` in SQL: asyncpg encodes a float several times faster
than a datetime); ``attributes`` is JSON text (cast to jsonb once, in the INSERT).

Hot paths may build a row from a ready tuple with :func:`make_position` and friends (``tuple.__new__``,
without the keyword-argument constructor's cost); a row is still a NamedTuple with names.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from datetime import datetime
from functools import partial
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    from fleet.can import CanSignal

__all__ = [
    "MAX_UNIX",
    "NO_INDEX",
    "CanRow",
    "EventRow",
    "FrameRows",
    "PositionRow",
    "RawFrameRow",
    "can_rows",
    "coordinates",
    "epoch",
    "make_can",
    "make_event",
    "make_position",
    "real",
    "to_json",
]

NO_INDEX = -1  # a record without a black-box index
# Device clocks outside 1970..9999 are not times.
MAX_UNIX = 253_402_300_799


class PositionRow(NamedTuple):
    """One row of ``positions`` (staged; ``vehicle_id`` is joined in SQL)."""

    device_id: int
    record_index: int
    event_code: int | None
    device_time: float
    fix_time: float | None
    valid: bool
    latitude: float | None
    longitude: float | None
    altitude: float | None
    speed: float | None
    course: float | None
    satellites: int | None
    hdop: float | None
    attributes: str  # JSON text


class CanRow(NamedTuple):
    """One row of ``can_data``: the CAN signals one record or one CAN frame brought (one reading).

    ``record_index`` links a record's reading to its position (None: a CAN frame of its own, which
    ``frame`` then names, e.g. ``0x18FEF100``; empty for a record). ``signals`` is JSON text: an array of
    ``{"name", "value" | "value_text", "unit", "source"}`` objects (see :func:`can_signals_json`).
    """

    device_id: int
    record_index: int | None
    time: float
    frame: str
    signals: str  # JSON text


class EventRow(NamedTuple):
    """One row of ``events``."""

    device_id: int
    time: float
    event_code: int
    event_type: str
    description: str | None
    record_index: int
    attributes: str  # JSON text


class RawFrameRow(NamedTuple):
    """One row of ``raw_frames``."""

    device_id: int | None
    received_at: datetime
    protocol: str
    frame_type: str
    peer: str
    data: bytes
    outcome: str  # ok, rejected, error, ignored
    error: str | None
    # Set when ``data`` is only an excerpt (frames of unidentified or failing peers): the whole frame's
    # length and SHA-256. None when ``data`` is the whole frame.
    frame_length: int | None = None
    frame_sha256: bytes | None = None


make_position = partial(tuple.__new__, PositionRow)
make_can = partial(tuple.__new__, CanRow)
make_event = partial(tuple.__new__, EventRow)


class FrameRows:
    """The rows one telemetry frame contributes to a batch."""

    __slots__ = ("can", "events", "positions", "records")

    def __init__(self) -> None:
        self.positions: list[PositionRow] = []
        self.can: list[CanRow] = []
        self.events: list[EventRow] = []
        self.records = 0


# --- values ---------------------------------------------------------------------------------------------------


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).hex()
    if isinstance(value, set | frozenset):
        return sorted(value)
    return str(value)


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


# One encoder for every record: json.dumps() with options builds a new encoder per call (~40% slower).
_ENCODER = json.JSONEncoder(separators=(",", ":"), default=_json_default, allow_nan=False)

try:  # optional accelerator: about 3x faster on attribute dicts, and NaN/Infinity become null natively
    import orjson as _orjson
except ImportError:  # pragma: no cover - depends on the environment
    _orjson = None  # type: ignore[assignment]
orjson: Any = _orjson


def _to_json_stdlib(data: dict[str, Any] | list[Any]) -> str:
    try:
        return _ENCODER.encode(data)
    except ValueError:
        return _ENCODER.encode(_finite(data))


def to_json(data: dict[str, Any] | list[Any]) -> str:
    """Serialise attributes for jsonb: compact, bytes as hex, NaN/Infinity (invalid in JSON) as null."""
    if orjson is not None:
        try:
            return orjson.dumps(data, default=_json_default).decode()
        except TypeError:  # integers beyond 64 bits, non-string keys: the standard library copes
            pass
    return _to_json_stdlib(data)


def coordinates(lat: float | None, lon: float | None, attributes: dict[str, Any]) -> tuple[Any, Any]:
    """Return (lat, lon) when both are valid degrees; otherwise None, None and keep them in attributes.

    Out-of-range values would make the table's CHECK refuse the whole batch.
    """
    if lat is None or lon is None:
        return None, None
    if -90.0 <= lat <= 90.0 and -180.0 <= lon <= 180.0:
        return lat, lon
    attributes["invalid_latitude"] = lat if math.isfinite(lat) else None
    attributes["invalid_longitude"] = lon if math.isfinite(lon) else None
    return None, None


def real(value: float | None) -> float | None:
    """Return a finite float or None (NaN would be stored as NaN)."""
    return value if value is None or math.isfinite(value) else None


def epoch(value: datetime | None) -> float | None:
    """Return epoch seconds of a datetime (None stays None)."""
    return None if value is None else value.timestamp()


def can_signals_json(signals: Iterable[CanSignal]) -> str | None:
    """Return the stored form of decoded signals (JSON text), or None when none has a value.

    "Not available" (None) and non-finite values are not stored (the raw frame still has them); a text
    value goes to ``value_text``, a missing unit is left out.
    """
    items: list[dict[str, Any]] = []
    for signal in signals:
        value = signal.value
        if value is None:
            continue
        item: dict[str, Any] = {"name": signal.name}
        if isinstance(value, str):
            item["value_text"] = value
        else:
            number = float(value)
            if not math.isfinite(number):
                continue
            item["value"] = number
        if signal.unit is not None:
            item["unit"] = signal.unit
        item["source"] = signal.source
        items.append(item)
    return to_json(items) if items else None


def can_rows(
    device_id: int, index: int | None, time: float, signals: Iterable[CanSignal], frame: str = ""
) -> list[CanRow]:
    """Return the ``can_data`` row of one reading's decoded signals (none when no signal has a value)."""
    stored = can_signals_json(signals)
    return [] if stored is None else [make_can((device_id, index, time, frame, stored))]
