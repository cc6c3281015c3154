"""Which Outbound API channels make positions (fleet.sync.gps): the name/unit rule, explicit mappings, rows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from fleet.agent.channels import VEHICLE_CHANNELS
from fleet.sync.gps import GpsChannels, positions, recognise, validate_mapping, words
from fleet.sync.models import ChannelInfo

T0 = datetime(2026, 11, 1, tzinfo=UTC)


def ch(channel_id: int, name: str, unit: str | None = None) -> ChannelInfo:
    return ChannelInfo(channel_id, name, unit, None, None)


def test_the_reference_agent_is_recognised() -> None:
    channels = [ChannelInfo(c.channel_id, c.name, c.unit, c.phys_min, c.phys_max) for c in VEHICLE_CHANNELS]
    gps = recognise(channels)
    assert gps is not None
    assert gps.describe() == {
        "latitude": 16,
        "longitude": 17,
        "speed": 1,
        "course": 18,
        "altitude": 19,
        "satellites": 20,
    }


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("GPS_Latitude", ["gps", "latitude"]),
        ("gpsLat", ["gps", "lat"]),
        ("gnss.lon", ["gnss", "lon"]),
        ("Широта", ["широта"]),
    ],
)
def test_names_are_split_into_words(name: str, expected: list[str]) -> None:
    assert words(name) == expected


def test_names_units_and_ties() -> None:
    assert recognise([ch(1, "gpsLat", "deg"), ch(2, "gpsLon", "°")]) == GpsChannels(1, 2)
    assert recognise([ch(1, "Широта"), ch(2, "Довгота")]) == GpsChannels(1, 2)  # Ukrainian names, no unit
    # Words, not substrings, and units that are not degrees rule channels out.
    assert recognise([ch(1, "lateral_accel", "m/s²"), ch(2, "long_term_fuel_trim", "%")]) is None
    assert recognise([ch(1, "lat", "m"), ch(2, "lon", "deg")]) is None
    # Two candidates: the bare word wins, then the one that says gps; otherwise no positions (map it).
    assert recognise([ch(1, "latitude"), ch(3, "can_latitude"), ch(2, "longitude")]) == GpsChannels(1, 2)
    assert recognise([ch(1, "gps_lat"), ch(3, "can_lat"), ch(2, "lon")]) == GpsChannels(1, 2)
    assert recognise([ch(1, "front_lat"), ch(3, "rear_lat"), ch(2, "lon")]) is None
    # Units are brought to km/h and metres.
    gps = recognise([ch(1, "lat"), ch(2, "lon"), ch(3, "gps_speed", "m/s"), ch(4, "altitude", "ft")])
    assert gps is not None and gps.speed == 3 and gps.speed_factor == 3.6 and gps.altitude_factor == 0.3048


def test_an_explicit_mapping_wins() -> None:
    channels = [ch(1, "latitude"), ch(2, "longitude"), ch(7, "x"), ch(8, "y", "mph")]
    assert recognise(channels, {"latitude": 7, "longitude": 1, "speed": 8}) == GpsChannels(
        7, 1, speed=8, speed_factor=1.609344
    )
    assert recognise(channels, {"off": True}) is None
    assert recognise(channels, {"latitude": 7}) is None
    assert validate_mapping({"latitude": 1, "longitude": 2, "course": None}) == {
        "latitude": 1,
        "longitude": 2,
    }
    assert validate_mapping({"off": True, "latitude": 3}) == {"off": True}
    for bad in (
        {"latitude": 1},
        {"latitude": 1, "longitude": "2"},
        {"latitude": 1, "longitude": 2, "heading": 3},
    ):
        with pytest.raises(ValueError):
            validate_mapping(bad)


def test_rows_make_one_position_per_time_with_a_fix() -> None:
    gps = GpsChannels(16, 17, speed=1, course=18, speed_factor=1.0)
    t = [T0 + timedelta(seconds=s) for s in range(5)]
    rows = [
        (7, 16, t[0], 50.1),
        (7, 17, t[0], 30.2),
        (7, 1, t[0], 42.0),
        (7, 18, t[0], 370.0),
        (7, 2, t[0], 900.0),
        (7, 16, t[1], 0.0),
        (7, 17, t[1], 0.0),  # no fix: receivers report (0, 0)
        (7, 16, t[2], 50.2),  # no longitude at this time
        (7, 16, t[3], 95.0),
        (7, 17, t[3], 30.0),  # out of range
        (7, 17, t[4], 30.3),
        (7, 16, t[4], 50.3),
    ]
    made = positions(7, rows, gps)
    assert [(p.time, p.latitude, p.longitude) for p in made] == [(t[0], 50.1, 30.2), (t[4], 50.3, 30.3)]
    assert made[0].speed == 42.0 and made[0].course == 10.0 and made[1].speed is None
    assert all(p.vehicle_id == 7 for p in made)
