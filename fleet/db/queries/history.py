"""Time-range history of a vehicle: positions and measurements, raw or downsampled with date_bin.

Answers are built in PostgreSQL (json_agg for JSON, string_agg for CSV/GPX) because a day of 1 Hz data
is 86,400 rows: building them as Python objects would cost more than the query itself.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import asyncpg

from fleet.db.queries.pages import iso, json_page

# Fixed origin for date_bin so that the same bucket size always yields the same boundaries.
BUCKET_ORIGIN = "TIMESTAMPTZ '2000-01-01 00:00:00+00'"

_POSITION_RANGE = "vehicle_id = $1 AND device_time >= $2 AND device_time < $3"
_POSITION_COLUMNS = f"""{iso("device_time")} AS time, latitude, longitude, speed, course, altitude,
    satellites, hdop, valid, device_id"""


async def positions_page(
    conn: asyncpg.Connection,
    vehicle_id: int,
    start: datetime,
    end: datetime,
    *,
    limit: int,
    offset: int,
    bucket: timedelta | None,
) -> bytes:
    """Positions in [start, end), oldest first; per-bucket averages when `bucket` is given."""
    extra = {"vehicle_id": vehicle_id, "from": start.isoformat(), "to": end.isoformat()}
    if bucket is None:
        return await json_page(
            conn,
            f"SELECT {_POSITION_COLUMNS} FROM positions WHERE {_POSITION_RANGE} ORDER BY device_time, id",
            f"SELECT count(*) FROM positions WHERE {_POSITION_RANGE}",
            vehicle_id,
            start,
            end,
            limit=limit,
            offset=offset,
            extra=extra,
        )
    binned = f"date_bin($4, device_time, {BUCKET_ORIGIN})"
    extra["bucket_sec"] = bucket.total_seconds()
    return await json_page(
        conn,
        f"""SELECT {iso("b")} AS time, lat AS latitude, lon AS longitude, speed, max_speed, altitude, points
            FROM (SELECT {binned} AS b, avg(latitude) AS lat, avg(longitude) AS lon, avg(speed) AS speed,
                         max(speed) AS max_speed, avg(altitude) AS altitude, count(*) AS points
                  FROM positions WHERE {_POSITION_RANGE} GROUP BY 1) s
            ORDER BY b""",
        f"SELECT count(DISTINCT {binned}) FROM positions WHERE {_POSITION_RANGE}",
        vehicle_id,
        start,
        end,
        bucket,
        limit=limit,
        offset=offset,
        extra=extra,
    )


async def positions_csv(
    conn: asyncpg.Connection, vehicle_id: int, start: datetime, end: datetime, *, limit: int, offset: int
) -> bytes:
    """Positions as CSV with a header line (PostgreSQL's own CSV quoting via COPY)."""
    chunks: list[bytes] = []

    async def sink(chunk: bytes) -> None:
        chunks.append(chunk)

    await conn.copy_from_query(
        f"""SELECT {_POSITION_COLUMNS} FROM positions WHERE {_POSITION_RANGE}
            ORDER BY device_time, id LIMIT $4 OFFSET $5""",
        vehicle_id,
        start,
        end,
        limit,
        offset,
        output=sink,
        format="csv",
        header=True,
    )
    return b"".join(chunks)


async def positions_gpx(
    conn: asyncpg.Connection,
    vehicle_id: int,
    start: datetime,
    end: datetime,
    *,
    limit: int,
    offset: int,
) -> str:
    """The track points of a GPX 1.1 `<trkseg>` (valid fixes only), built in SQL."""
    points: str | None = await conn.fetchval(
        f"""SELECT string_agg(format('<trkpt lat="%s" lon="%s">%s<time>%s</time>%s</trkpt>',
                       latitude, longitude,
                       CASE WHEN altitude IS NOT NULL THEN format('<ele>%s</ele>', altitude) ELSE '' END,
                       {iso("device_time")},
                       CASE WHEN speed IS NOT NULL
                            THEN format('<extensions><speed>%s</speed></extensions>', round((speed / 3.6)::numeric, 3))
                            ELSE '' END), E'\\n' ORDER BY device_time, id)
            FROM (SELECT * FROM positions WHERE {_POSITION_RANGE} AND latitude IS NOT NULL
                    AND longitude IS NOT NULL ORDER BY device_time, id LIMIT $4 OFFSET $5) p""",
        vehicle_id,
        start,
        end,
        limit,
        offset,
    )
    return points or ""


_MEASUREMENT_RANGE = """vehicle_id = $1 AND time >= $2 AND time < $3
    AND ($4::int[] IS NULL OR channel_id = ANY($4))"""


async def measurements_page(
    conn: asyncpg.Connection,
    vehicle_id: int,
    start: datetime,
    end: datetime,
    *,
    channels: list[int] | None,
    limit: int,
    offset: int,
    bucket: timedelta | None,
) -> bytes:
    """Measurements in [start, end), oldest first, optionally per channel and per bucket (avg/min/max)."""
    extra = {
        "vehicle_id": vehicle_id,
        "from": start.isoformat(),
        "to": end.isoformat(),
        "channels": await channel_list(conn, vehicle_id, channels),
    }
    if bucket is None:
        return await json_page(
            conn,
            f"""SELECT channel_id, {iso("time")} AS time, value FROM measurements
                WHERE {_MEASUREMENT_RANGE} ORDER BY time, channel_id""",
            f"SELECT count(*) FROM measurements WHERE {_MEASUREMENT_RANGE}",
            vehicle_id,
            start,
            end,
            channels,
            limit=limit,
            offset=offset,
            extra=extra,
        )
    binned = f"date_bin($5, time, {BUCKET_ORIGIN})"
    extra["bucket_sec"] = bucket.total_seconds()
    return await json_page(
        conn,
        f"""SELECT channel_id, {iso("b")} AS time, avg AS value, min, max, points
            FROM (SELECT channel_id, {binned} AS b, avg(value) AS avg, min(value) AS min, max(value) AS max,
                         count(*) AS points
                  FROM measurements WHERE {_MEASUREMENT_RANGE} GROUP BY 1, 2) s
            ORDER BY b, channel_id""",
        f"""SELECT count(*) FROM (SELECT DISTINCT channel_id, {binned} FROM measurements
                                  WHERE {_MEASUREMENT_RANGE}) s""",
        vehicle_id,
        start,
        end,
        channels,
        bucket,
        limit=limit,
        offset=offset,
        extra=extra,
    )


async def channel_list(conn: asyncpg.Connection, vehicle_id: int, channels: list[int] | None) -> list[dict]:
    """Names, units and ranges of the vehicle's channels (those asked for, or all)."""
    rows = await conn.fetch(
        """SELECT channel_id, name, unit, min_value, max_value FROM channel_config
           WHERE vehicle_id = $1 AND ($2::int[] IS NULL OR channel_id = ANY($2)) ORDER BY channel_id""",
        vehicle_id,
        channels,
    )
    return [dict(row) for row in rows]
