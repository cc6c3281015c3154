"""Pure parts of the sync service: status derivation, answer validation, windows, backoff, the pool."""

from __future__ import annotations

import asyncio
import itertools
import math
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from fleet.sync.errors import PullProtocolError
from fleet.sync.models import VehicleTarget
from fleet.sync.parse import (
    contract_major,
    format_time,
    parse_alarms,
    parse_channels,
    parse_data,
    parse_status,
    parse_time,
)
from fleet.sync.status import derive_status
from fleet.sync.transport import FleetTransport, origin_of
from fleet.sync.vehicle import backoff_delay
from fleet.sync.windows import Window, plan, split

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
START = NOW - timedelta(minutes=1)


# --- status (the shared rule is tested against PostgreSQL in tests/live/test_status_rule.py) ------------
@pytest.mark.parametrize(
    ("last_seen_ago", "sync_status", "expected"),
    [
        (None, "unknown", "unknown"),  # never contacted
        (None, "offline", "offline"),  # contacted, never answered
        (10, "online", "online"),
        (89, "online", "online"),  # two missed cycles are tolerated
        (91, "online", "offline"),  # the vehicle (or the sync) went quiet
        (10, "offline", "offline"),  # the latest attempt failed
        (10, "error", "online"),  # answers, cannot be synced
        (-5, "online", "online"),  # a worker's clock slightly ahead
    ],
)
def test_derive_status_from_the_sync_side(
    last_seen_ago: float | None, sync_status: str, expected: str
) -> None:
    last_seen = None if last_seen_ago is None else NOW - timedelta(seconds=last_seen_ago)
    for window in (90, timedelta(seconds=90)):
        state = derive_status(
            pull_seen_at=last_seen, sync_status=sync_status, tracker_seen_at=None, now=NOW, window=window
        )
        assert state == expected


# --- times ----------------------------------------------------------------------------------------------
def test_times_round_trip_in_the_contract_format() -> None:
    value = datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
    assert format_time(value) == "2026-01-02T03:04:05.678Z"
    assert parse_time("2026-01-02T03:04:05.678Z") == value
    assert parse_time("2026-01-02T05:04:05.678+02:00") == value
    assert parse_time("2026-01-02T03:04:05.678") == value  # no offset: UTC
    for bad in ("", "yesterday", 1_700_000_000, None, "2026-13-01T00:00:00Z", "x" * 100):
        assert parse_time(bad) is None


# --- /status and /channels -----------------------------------------------------------------------------------
def test_status_fields_are_read_leniently_but_the_shape_is_not() -> None:
    reply = parse_status({"online": True, "software_version": "1.2.3", "db_ok": True, "extra": [1]})
    assert (reply.online, reply.software_version, reply.db_ok) == (True, "1.2.3", True)
    odd = parse_status({"software_version": 7, "db_ok": "yes", "contract_version": "x" * 500})
    assert (odd.online, odd.software_version, odd.db_ok, odd.contract_version) == (False, None, None, None)
    with pytest.raises(PullProtocolError):
        parse_status(["online"])


def test_channels_are_mapped_and_bad_entries_dropped() -> None:
    channels, rejected = parse_channels(
        {
            "channels": [
                {"channel_id": 1, "name": "speed", "unit": "km/h", "phys_min": 0, "phys_max": 140},
                {"channel_id": 2, "name": "rpm", "unit": None, "phys_min": None, "phys_max": None},
                {"channel_id": 3, "name": "", "unit": "x"},
                {"channel_id": "4", "name": "text id"},
                {"channel_id": 5, "name": "inverted", "phys_min": 10, "phys_max": 1},
                {"channel_id": 6, "name": "nan", "phys_min": math.nan},
                {"channel_id": 2**31, "name": "too big"},
                {"channel_id": 1, "name": "speed again", "unit": "km/h"},
                "junk",
            ]
        }
    )
    assert [(c.channel_id, c.name, c.min_value, c.max_value) for c in channels] == [
        (1, "speed again", None, None),
        (2, "rpm", None, None),
    ]
    assert rejected == {"too_long": 1, "wrong_type": 3, "bad_range": 1, "not_finite": 1, "duplicate": 1}
    with pytest.raises(PullProtocolError):
        parse_channels({"channels": {"1": "speed"}})


