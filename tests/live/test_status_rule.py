"""The one vehicle status rule: its SQL (lists, REST) and its Python twin (live streams, sync) agree everywhere."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

from fleet.db import Database
from fleet.vehicle_status import derive_status, online_window_sec, status_reason, status_sql

WINDOW = online_window_sec(30)  # 90 s
AGES = [None, -5.0, 10.0, 89.0, 91.0, 3600.0]  # seconds before now; None: never
STATUSES = [None, "unknown", "online", "offline", "error"]


def _at(now: datetime, age: float | None) -> datetime | None:
    return None if age is None else now - timedelta(seconds=age)


async def test_sql_and_python_agree_on_every_combination(db: Database) -> None:
    cases = list(itertools.product(AGES, STATUSES, AGES))
    sql = status_sql(pull_seen="c.pull", sync_status="c.status", tracker_seen="c.tracker", window_sec="$4")
    async with db.system() as conn:
        now = await conn.fetchval("SELECT now()")
        rows = await conn.fetch(
            f"""SELECT c.n, {sql} AS state
                FROM unnest($1::timestamptz[], $2::text[], $3::timestamptz[]) WITH ORDINALITY
                     AS c(pull, status, tracker, n)""",
            [_at(now, p) for p, _, _ in cases],
            [s for _, s, _ in cases],
            [_at(now, t) for _, _, t in cases],
            WINDOW,
        )
    assert len(rows) == len(cases)
    for row in rows:
        pull, status, tracker = cases[row["n"] - 1]
        expected = derive_status(
            pull_seen_at=_at(now, pull),
            sync_status=status,
            tracker_seen_at=_at(now, tracker),
            now=now,
            window=WINDOW,
        )
        assert row["state"] == expected, (pull, status, tracker)


def test_the_rule_in_words() -> None:
    now = datetime(2026, 6, 1, 12, tzinfo=UTC)

    def state(pull: float | None, status: str | None, tracker: float | None) -> str:
        return derive_status(
            pull_seen_at=_at(now, pull),
            sync_status=status,
            tracker_seen_at=_at(now, tracker),
            now=now,
            window=WINDOW,
        )

    assert state(None, "unknown", None) == "unknown"  # never any sign of life
    assert state(None, "offline", None) == "offline"  # tried, never answered
    assert state(10, "online", None) == "online"
    assert state(10, "offline", None) == "offline"  # the latest pull failed: offline at once
    assert state(10, "offline", 5) == "online"  # ...but its tracker is sending
    assert state(10, "error", None) == "online"  # answers, cannot be synced
    assert state(91, "online", None) == "offline"  # the window ran out
    assert state(None, "unknown", 30) == "online"  # a tracker-only vehicle
    assert status_reason("offline", "offline") == "the vehicle did not answer its latest pull"
    assert status_reason("online", "offline") is None


async def test_the_api_lists_the_rule(db: Database) -> None:
    """`/vehicles` (vehicle_views) applies it: a failed latest pull is offline even with a fresh last_seen_at."""
    from fleet.db.queries import vehicle_views

    async with db.system() as conn:
        failed = await conn.fetchval(
            """INSERT INTO vehicles (name, last_seen_at, sync_status) VALUES ('rule-a', now(), 'offline')
               RETURNING id"""
        )
        fine = await conn.fetchval(
            "INSERT INTO vehicles (name, last_seen_at, sync_status) VALUES ('rule-b', now(), 'online') RETURNING id"
        )
        body_failed = await vehicle_views.vehicle_json(conn, failed, window_sec=WINDOW)
        body_fine = await vehicle_views.vehicle_json(conn, fine, window_sec=WINDOW)
    assert body_failed is not None and '"status":"offline"' in body_failed.replace(" ", "")
    assert body_fine is not None and '"status":"online"' in body_fine.replace(" ", "")
