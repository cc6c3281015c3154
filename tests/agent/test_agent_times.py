"""Time parsing and formatting on the wire."""

from __future__ import annotations

import pytest

from fleet.agent.times import MAX_TIME_MS, TimeFormatError, format_time, parse_time, seconds_to_ms

T = 1_732_550_400_123  # 2024-11-25T16:00:00.123Z


def test_format_is_iso_utc_with_milliseconds_and_z() -> None:
    assert format_time(T) == "2024-11-25T16:00:00.123Z"
    assert format_time(0) == "1970-01-01T00:00:00.000Z"
    assert format_time(MAX_TIME_MS) == "9999-12-31T23:59:59.999Z"


@pytest.mark.parametrize(
    "text",
    [
        "2024-11-25T16:00:00.123Z",
        "2024-11-25T16:00:00.123+00:00",
        "2024-11-25T18:00:00.123+02:00",
        "2024-11-25T16:00:00.123",  # no offset: UTC
        "2024-11-25T16:00:00.123999Z",  # below a millisecond: dropped
        "1732550400.123",
        " 1732550400.1239 ",
    ],
)
def test_parse_accepts_iso_and_epoch_seconds(text: str) -> None:
    assert parse_time(text) == T


def test_parse_whole_epoch_seconds() -> None:
    assert parse_time("1732550400") == T - 123


def test_round_trip() -> None:
    for ms in (0, 1, 999, T, MAX_TIME_MS):
        assert parse_time(format_time(ms)) == ms


@pytest.mark.parametrize(
    "text", ["", "now", "2024-13-01T00:00:00Z", "1e9", "0x10", "-5", "1969-12-31T23:59:59Z"]
)
def test_parse_rejects_other_text(text: str) -> None:
    with pytest.raises(TimeFormatError):
        parse_time(text)


def test_seconds_to_ms_rounds_to_the_nearest_millisecond() -> None:
    assert seconds_to_ms(1732550400.123) == T
    assert seconds_to_ms(1732550400.001) == T - 122
    for bad in (float("nan"), float("inf"), -1.0, 1e15):
        with pytest.raises(TimeFormatError):
            seconds_to_ms(bad)
