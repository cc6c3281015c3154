"""The retention policy: what is dropped or deleted, when, and how (shared by `fleet cleanup` and maintenance).

* Time-series tables (`positions`, `measurements`, `raw_frames`, `can_data`) lose **whole monthly
  partitions** that end before now − `*_RETENTION_DAYS`: a `DROP TABLE`, no row-by-row delete and no bloat.
  A partition that straddles the cutoff is kept until all of its month has expired.
* Other tables lose rows by `DELETE` in bounded batches (`RETENTION_BATCH_SIZE` rows per transaction, so
  locks are short and replication never sees one giant transaction): audit log, sync journal, device events,
  expired revoked tokens and refresh tokens, sent mail, finished device commands, device-port security events.

`plan()` answers what would go without changing anything (`fleet cleanup --dry-run`); `apply()` does it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

import asyncpg
import structlog

from fleet.config import Settings
from fleet.db import Database

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class RowRule:
    """Rows of `table` whose `column` is before the cutoff go (`days` None: the cutoff is now)."""

    table: str
    column: str
    days_setting: str | None
    extra: str = ""  # an additional condition

    def cutoff(self, settings: Settings, now: datetime) -> datetime:
        if self.days_setting is None:
            return now
        return now - timedelta(days=int(getattr(settings, self.days_setting)))

    def condition(self) -> str:
        cond = f"{self.column} < $1"
        return f"{cond} AND {self.extra}" if self.extra else cond


# Partitioned parent → the setting that sets its retention (CAN data lives as long as its positions).
PARTITION_RULES: dict[str, str] = {
    "positions": "position_retention_days",
    "measurements": "measurement_retention_days",
    "raw_frames": "raw_frame_retention_days",
    "can_data": "position_retention_days",
}
ROW_RULES: tuple[RowRule, ...] = (
    RowRule("admin_audit_log", "time", "audit_log_retention_days"),
    RowRule("sync_journal", "started_at", "sync_journal_retention_days"),
    RowRule("events", "time", "position_retention_days"),
    RowRule("revoked_tokens", "expires_at", None),
    RowRule("refresh_tokens", "expires_at", None),
    RowRule("mail_outbox", "sent_at", "mail_retention_days", "sent_at IS NOT NULL"),
    RowRule("device_commands", "finished_at", "device_command_retention_days", "finished_at IS NOT NULL"),
    RowRule("security_events", "last_at", "audit_log_retention_days"),
)


@dataclass(frozen=True, slots=True)
class PartitionDrop:
    table: str
    partition: str
    ends_at: datetime
    estimated_rows: int | None  # the planner's estimate (None: never analysed)


@dataclass(frozen=True, slots=True)
class RowDelete:
    table: str
    cutoff: datetime
    rows: int


@dataclass
class RetentionReport:
    dry_run: bool
    partitions: list[PartitionDrop] = field(default_factory=list)
    rows: list[RowDelete] = field(default_factory=list)

    @property
    def partitions_dropped(self) -> int:
        return len(self.partitions)

    @property
    def rows_deleted(self) -> int:
        return sum(item.rows for item in self.rows)


async def expired_partitions(conn: asyncpg.Connection, table: str, cutoff: datetime) -> list[PartitionDrop]:
    """Monthly partitions of `table` that end at or before `cutoff`, oldest first."""
    rows = await conn.fetch(
        r"""SELECT relname, ends_at, reltuples FROM (
                SELECT c.relname, c.reltuples::bigint AS reltuples,
                       substring(pg_get_expr(c.relpartbound, c.oid) FROM 'TO \(''([^'']+)''\)')::timestamptz
                           AS ends_at
                FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
                WHERE i.inhparent = $1::regclass AND c.relname <> $1 || '_default'
            ) parts
            WHERE ends_at <= $2 ORDER BY ends_at""",
        table,
        cutoff,
    )
    return [
        PartitionDrop(table, r["relname"], r["ends_at"], r["reltuples"] if r["reltuples"] >= 0 else None)
        for r in rows
    ]


async def plan(db: Database, settings: Settings, now: datetime) -> RetentionReport:
    """What `apply()` would drop and delete now; changes nothing."""
    report = RetentionReport(dry_run=True)
    async with db.system() as conn:
        for table, setting in PARTITION_RULES.items():
            cutoff = now - timedelta(days=int(getattr(settings, setting)))
            report.partitions.extend(await expired_partitions(conn, table, cutoff))
            # Rows stranded in the default partition move to a partition of their month first, which goes
            # when the whole month is past the cutoff: rows before the start of the cutoff's month.
            stranded = await conn.fetchval(
                f"SELECT count(*) FROM {table} WHERE tableoid = $1::regclass AND "
                f"{_partition_column(table)} < date_trunc('month', $2::timestamptz AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'",
                f"{table}_default",
                cutoff,
            )
            if stranded:
                report.rows.append(RowDelete(f"{table}_default", cutoff, int(stranded)))
        for rule in ROW_RULES:
            cutoff = rule.cutoff(settings, now)
            count = await conn.fetchval(f"SELECT count(*) FROM {rule.table} WHERE {rule.condition()}", cutoff)
            report.rows.append(RowDelete(rule.table, cutoff, int(count)))
    return report


def _partition_column(table: str) -> str:
    return {"positions": "device_time", "raw_frames": "received_at"}.get(table, "time")


async def delete_in_batches(db: Database, rule: RowRule, cutoff: datetime, batch: int) -> int:
    """Delete the rule's rows, `batch` rows per transaction, until none is left; return how many."""
    total = 0
    statement = (
        f"WITH doomed AS (SELECT ctid FROM {rule.table} WHERE {rule.condition()} LIMIT $2) "
        f"DELETE FROM {rule.table} t USING doomed WHERE t.ctid = doomed.ctid"
    )
    while True:
        async with db.system() as conn:
            status = await conn.execute(statement, cutoff, batch)
        deleted = int(status.rsplit(" ", 1)[-1]) if status.startswith("DELETE") else 0
        total += deleted
        if deleted < batch:
            return total


async def apply(db: Database, settings: Settings, now: datetime) -> RetentionReport:
    """Drop expired partitions and delete expired rows; return what went."""
    report = RetentionReport(dry_run=False)
    async with db.system() as conn:
        # Stranded rows get a partition of their own month, which the drop below can then remove whole.
        await conn.fetchval("SELECT fleet_drain_default_partitions()")
    for table, setting in PARTITION_RULES.items():
        cutoff = now - timedelta(days=int(getattr(settings, setting)))
        async with db.system() as conn:
            listed = {p.partition: p for p in await expired_partitions(conn, table, cutoff)}
            dropped = await conn.fetch(
                "SELECT name FROM fleet_drop_expired_partitions($1, $2) AS name", table, cutoff
            )
        for row in dropped:
            name = row["name"]
            report.partitions.append(listed.get(name) or PartitionDrop(table, name, cutoff, None))
            log.info("retention_partition_dropped", table=table, partition=name)
    for rule in ROW_RULES:
        cutoff = rule.cutoff(settings, now)
        deleted = await delete_in_batches(db, rule, cutoff, settings.retention_batch_size)
        report.rows.append(RowDelete(rule.table, cutoff, deleted))
        if deleted:
            log.info("retention_rows_deleted", table=rule.table, rows=deleted, cutoff=cutoff.isoformat())
    return report