# --- /data ----------------------------------------------------------------------------------------------------
def _data(doc: Any, **kwargs: Any) -> Any:
    options: dict[str, Any] = {
        "vehicle_id": 9,
        "start": START,
        "end": NOW,
        "channels": {1, 2},
        "now": NOW,
        "max_rows": 100,
    }
    options.update(kwargs)
    return parse_data(doc, **options)


def test_data_rows_are_typed_and_checked() -> None:
    inside = format_time(START + timedelta(seconds=30))
    page = _data(
        {
            "to": format_time(NOW),
            "rows": [
                {"channel_id": 1, "time": inside, "value": 1.5},
                {"channel_id": 2, "time": inside, "value": 7},
                {"channel_id": 2, "time": inside, "value": True},
                {"channel_id": 1, "time": format_time(NOW), "value": 1.0},  # the end is exclusive
                {"channel_id": 1, "time": format_time(NOW + timedelta(hours=1)), "value": 1.0},
                {"channel_id": 3, "time": inside, "value": 1.0},
                {"channel_id": 1, "time": inside, "value": -math.inf},
            ],
        }
    )
    when = START + timedelta(seconds=30)
    assert page.rows == [(9, 1, when, 1.5), (9, 2, when, 7.0)]
    assert page.rejected == {
        "wrong_type": 1,
        "outside_window": 1,
        "future_time": 1,
        "unknown_channel": 1,
        "not_finite": 1,
    }
    assert page.end == NOW and not page.truncated


def test_data_answer_level_violations_are_protocol_errors() -> None:
    rows = [
        {"channel_id": 1, "time": format_time(START + timedelta(milliseconds=n)), "value": 1.0}
        for n in range(101)
    ]
    bad_docs = [
        {"rows": rows},  # more than asked for
        {"rows": [], "to": format_time(NOW + timedelta(seconds=1))},  # answers beyond the window
        {"rows": [], "to": format_time(START - timedelta(seconds=1))},
        {"rows": [], "to": "soon"},
        {"rows": [], "truncated": 1},
        {"rows": [], "truncated": True},  # nothing on a cut page: following it would never end
        {"rows": [], "truncated": True, "to": format_time(NOW), "next_from": format_time(START)},
        {"rows": None},
        "rows",
    ]
    for doc in bad_docs:
        with pytest.raises(PullProtocolError):
            _data(doc)


def test_one_timestamp_may_exceed_the_row_limit() -> None:
    # Contract §5: a single timestamp with more channels than the limit is returned whole.
    rows = [{"channel_id": c, "time": format_time(START), "value": 1.0} for c in range(150)]
    page = _data({"rows": rows, "to": format_time(NOW)}, channels=set(range(150)))
    assert len(page.rows) == 150


def test_status_limits_and_contract_version() -> None:
    reply = parse_status(
        {
            "contract_version": "1.3",
            "oldest_data": "2026-03-01T00:00:00.000Z",
            "limits": {"row_limit": 1000, "max_window_seconds": 3600, "settle_seconds": 2.0},
        }
    )
    assert (reply.row_limit, reply.max_window_seconds) == (1000, 3600)
    assert reply.oldest_data == datetime(2026, 3, 1, tzinfo=UTC)
    assert contract_major(reply.contract_version) == 1
    assert [contract_major(v) for v in (None, "2.0", "1", "v1.0", "1.x")] == [None, 2, None, None, None]
    odd = parse_status({"limits": {"row_limit": 0, "max_window_seconds": "1h"}})
    assert (odd.row_limit, odd.max_window_seconds, odd.oldest_data) == (None, None, None)


def test_a_truncated_page_reports_where_to_resume() -> None:
    page = _data(
        {
            "rows": [{"channel_id": 1, "time": format_time(START), "value": 1.0}],
            "to": format_time(NOW - timedelta(seconds=2)),
            "truncated": True,
            "next_from": format_time(START + timedelta(seconds=20)),
        }
    )
    assert page.truncated and page.next_from == START + timedelta(seconds=20)
    assert page.end == NOW - timedelta(seconds=2)


