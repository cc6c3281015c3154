"""SQL of the sync service: leases, measurements, channels, alarms, vehicle bookkeeping and the journal.

Every function takes a connection from `Database.system()` (the superuser tenant context, transaction-local).
Statements that touch many vehicles take parallel arrays and `unnest` them, so a group commit of fifty
vehicles costs a handful of round trips, not fifty times as many.

Measurements go through a temporary staging table: binary COPY into it, then `INSERT … SELECT` (with
`ON CONFLICT DO NOTHING` whenever the batch holds rows already stored; see `insert_measurements`). COPY
straight into `measurements` is not possible for the runtime role (COPY FROM is refused on tables with
row-level security) and could not skip duplicates anyway.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from fleet.sync.gps import PullPosition
from fleet.sync.models import AlarmInfo, ChannelInfo, Row

STAGING_TABLE = "sync_staging"

_CLAIM = """
WITH due AS (
    SELECT id FROM vehicles
    WHERE vpn_ip IS NOT NULL
      AND id > $2
      AND (sync_lease_until IS NULL OR sync_lease_until < now())
      AND ($5 OR sync_next_at IS NULL OR sync_next_at <= $4)
      AND ($7::bigint[] IS NULL OR id = ANY ($7::bigint[]))
    ORDER BY id
    LIMIT $3
    FOR UPDATE SKIP LOCKED
)
UPDATE vehicles AS v
SET sync_lease_owner = $1, sync_lease_until = now() + make_interval(secs => $6)
FROM due
WHERE v.id = due.id
RETURNING v.id, v.name, host(v.vpn_ip) AS host, v.api_port, v.api_key, v.last_sync_at,
          v.alarms_synced_at, v.sync_failures, v.gps_channels
"""


async def claim_vehicles(
    conn: asyncpg.Connection,
    *,
    owner: str,
    after_id: int,
    limit: int,
    now: datetime,
    force: bool,
    lease_sec: float,
    only: Sequence[int] | None = None,
) -> list[asyncpg.Record]:
    """Lease up to `limit` due vehicles with ids above `after_id`, in id order.

    A vehicle is due when it has an address, nobody holds an unexpired lease on it, and its next attempt time
    has come (`force` ignores the schedule, not the lease). `FOR UPDATE SKIP LOCKED` lets several workers
    claim at the same moment without waiting for, or taking, each other's vehicles. Lease times use the
    database clock, the one clock every worker shares. `only` restricts the claim to the given ids.
    """
    ids = list(only) if only is not None else None
    rows = await conn.fetch(_CLAIM, owner, after_id, limit, now, force, lease_sec, ids)
    return sorted(rows, key=lambda row: row["id"])


async def renew_lease(conn: asyncpg.Connection, *, owner: str, vehicle_id: int, lease_sec: float) -> bool:
    """Extend `owner`'s unexpired lease on a vehicle; False when it expired or another worker holds it."""
    renewed = await conn.fetchval(
        """UPDATE vehicles SET sync_lease_until = now() + make_interval(secs => $3)
           WHERE id = $2 AND sync_lease_owner = $1 AND sync_lease_until > now()
           RETURNING id""",
        owner,
        vehicle_id,
        lease_sec,
    )
    return renewed is not None


async def release_leases(conn: asyncpg.Connection, owner: str) -> int:
    """Drop every lease `owner` still holds (a worker shutting down mid-cycle)."""
    status = await conn.execute(
        "UPDATE vehicles SET sync_lease_owner = NULL, sync_lease_until = NULL WHERE sync_lease_owner = $1",
        owner,
    )
    return int(status.rsplit(" ", 1)[-1])


async def count_without_address(conn: asyncpg.Connection) -> int:
    """Vehicles with no `vpn_ip`: not pulled, and not an error either."""
    count: int = await conn.fetchval("SELECT count(*) FROM vehicles WHERE vpn_ip IS NULL")
    return count


async def stored_channels(conn: asyncpg.Connection, vehicle_id: int) -> list[ChannelInfo]:
    """The channels last stored from the vehicle's `/channels` (used when `/channels` fails)."""
    rows = await conn.fetch(
        """SELECT channel_id, name, unit, min_value, max_value FROM channel_config
           WHERE vehicle_id = $1 ORDER BY channel_id""",
        vehicle_id,
    )
    return [ChannelInfo(r[0], r[1], r[2], r[3], r[4]) for r in rows]


