"""Positions of pull vehicles: which Outbound API channels carry a GPS fix, and the position rows they make.

A vehicle's channels are matched by name and unit (`recognise`), unless `vehicles.gps_channels` maps them
explicitly (`{"latitude": 16, "longitude": 17, "speed": 1, "course": 18, "altitude": 19, "satellites": 20}`;
`{"off": true}` turns positions off for the vehicle). The name rule, in full (docs/LIVE.md repeats it):

* a name is split into lower-case words at anything that is not a letter or digit and at camelCase humps
  (`GPS_Latitude`, `gps.lat`, `gpsLat` → `gps`, `lat(itude)`);
* latitude: a word `lat`, `latitude`, `широта`; longitude: `lon`, `lng`, `long`, `longitude`, `довгота`,
  `долгота`; both with a unit that is empty or degrees (`°`, `deg`, `degree(s)`, `dd`);
* optional: speed (`speed`, `velocity`; km/h, m/s, mph or knots, converted to km/h), course (`course`,
  `heading`, `bearing`, `azimuth`; degrees), altitude (`altitude`, `alt`, `elevation`; m or ft), satellites
  (`satellites`, `sats`);
* several candidates for one field: a name that is nothing but the word wins, then one with `gps`/`gnss` in it;
  still several, or no latitude/longitude pair: the vehicle gets no positions (a mapping settles it).

A position is made for every time at which both latitude and longitude have a value inside their ranges; the
other fields join when they have a value at the very same time. (0, 0) is what receivers without a fix
report: it makes no position.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

from fleet.sync.models import ChannelInfo, Row

FIELDS = ("latitude", "longitude", "speed", "course", "altitude", "satellites")
_WORDS: dict[str, frozenset[str]] = {
    "latitude": frozenset({"lat", "latitude", "широта"}),
    "longitude": frozenset({"lon", "lng", "long", "longitude", "довгота", "долгота"}),
    "speed": frozenset({"speed", "velocity", "швидкість", "скорость"}),
    "course": frozenset({"course", "heading", "bearing", "azimuth", "курс"}),
    "altitude": frozenset({"altitude", "alt", "elevation", "висота", "высота"}),
    "satellites": frozenset({"satellites", "sats", "satellite"}),
}
_DEGREES = frozenset({"", "°", "deg", "degree", "degrees", "dd", "град"})
# Unit (normalised) → factor to the position's unit, per field; a unit not listed disqualifies the channel.
_UNITS: dict[str, dict[str, float]] = {
    "latitude": dict.fromkeys(_DEGREES, 1.0),
    "longitude": dict.fromkeys(_DEGREES, 1.0),
    "course": dict.fromkeys(_DEGREES, 1.0),
    "speed": {
        "": 1.0,
        "km/h": 1.0,
        "kmh": 1.0,
        "kph": 1.0,
        "км/ч": 1.0,
        "км/год": 1.0,
        "m/s": 3.6,
        "mph": 1.609344,
        "kn": 1.852,
        "kt": 1.852,
        "knots": 1.852,
    },
    "altitude": {
        "": 1.0,
        "m": 1.0,
        "meter": 1.0,
        "meters": 1.0,
        "metre": 1.0,
        "metres": 1.0,
        "м": 1.0,
        "ft": 0.3048,
        "feet": 0.3048,
    },
    "satellites": {"": 1.0, "count": 1.0, "pcs": 1.0},
}
_GNSS = frozenset({"gps", "gnss", "glonass"})
_HUMP = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_SPLIT = re.compile(r"[^0-9a-zа-яіїєґё]+")


def words(name: str) -> list[str]:
    """The lower-case words of a channel name (see the module docstring)."""
    return [w for w in _SPLIT.split(_HUMP.sub(" ", name).lower()) if w]


def _unit(unit: str | None) -> str:
    return (unit or "").strip().lower().replace(" ", "")


@dataclass(frozen=True, slots=True)
class GpsChannels:
    """Channel ids of a vehicle's position fields, and the factors that bring them to km/h and metres."""

    latitude: int
    longitude: int
    speed: int | None = None
    course: int | None = None
    altitude: int | None = None
    satellites: int | None = None
    speed_factor: float = 1.0
    altitude_factor: float = 1.0

    def describe(self) -> dict[str, int]:
        """The mapping in the shape of `vehicles.gps_channels`."""
        return {f: getattr(self, f) for f in FIELDS if getattr(self, f) is not None}


def _candidates(channels: Iterable[ChannelInfo], field: str) -> list[ChannelInfo]:
    wanted = _WORDS[field]
    units = _UNITS[field]
    found = [c for c in channels if _unit(c.unit) in units and wanted.intersection(words(c.name))]
    if len(found) <= 1:
        return found
    exact = [c for c in found if len(words(c.name)) == 1]
    if exact:
        return exact
    gnss = [c for c in found if _GNSS.intersection(words(c.name))]
    return gnss or found