# --- /alarms --------------------------------------------------------------------------------------------------
def test_alarms_are_checked_and_deduplicated() -> None:
    raised = format_time(START)
    page = parse_alarms(
        {
            "alarms": [
                {
                    "alarm_id": 1,
                    "channel_id": 3,
                    "level": "critical",
                    "message": "hot",
                    "raised_at": raised,
                    "resolved_at": None,
                },
                {
                    "alarm_id": 1,
                    "channel_id": 3,
                    "level": "critical",
                    "message": "hot",
                    "raised_at": raised,
                    "resolved_at": format_time(NOW),
                },
                {
                    "alarm_id": 2,
                    "raised_at": raised,
                    "resolved_at": format_time(START - timedelta(seconds=1)),
                },
                {"alarm_id": 3, "raised_at": format_time(NOW + timedelta(days=1))},
                {"alarm_id": 4, "raised_at": "1990-01-01T00:00:00Z"},
                {"alarm_id": 2**63, "raised_at": raised},
                {"alarm_id": 5, "raised_at": raised, "message": "m" * 5000},
                {"alarm_id": 6},
            ]
        },
        start=START,
        end=NOW,
        now=NOW,
    )
    assert [(a.alarm_id, a.resolved_at) for a in page.alarms] == [(1, NOW)]
    assert page.rejected == {
        "duplicate": 1,
        "bad_range": 1,
        "future_time": 1,
        "before_2000": 1,
        "wrong_type": 1,
        "too_long": 1,
        "bad_time": 1,
    }


# --- windows and backoff ---------------------------------------------------------------------------------------
def test_windows_meet_exactly() -> None:
    assert plan(NOW, NOW) == []
    assert plan(START, NOW) == [Window(START, NOW)]
    day = NOW - timedelta(hours=24)
    assert plan(day, NOW) == [Window(day, NOW)]  # exactly 24 h is not a long gap
    hourly = plan(NOW - timedelta(hours=30, minutes=30), NOW)
    assert len(hourly) == 31 and hourly[-1].width == timedelta(minutes=30)
    assert all(a.end == b.start for a, b in itertools.pairwise(hourly))
    tens = split(START, START + timedelta(minutes=25), timedelta(minutes=10))
    assert [w.width for w in tens] == [timedelta(minutes=10), timedelta(minutes=10), timedelta(minutes=5)]


def test_backoff_doubles_after_the_first_failure_up_to_the_ceiling() -> None:
    assert [backoff_delay(n, 30, 600) for n in range(8)] == [30, 30, 60, 120, 240, 480, 600, 600]
    assert backoff_delay(1, 30, 600, permanent=True) == 600


def test_base_url_brackets_ipv6() -> None:
    target = VehicleTarget(1, "v", "fd00::11", 8001, None, None, None, 0)
    assert target.base_url == "http://[fd00::11]:8001"
    assert VehicleTarget(1, "v", "10.0.0.11", 8001, None, None, None, 0).base_url == "http://10.0.0.11:8001"


# --- the connection pool -----------------------------------------------------------------------------------
async def test_the_pool_counts_holders_and_bounds_open_origins() -> None:
    pool = FleetTransport(httpx.Limits(max_connections=2, keepalive_expiry=5))
    a, b, c = "http://127.0.0.1:9001", "http://127.0.0.1:9002", "http://[fd00::3]:8001"
    await pool.hold(a)
    await pool.hold(a)  # two vehicles behind one address share the connection
    await pool.hold(b)
    third = asyncio.create_task(pool.hold(c))
    await asyncio.sleep(0.01)
    assert not third.done()  # two origins open: the third waits for a slot
    await pool.release(a)
    await asyncio.sleep(0.01)
    assert not third.done()  # `a` still has a holder
    await pool.release(a)
    await asyncio.wait_for(third, 1)
    assert origin_of(c) == ("http", "fd00::3", 8001)
    await pool.aclose()