async def insert_pull_positions(conn: asyncpg.Connection, positions: Sequence[PullPosition]) -> int:
    """Store positions of pull vehicles (no device; a time already stored for the vehicle is skipped)."""
    if not positions:
        return 0
    columns = list(zip(*positions, strict=True))
    status = await conn.execute(
        """INSERT INTO positions (device_id, vehicle_id, record_index, device_time, fix_time, valid, latitude,
                                  longitude, speed, course, altitude, satellites)
           SELECT NULL, u.vehicle_id, -1, u.time, u.time, true, u.latitude, u.longitude, u.speed, u.course,
                  u.altitude, u.satellites
           FROM unnest($1::bigint[], $2::timestamptz[], $3::float8[], $4::float8[], $5::real[], $6::real[],
                       $7::float8[], $8::smallint[])
                AS u(vehicle_id, time, latitude, longitude, speed, course, altitude, satellites)
           ON CONFLICT (vehicle_id, device_time) WHERE device_id IS NULL DO NOTHING""",
        *columns,
    )
    return int(status.rsplit(" ", 1)[-1])


async def insert_measurements(
    conn: asyncpg.Connection, rows: Sequence[Row], per_vehicle: Mapping[int, int] | None = None
) -> dict[int, int]:
    """Insert rows, skipping (vehicle, channel, time) already stored; return rows inserted per vehicle.

    `per_vehicle` (rows given per vehicle) saves counting them again when the caller knows. The rows are
    first inserted plainly, under a savepoint: consecutive pull windows never overlap, so duplicates are the
    exception (a range pulled again after a failed commit, an agent that repeats itself), and a plain
    INSERT costs about half of `ON CONFLICT DO NOTHING`, which has to probe the unique index before every
    row and RETURN rows to count them. The first duplicate rolls the savepoint back and the same staged
    rows go through `INSERT … ON CONFLICT DO NOTHING`, which skips exactly the rows already stored.
    """
    if not rows:
        return {}
    # ON COMMIT DROP: the table lives for this transaction only, so a pooled connection keeps no state.
    await conn.execute(
        f"""CREATE TEMP TABLE {STAGING_TABLE} (
                vehicle_id bigint, channel_id integer, time timestamptz, value double precision
            ) ON COMMIT DROP"""
    )
    await conn.copy_records_to_table(STAGING_TABLE, records=rows)
    await conn.execute("SAVEPOINT plain_insert")  # inside the caller's transaction
    try:
        await conn.execute(
            f"""INSERT INTO measurements (vehicle_id, channel_id, time, value)
                SELECT vehicle_id, channel_id, time, value FROM {STAGING_TABLE}"""
        )
    except asyncpg.UniqueViolationError:
        await conn.execute("ROLLBACK TO SAVEPOINT plain_insert")
        counts = await conn.fetch(
            f"""WITH inserted AS (
                    INSERT INTO measurements (vehicle_id, channel_id, time, value)
                    SELECT vehicle_id, channel_id, time, value FROM {STAGING_TABLE}
                    ON CONFLICT DO NOTHING
                    RETURNING vehicle_id
                )
                SELECT vehicle_id, count(*) FROM inserted GROUP BY vehicle_id"""
        )
        inserted = {row[0]: row[1] for row in counts}
    else:
        await conn.execute("RELEASE SAVEPOINT plain_insert")
        inserted = dict(per_vehicle) if per_vehicle is not None else dict(Counter(row[0] for row in rows))
    await conn.execute(f"DROP TABLE {STAGING_TABLE}")
    return inserted


@dataclass(frozen=True, slots=True)
class VehicleUpdate:
    """Bookkeeping for one vehicle; None leaves a column as it is.

    `finish` ends the vehicle's turn: it stores `failures` and `next_at` and releases the lease. Without it
    the lease is extended instead (a long gap fill keeps its claim while it makes progress).
    """

    vehicle_id: int
    last_sync_at: datetime | None = None
    alarms_synced_at: datetime | None = None
    last_seen_at: datetime | None = None
    sync_status: str | None = None
    software_version: str | None = None
    finish: bool = False
    failures: int | None = None
    next_at: datetime | None = None


_UPDATE_VEHICLES = """
UPDATE vehicles AS v SET
    last_sync_at = coalesce(u.last_sync_at, v.last_sync_at),
    alarms_synced_at = coalesce(u.alarms_synced_at, v.alarms_synced_at),
    last_seen_at = coalesce(u.last_seen_at, v.last_seen_at),
    sync_status = coalesce(u.sync_status, v.sync_status),
    software_version = coalesce(u.software_version, v.software_version),
    sync_failures = coalesce(u.failures, v.sync_failures),
    sync_next_at = CASE WHEN u.finish THEN u.next_at ELSE v.sync_next_at END,
    sync_lease_owner = CASE WHEN u.finish THEN NULL ELSE v.sync_lease_owner END,
    sync_lease_until = CASE WHEN u.finish THEN NULL
                            ELSE greatest(v.sync_lease_until, now() + make_interval(secs => $2)) END
FROM unnest($3::bigint[], $4::timestamptz[], $5::timestamptz[], $6::timestamptz[], $7::text[], $8::text[],
            $9::boolean[], $10::integer[], $11::timestamptz[])
     AS u(id, last_sync_at, alarms_synced_at, last_seen_at, sync_status, software_version, finish, failures,
          next_at)
WHERE v.id = u.id AND v.sync_lease_owner = $1
RETURNING v.id
"""