def recognise(
    channels: Iterable[ChannelInfo], explicit: Mapping[str, Any] | None = None
) -> GpsChannels | None:
    """The vehicle's GPS channels: the explicit mapping when there is one, else by name and unit."""
    known = list(channels)
    by_id = {c.channel_id: c for c in known}
    if explicit:
        return _from_mapping(explicit, by_id)
    chosen: dict[str, ChannelInfo] = {}
    for field in FIELDS:
        found = _candidates(known, field)
        if len(found) == 1:
            chosen[field] = found[0]
    if "latitude" not in chosen or "longitude" not in chosen:
        return None
    return _build({f: c.channel_id for f, c in chosen.items()}, by_id)


def _from_mapping(mapping: Mapping[str, Any], by_id: Mapping[int, ChannelInfo]) -> GpsChannels | None:
    if mapping.get("off"):
        return None
    ids = {f: mapping[f] for f in FIELDS if type(mapping.get(f)) is int}
    if "latitude" not in ids or "longitude" not in ids:
        return None
    return _build(ids, by_id)


def _build(ids: Mapping[str, int], by_id: Mapping[int, ChannelInfo]) -> GpsChannels:
    def factor(field: str) -> float:
        channel = by_id.get(ids[field]) if field in ids else None
        return _UNITS[field].get(_unit(channel.unit), 1.0) if channel is not None else 1.0

    return GpsChannels(
        latitude=ids["latitude"],
        longitude=ids["longitude"],
        speed=ids.get("speed"),
        course=ids.get("course"),
        altitude=ids.get("altitude"),
        satellites=ids.get("satellites"),
        speed_factor=factor("speed"),
        altitude_factor=factor("altitude"),
    )


def validate_mapping(mapping: Mapping[str, Any]) -> dict[str, Any]:
    """A `vehicles.gps_channels` value checked and normalised (ValueError when it cannot be one)."""
    if mapping.get("off"):
        return {"off": True}
    unknown = set(mapping) - set(FIELDS)
    if unknown:
        raise ValueError(f"unknown position fields: {', '.join(sorted(unknown))}")
    out: dict[str, Any] = {}
    for field, value in mapping.items():
        if value is None:
            continue
        if type(value) is not int or not 0 <= value < 2**31:
            raise ValueError(f"{field}: a channel id is an integer from 0 to 2^31-1")
        out[field] = value
    if "latitude" not in out or "longitude" not in out:
        raise ValueError("a mapping needs both a latitude and a longitude channel")
    return out


class PullPosition(NamedTuple):
    """A position row of a pull vehicle (no device), as `fleet.db.queries.sync.insert_pull_positions` stores it."""

    vehicle_id: int
    time: datetime
    latitude: float
    longitude: float
    speed: float | None
    course: float | None
    altitude: float | None
    satellites: int | None


def positions(vehicle_id: int, rows: Iterable[Row], gps: GpsChannels) -> list[PullPosition]:
    """Position rows from one vehicle's measurement rows: one per time with a usable fix, oldest first."""
    slot = {gps.latitude: 0, gps.longitude: 1}
    for index, channel in enumerate((gps.speed, gps.course, gps.altitude, gps.satellites), start=2):
        if channel is not None:
            slot.setdefault(channel, index)
    by_time: dict[datetime, list[float | None]] = {}
    # The position channels are a few of many: select their rows first (a comprehension, not a Python loop
    # over every measurement), then group what is left by time.
    for _, channel_id, at, value in [row for row in rows if row[1] in slot]:
        values = by_time.get(at)
        if values is None:
            values = by_time[at] = [None] * 6
        values[slot[channel_id]] = value
    out = []
    for at in sorted(by_time):
        lat, lon, speed, course, altitude, satellites = by_time[at]
        if not _located(lat, lon):
            continue
        out.append(
            PullPosition(
                vehicle_id,
                at,
                lat,  # type: ignore[arg-type]
                lon,  # type: ignore[arg-type]
                speed * gps.speed_factor if speed is not None else None,
                course % 360 if course is not None else None,
                altitude * gps.altitude_factor if altitude is not None else None,
                int(satellites) if satellites is not None and 0 <= satellites < 1000 else None,
            )
        )
    return out


def _located(lat: float | None, lon: float | None) -> bool:
    if lat is None or lon is None or not (math.isfinite(lat) and math.isfinite(lon)):
        return False
    if not (-90.0 <= lat <= 90.0 and -180.0 <= lon <= 180.0):
        return False
    return not (lat == 0.0 and lon == 0.0)
