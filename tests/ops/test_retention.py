"""Retention drops exactly the expired monthly partitions and deletes expired rows in bounded batches."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import asyncpg

from fleet.config import Settings
from fleet.db import Database
from fleet.ops import retention

KEEP_LONG = 100_000  # days: nothing of that table expires


async def _partitions(conn: asyncpg.Connection, parent: str, like: str) -> set[str]:
    rows = await conn.fetch(
        """SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
           WHERE i.inhparent = $1::regclass AND c.relname LIKE $2""",
        parent,
        like,
    )
    return {r["relname"] for r in rows}


async def test_retention_drops_exactly_the_expired_partitions(
    db: Database, test_settings: Settings, owner_conn: asyncpg.Connection
) -> None:
    months = [datetime(1995, m, 10, tzinfo=UTC) for m in (1, 2, 3, 4)]
    device_id = await owner_conn.fetchval(
        "INSERT INTO devices (imei) VALUES ($1) RETURNING id", str(uuid.uuid4().int)[:15]
    )
    async with db.system() as conn:
        for moment in months:
            for parent in ("positions", "can_data", "measurements"):
                await conn.fetchval("SELECT fleet_ensure_partition($1, $2)", parent, moment)
            await conn.execute(
                "INSERT INTO positions (device_id, record_index, device_time) VALUES ($1, $2, $3)",
                device_id,
                moment.month,
                moment,
            )
        # A row stranded in the default partition (no partition for 1994-11 yet) expires with its month.
        await conn.execute(
            "INSERT INTO positions (device_id, record_index, device_time) VALUES ($1, 99, $2)",
            device_id,
            datetime(1994, 11, 3, tzinfo=UTC),
        )
    # "Now" is 1995-04-15 and positions are kept 30 days: the cutoff is 1995-03-16. January and February
    # (and the stranded November row's month) end before it; March straddles it and stays, as does April.
    now = datetime(1995, 4, 15, tzinfo=UTC)
    settings = test_settings.model_copy(
        update={
            "position_retention_days": 30,
            "measurement_retention_days": KEEP_LONG,
            "raw_frame_retention_days": KEEP_LONG,
        }
    )
    planned = await retention.plan(db, settings, now)
    planned_names = {p.partition for p in planned.partitions}
    assert {"positions_p199501", "positions_p199502", "can_data_p199501", "can_data_p199502"} <= planned_names
    assert not any(name.endswith(("199503", "199504")) for name in planned_names)
    assert not any(name.startswith("measurements") for name in planned_names)
    stranded = [r for r in planned.rows if r.table == "positions_default"]
    assert stranded and stranded[0].rows == 1
    assert await owner_conn.fetchval("SELECT to_regclass('positions_p199501') IS NOT NULL")  # dry run

    applied = await retention.apply(db, settings, now)
    dropped = {p.partition for p in applied.partitions}
    assert dropped == planned_names | {"positions_p199411"}
    assert await _partitions(owner_conn, "positions", "positions_p1995%") == {
        "positions_p199503",
        "positions_p199504",
    }
    assert await _partitions(owner_conn, "measurements", "measurements_p1995%") == {
        f"measurements_p19950{m}" for m in (1, 2, 3, 4)
    }
    remaining = await owner_conn.fetch(
        "SELECT record_index FROM positions WHERE device_id = $1 ORDER BY 1", device_id
    )
    assert [r["record_index"] for r in remaining] == [3, 4]
    # The current month's partitions are untouched.
    current = datetime.now(UTC).strftime("%Y%m")
    assert await owner_conn.fetchval("SELECT to_regclass($1) IS NOT NULL", f"positions_p{current}")


async def test_rows_are_deleted_in_bounded_batches(
    db: Database, test_settings: Settings, owner_conn: asyncpg.Connection
) -> None:
    marker = f"retention-{uuid.uuid4().hex[:8]}"
    old = datetime.now(UTC) - timedelta(days=200)
    await owner_conn.executemany(
        "INSERT INTO admin_audit_log (time, action, target) VALUES ($1, 'test.old', $2)",
        [(old - timedelta(minutes=i), marker) for i in range(250)],
    )
    await owner_conn.execute(
        "INSERT INTO admin_audit_log (time, action, target) VALUES (now(), 'test.recent', $1)", marker
    )
    await owner_conn.execute(
        """INSERT INTO mail_outbox (recipient, subject, body, created_at, sent_at) VALUES
           ('a@example.com', $1, 'sent long ago', now() - interval '90 days', now() - interval '60 days'),
           ('b@example.com', $1, 'never sent', now() - interval '90 days', NULL)""",
        marker,
    )
    settings = test_settings.model_copy(update={"audit_log_retention_days": 90, "retention_batch_size": 100})
    report = await retention.apply(db, settings, datetime.now(UTC))
    audit_rows = next(r for r in report.rows if r.table == "admin_audit_log")
    assert audit_rows.rows >= 250
    assert await owner_conn.fetchval("SELECT count(*) FROM admin_audit_log WHERE target = $1", marker) == 1
    mail = await owner_conn.fetch("SELECT body FROM mail_outbox WHERE subject = $1", marker)
    assert [m["body"] for m in mail] == ["never sent"]


async def test_delete_in_batches_takes_one_transaction_per_batch(
    db: Database, owner_conn: asyncpg.Connection
) -> None:
    marker = f"batch-{uuid.uuid4().hex[:8]}"
    old = datetime.now(UTC) - timedelta(days=3650)
    await owner_conn.executemany(
        "INSERT INTO admin_audit_log (time, action, target) VALUES ($1, 'test.batch', $2)",
        [(old, marker)] * 250,
    )
    rule = retention.RowRule("admin_audit_log", "time", None, f"target = '{marker}'")
    xid_before = await owner_conn.fetchval("SELECT txid_current()")
    deleted = await retention.delete_in_batches(db, rule, datetime.now(UTC) - timedelta(days=3000), 100)
    xid_after = await owner_conn.fetchval("SELECT txid_current()")
    assert deleted == 250
    # Batches of 100, 100, 50: three deleting transactions (each took a transaction id), not one.
    assert xid_after - xid_before >= 4
