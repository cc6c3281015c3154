"""`fleet ops daily`: the morning check of seed 000's daily operations, as findings with a verdict each.

Answers from the running server (health, readiness, its gauges) and from the database (the last 24 hours of
frames, positions and sync journal; trackers gone silent; partitions ahead; accounts waiting), plus the
backups directory and the configured certificates.
"""

from __future__ import annotations

import time
from typing import Any

import asyncpg
import httpx

from fleet.config import Settings
from fleet.observability import dbstat
from fleet.observability.scrape import Snapshot
from fleet.observability.security import Finding, grade, verdict
from fleet.ops.backup.status import latest_success

LAST_DAY_SQL = """
SELECT
    (SELECT count(*) FROM positions WHERE received_at > now() - interval '1 day') AS positions,
    (SELECT count(*) FROM raw_frames WHERE received_at > now() - interval '1 day') AS frames,
    (SELECT count(*) FROM raw_frames WHERE received_at > now() - interval '1 day' AND outcome <> 'ok') AS bad_frames,
    (SELECT count(*) FROM measurements WHERE time > now() - interval '1 day') AS measurements,
    (SELECT count(*) FROM sync_journal WHERE started_at > now() - interval '1 day') AS pulls,
    (SELECT count(*) FROM sync_journal WHERE started_at > now() - interval '1 day' AND status <> 'ok') AS failed_pulls,
    (SELECT count(*) FROM devices WHERE vehicle_id IS NOT NULL
        AND (last_seen_at IS NULL OR last_seen_at < now() - interval '1 day')) AS silent_trackers,
    (SELECT count(*) FROM vehicles WHERE vpn_ip IS NOT NULL
        AND (last_sync_at IS NULL OR last_sync_at < now() - interval '1 hour')) AS stale_vehicles,
    (SELECT count(*) FROM users WHERE status = 'pending') AS pending_users,
    (SELECT count(*) FROM alarms_log WHERE resolved_at IS NULL) AS active_alarms
"""


async def backup_finding(conn: asyncpg.Connection, settings: Settings) -> Finding:
    """The newest successful backup recorded in `backup_runs` (any host, the timer or `fleet backup`)."""
    last = await latest_success(conn)
    if last is None:
        return Finding(
            "backups", "fail", "no successful backup recorded (fleet backup; runbooks/10-backups-missing.md)"
        )
    age = (time.time() - last.finished_at.timestamp()) / 3600
    verified = "verified" if last.verified else "not verified"
    return Finding(
        "backups",
        verdict(age <= settings.backup_max_age_hours),
        f"newest {last.file_name}, {age:.1f} h old, {verified}",
    )


def server_findings(base: str, headers: dict[str, str]) -> tuple[list[Finding], Snapshot | None]:
    findings = []
    snapshot = None
    try:
        ready = httpx.get(f"{base}/ready", timeout=5)
        findings.append(
            Finding(
                "server", verdict(ready.status_code == 200), f"/ready {ready.status_code}: {ready.text[:200]}"
            )
        )
        metrics = httpx.get(f"{base}/metrics", headers=headers, timeout=5)
        if metrics.status_code == 200:
            snapshot = Snapshot.parse(metrics.text)
        else:
            findings.append(Finding("server", "warn", f"/metrics answered {metrics.status_code}"))
    except httpx.HTTPError as err:
        findings.append(Finding("server", "fail", f"not reachable at {base}: {err}"))
    return findings, snapshot


def host_findings(snapshot: Snapshot | None) -> list[Finding]:
    if snapshot is None:
        return []
    findings = []
    sizes = {labels["volume"]: value for labels, value in snapshot.series("fleet_disk_size_bytes")}
    for labels, free in snapshot.series("fleet_disk_free_bytes"):
        share = free / sizes[labels["volume"]] if sizes.get(labels["volume"]) else 1.0
        status = grade(share, 0.25, 0.1)
        findings.append(
            Finding("disk", status, f"{labels['volume']}: {share:.0%} free ({free / 2**30:,.1f} GiB)")
        )
    for labels, expiry in snapshot.series("fleet_tls_certificate_expiry_timestamp_seconds"):
        days = (expiry - time.time()) / 86400
        status = grade(days, 14, 3)
        findings.append(Finding("certificates", status, f"{labels['certificate']}: {days:,.0f} days left"))
    for labels, readable in snapshot.series("fleet_tls_certificate_readable"):
        if not readable:
            findings.append(Finding("certificates", "fail", f"{labels['certificate']} cannot be read"))
    return findings


async def database_findings(conn: asyncpg.Connection) -> tuple[list[Finding], dict[str, Any]]:
    day = dict(await conn.fetchrow(LAST_DAY_SQL) or {})
    findings = [
        Finding("ingest", "ok", f"{day['frames']:,} frames, {day['positions']:,} positions in 24 h"),
        Finding(
            "sync", "ok", f"{day['pulls']:,} vehicle pulls, {day['measurements']:,} measurements in 24 h"
        ),
    ]
    if day["frames"] and day["bad_frames"] / day["frames"] > 0.01:
        findings.append(Finding("ingest", "warn", f"{day['bad_frames']:,} frames not decoded (runbooks/03)"))
    if day["pulls"] and day["failed_pulls"] / day["pulls"] > 0.05:
        findings.append(
            Finding("sync", "warn", f"{day['failed_pulls']:,} failed pulls in 24 h (runbooks/07)")
        )
    if day["silent_trackers"]:
        findings.append(
            Finding("ingest", "warn", f"{day['silent_trackers']} assigned trackers silent for a day")
        )
    if day["stale_vehicles"]:
        findings.append(Finding("sync", "warn", f"{day['stale_vehicles']} vehicles not synced for an hour"))
    if day["pending_users"]:
        findings.append(Finding("users", "warn", f"{day['pending_users']} accounts await approval"))
    for part in await dbstat.rows(conn, dbstat.PARTITIONS_SQL):
        if not part["next_month"]:
            findings.append(Finding("partitions", "fail", f"{part['parent']}: no partition for next month"))
        if (part["default_rows_est"] or 0) > 0:
            findings.append(Finding("partitions", "warn", f"{part['parent']}: rows in the default partition"))
    return findings, day