async def update_vehicles(
    conn: asyncpg.Connection, *, owner: str, lease_sec: float, updates: Sequence[VehicleUpdate]
) -> set[int]:
    """Apply bookkeeping to vehicles `owner` still leases; return the ids updated (the others were lost)."""
    if not updates:
        return set()
    ordered = sorted(updates, key=lambda u: u.vehicle_id)  # one lock order for every writer
    columns = list(
        zip(
            *(
                (
                    u.vehicle_id,
                    u.last_sync_at,
                    u.alarms_synced_at,
                    u.last_seen_at,
                    u.sync_status,
                    u.software_version,
                    u.finish,
                    u.failures,
                    u.next_at,
                )
                for u in ordered
            ),
            strict=True,
        )
    )
    rows = await conn.fetch(_UPDATE_VEHICLES, owner, lease_sec, *columns)
    return {row[0] for row in rows}


async def upsert_channels(
    conn: asyncpg.Connection, items: Sequence[tuple[int, ChannelInfo]], synced_at: datetime
) -> None:
    """Store `/channels` definitions; a row is rewritten (and `synced_at` moved) only when it changed.

    Rewriting unchanged rows every 30 seconds would leave thousands of dead tuples per cycle for nothing.
    """
    if not items:
        return
    await conn.execute(
        """INSERT INTO channel_config AS c (vehicle_id, channel_id, name, unit, min_value, max_value, synced_at)
           SELECT u.*, $7 FROM unnest($1::bigint[], $2::integer[], $3::text[], $4::text[],
                                      $5::float8[], $6::float8[]) AS u
           ON CONFLICT (vehicle_id, channel_id) DO UPDATE SET
               name = EXCLUDED.name, unit = EXCLUDED.unit, min_value = EXCLUDED.min_value,
               max_value = EXCLUDED.max_value, synced_at = EXCLUDED.synced_at
           WHERE (c.name, c.unit, c.min_value, c.max_value)
                 IS DISTINCT FROM (EXCLUDED.name, EXCLUDED.unit, EXCLUDED.min_value, EXCLUDED.max_value)""",
        [vehicle_id for vehicle_id, _ in items],
        [c.channel_id for _, c in items],
        [c.name for _, c in items],
        [c.unit for _, c in items],
        [c.min_value for _, c in items],
        [c.max_value for _, c in items],
        synced_at,
    )


async def upsert_alarms(
    conn: asyncpg.Connection, items: Sequence[tuple[int, AlarmInfo]], synced_at: datetime
) -> None:
    """Store alarms; a known alarm only gains its `resolved_at` (a resolution is never taken back)."""
    if not items:
        return
    await conn.execute(
        """INSERT INTO alarms_log AS a (vehicle_id, alarm_id, channel_id, level, message, raised_at,
                                       resolved_at, synced_at)
           SELECT u.*, $8 FROM unnest($1::bigint[], $2::bigint[], $3::integer[], $4::text[], $5::text[],
                                      $6::timestamptz[], $7::timestamptz[]) AS u
           ON CONFLICT (vehicle_id, alarm_id) DO UPDATE SET
               resolved_at = EXCLUDED.resolved_at, synced_at = EXCLUDED.synced_at
           WHERE EXCLUDED.resolved_at IS NOT NULL AND a.resolved_at IS DISTINCT FROM EXCLUDED.resolved_at""",
        [vehicle_id for vehicle_id, _ in items],
        [a.alarm_id for _, a in items],
        [a.channel_id for _, a in items],
        [a.level for _, a in items],
        [a.message for _, a in items],
        [a.raised_at for _, a in items],
        [a.resolved_at for _, a in items],
        synced_at,
    )


@dataclass(frozen=True, slots=True)
class JournalEntry:
    """One `sync_journal` row: a vehicle's outcome in one cycle."""

    vehicle_id: int
    started_at: datetime
    finished_at: datetime
    status: str  # ok | timeout | error
    rows_written: int
    duration_ms: int
    window_from: datetime | None
    window_to: datetime | None
    error: str | None


async def insert_journal(conn: asyncpg.Connection, entries: Sequence[JournalEntry]) -> None:
    """Append journal rows."""
    if not entries:
        return
    await conn.execute(
        """INSERT INTO sync_journal (vehicle_id, started_at, finished_at, status, rows_written, duration_ms,
                                     window_from, window_to, error)
           SELECT * FROM unnest($1::bigint[], $2::timestamptz[], $3::timestamptz[], $4::text[],
                                $5::integer[], $6::integer[], $7::timestamptz[], $8::timestamptz[], $9::text[])""",
        *zip(
            *(
                (
                    e.vehicle_id,
                    e.started_at,
                    e.finished_at,
                    e.status,
                    e.rows_written,
                    e.duration_ms,
                    e.window_from,
                    e.window_to,
                    e.error,
                )
                for e in entries
            ),
            strict=True,
        ),
    )
