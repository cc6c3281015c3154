"""Retention of finished device commands and device-port security events (issue 15 leftovers)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import asyncpg

from fleet.config import Settings
from fleet.db import Database
from fleet.ops import retention


async def test_finished_commands_and_old_security_events_expire(
    db: Database, test_settings: Settings, owner_conn: asyncpg.Connection
) -> None:
    imei = str(uuid.uuid4().int)[:15]
    device_id = await owner_conn.fetchval("INSERT INTO devices (imei) VALUES ($1) RETURNING id", imei)
    await owner_conn.execute(
        """INSERT INTO device_commands (device_id, protocol, type, payload, status, created_at, expires_at,
                                        finished_at) VALUES
           ($1, 'navtelecom', 'reboot', '{}', 'answered', now() - interval '40 days',
            now() - interval '39 days', now() - interval '40 days'),
           ($1, 'navtelecom', 'reboot', '{}', 'expired', now() - interval '5 days',
            now() - interval '4 days', now() - interval '4 days'),
           ($1, 'navtelecom', 'reboot', '{}', 'queued', now() - interval '40 days',
            now() + interval '1 day', NULL)""",
        device_id,
    )
    await owner_conn.execute(
        """INSERT INTO security_events (kind, first_at, last_at, device_id, imei) VALUES
           ('takeover_refused', now() - interval '100 days', now() - interval '100 days', $1, $2),
           ('takeover_refused', now() - interval '1 day', now() - interval '1 day', $1, $2)""",
        device_id,
        imei,
    )
    settings = test_settings.model_copy(
        update={"device_command_retention_days": 30, "audit_log_retention_days": 90}
    )
    now = datetime.now(UTC)
    planned = {row.table: row.rows for row in (await retention.plan(db, settings, now)).rows}
    assert planned["device_commands"] >= 1 and planned["security_events"] >= 1
    assert (
        await owner_conn.fetchval("SELECT count(*) FROM device_commands WHERE device_id = $1", device_id) == 3
    )

    await retention.apply(db, settings, now)
    left = await owner_conn.fetch(
        "SELECT status FROM device_commands WHERE device_id = $1 ORDER BY status", device_id
    )
    assert [row["status"] for row in left] == ["expired", "queued"]  # the queued one never finished
    assert await owner_conn.fetchval("SELECT count(*) FROM security_events WHERE imei = $1", imei) == 1
