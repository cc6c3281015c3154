"""Business gauges (seed 004: users, active users; plus the fleet): refreshed from SQL every 30 s by the API
(a periodic job of `fleet.ops.jobs`, so a failing refresh is logged once and shows in `/ready`).

One query per refresh in the system context, so the numbers cover the whole installation. Every API process
refreshes its own copy; they agree, and rules aggregate them with `max`. No per-vehicle or per-user labels:
only states (`online`, `pending`, ...), which are a fixed set.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from prometheus_client import Gauge

from fleet.config import Settings
from fleet.db import Database
from fleet.db.queries.vehicle_views import online_window_sec
from fleet.ops.jobs import PeriodicJob

USERS_TOTAL = Gauge("users_total", "Registered users (every status)")
ACTIVE_USERS = Gauge(
    "active_users", "Users holding a valid access token now (signed in or refreshed recently)"
)
USERS = Gauge("fleet_users", "Users by account status", ["status"])
VEHICLES = Gauge("fleet_vehicles", "Vehicles by derived status (online, offline, unknown)", ["status"])
VEHICLES_SYNC = Gauge(
    "fleet_vehicles_sync_status", "Vehicles by the sync service's last verdict", ["sync_status"]
)
DEVICES = Gauge("fleet_devices", "Registered trackers")
DEVICES_ONLINE = Gauge("fleet_devices_online", "Trackers heard from within the online window")
DEVICES_UNASSIGNED = Gauge("fleet_devices_unassigned", "Trackers not linked to a vehicle")
ALARMS_ACTIVE = Gauge("fleet_alarms_active", "Alarms pulled from vehicles and not resolved")
DB_SIZE = Gauge("fleet_db_size_bytes", "Size of the database on disk")
DEPENDENCY_UP = Gauge(
    "fleet_dependency_up", "1 while the API reaches a dependency (what /ready checks)", ["dependency"]
)
REFRESHED = Gauge(
    "fleet_business_metrics_refresh_timestamp_seconds", "Unix time of the last successful refresh"
)

USER_STATUSES = ("pending", "active", "blocked")
VEHICLE_STATUSES = ("online", "offline", "unknown")
# A tracker pings well within the ingest idle timeout; one not heard of for 10 minutes is not online.
DEVICE_ONLINE_WINDOW_SEC = 600

SNAPSHOT_SQL = """
WITH v AS (
    SELECT CASE WHEN a.seen IS NULL THEN 'unknown'
                WHEN a.seen >= now() - make_interval(secs => $1) THEN 'online' ELSE 'offline' END AS status,
           vh.sync_status
    FROM vehicles vh
    CROSS JOIN LATERAL (SELECT greatest(vh.last_seen_at, (SELECT max(d.last_seen_at) FROM devices d
                                                          WHERE d.vehicle_id = vh.id)) AS seen) a
)
SELECT
    (SELECT json_object_agg(status, n) FROM (SELECT status, count(*) AS n FROM users GROUP BY 1) s) AS users,
    (SELECT count(DISTINCT user_id) FROM refresh_tokens
      WHERE revoked_at IS NULL AND created_at > now() - make_interval(secs => $2)) AS active_users,
    (SELECT json_object_agg(status, n) FROM (SELECT status, count(*) AS n FROM v GROUP BY 1) s) AS vehicles,
    (SELECT json_object_agg(sync_status, n) FROM (SELECT sync_status, count(*) AS n FROM v GROUP BY 1) s)
        AS sync_statuses,
    (SELECT count(*) FROM devices) AS devices,
    (SELECT count(*) FROM devices WHERE last_seen_at >= now() - make_interval(secs => $3)) AS devices_online,
    (SELECT count(*) FROM devices WHERE vehicle_id IS NULL) AS devices_unassigned,
    (SELECT count(*) FROM alarms_log WHERE resolved_at IS NULL) AS alarms_active,
    pg_database_size(current_database()) AS db_size
"""

# Sync verdicts seen so far, so that a verdict that disappears is set back to 0 instead of going stale.
_seen_sync_statuses: set[str] = set()


async def refresh(db: Database, settings: Settings) -> None:
    """Read the numbers and set the gauges."""
    async with db.system() as conn:
        row = await conn.fetchrow(
            SNAPSHOT_SQL,
            online_window_sec(settings.sync_interval_sec),
            float(settings.access_token_ttl_sec),
            float(DEVICE_ONLINE_WINDOW_SEC),
        )
    assert row is not None
    users = row["users"] or {}
    for status in USER_STATUSES:
        USERS.labels(status).set(users.get(status, 0))
    USERS_TOTAL.set(sum(users.values()))
    ACTIVE_USERS.set(row["active_users"])
    vehicles = row["vehicles"] or {}
    for status in VEHICLE_STATUSES:
        VEHICLES.labels(status).set(vehicles.get(status, 0))
    sync_statuses = row["sync_statuses"] or {}
    _seen_sync_statuses.update(sync_statuses)
    for status in _seen_sync_statuses:
        VEHICLES_SYNC.labels(status).set(sync_statuses.get(status, 0))
    DEVICES.set(row["devices"])
    DEVICES_ONLINE.set(row["devices_online"])
    DEVICES_UNASSIGNED.set(row["devices_unassigned"])
    ALARMS_ACTIVE.set(row["alarms_active"])
    DB_SIZE.set(row["db_size"])
    REFRESHED.set(time.time())


def job(
    db: Database,
    settings: Callable[[], Settings],
    redis_ping: Callable[[], Awaitable[bool]] | None = None,
) -> PeriodicJob:
    """The refresh as a periodic job (every `business_metrics_interval_sec`, after the previous run ended).

    `fleet_dependency_up` follows each run: the refresh is a database round trip, so its outcome is the
    database's; Redis, when configured, is pinged on every run whatever the database does.
    """

    async def run_once() -> None:
        if redis_ping is not None:
            DEPENDENCY_UP.labels("redis").set(1 if await redis_ping() else 0)
        try:
            await refresh(db, settings())
        except Exception:
            DEPENDENCY_UP.labels("database").set(0)
            raise
        DEPENDENCY_UP.labels("database").set(1)

    return PeriodicJob(
        "business-metrics", run_once, interval=lambda: settings().business_metrics_interval_sec, timeout=30
    )
