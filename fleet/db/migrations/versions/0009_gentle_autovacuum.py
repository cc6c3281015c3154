"""Telemetry partitions are vacuumed gently: `autovacuum_vacuum_cost_delay = 10` ms on each of them.

The monthly partitions of `positions`, `raw_frames`, `can_data` and `measurements` only grow. PostgreSQL's
insert-triggered autovacuum (13+) visits each new page soon after it was written, sets its hint bits and
visibility-map bit, and so dirties it again: with the default 2 ms delay it wrote those pages back as fast
as the disk took them, and a batch's commit then waited behind that I/O. Traced at half ingest load (six
runs each, docs/INGEST.md "Third pass"): ACK p99 38-151 ms with stalls up to 290 ms by default, 39-50 ms with
autovacuum off, 51-90 ms (no stall over 227 ms) with 10 ms on these tables - the delay PostgreSQL used
before version 12. Vacuum still runs, at up to ~1,000 dirtied pages per second per worker: enough for an
append-only partition (one transaction per ingest batch consumes few transaction ids), and other tables keep
the server's setting.

Partitions created from now on get it from `fleet_ensure_partition`; existing ones are altered here.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06
"""

from __future__ import annotations

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

PARENTS = ("measurements", "positions", "raw_frames", "can_data")
SETTING = "autovacuum_vacuum_cost_delay = 10"

# fleet_ensure_partition as 0001 created it, with `{tune}` after the CREATE TABLE.
_ENSURE_PARTITION = """
CREATE OR REPLACE FUNCTION fleet_ensure_partition(parent text, at timestamptz) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    col   text := fleet_partition_column(parent);
    utc   timestamp := at AT TIME ZONE 'UTC';
    lo    timestamptz;
    hi    timestamptz;
    part  text;
BEGIN
    IF col IS NULL THEN
        RAISE EXCEPTION 'table % is not a partitioned fleet table', parent;
    END IF;
    lo := make_timestamptz(extract(year FROM utc)::int, extract(month FROM utc)::int, 1, 0, 0, 0, 'UTC');
    hi := make_timestamptz(extract(year FROM utc + interval '1 month')::int,
                           extract(month FROM utc + interval '1 month')::int, 1, 0, 0, 0, 'UTC');
    part := format('%s_p%s', parent, to_char(utc, 'YYYYMM'));
    IF to_regclass(part) IS NOT NULL THEN
        RETURN false;
    END IF;
    PERFORM pg_advisory_xact_lock(hashtext('fleet_partition:' || parent));
    IF to_regclass(part) IS NOT NULL THEN
        RETURN false;
    END IF;
    EXECUTE format('CREATE TABLE %I (LIKE %I INCLUDING DEFAULTS INCLUDING CONSTRAINTS)', part, parent);{tune}
    EXECUTE format(
        'WITH moved AS (DELETE FROM %I WHERE %I >= $1 AND %I < $2 RETURNING *) INSERT INTO %I SELECT * FROM moved',
        parent || '_default', col, col, part) USING lo, hi;
    EXECUTE format('ALTER TABLE %I ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)', parent, part, lo, hi);
    RETURN true;
END
$$;
"""
_TUNE = f"""
    -- Append-only: vacuumed gently (migration 0009).
    EXECUTE format('ALTER TABLE %I SET ({SETTING})', part);"""


def _partitions_sql(action: str) -> str:
    """A DO block applying ``action`` (an ALTER TABLE clause) to every partition of the telemetry tables."""
    parents = ", ".join(f"'{name}'" for name in PARENTS)
    return f"""
DO $$
DECLARE part regclass;
BEGIN
    FOR part IN SELECT inhrelid::regclass FROM pg_inherits
                WHERE inhparent IN (SELECT oid FROM pg_class WHERE relname IN ({parents})
                                    AND relnamespace = 'public'::regnamespace)
    LOOP
        EXECUTE format('ALTER TABLE %s {action}', part);
    END LOOP;
END
$$;
"""


def upgrade() -> None:
    op.execute(_ENSURE_PARTITION.format(tune=_TUNE))
    op.execute(_partitions_sql(f"SET ({SETTING})"))


def downgrade() -> None:
    op.execute(_ENSURE_PARTITION.format(tune=""))
    op.execute(_partitions_sql("RESET (autovacuum_vacuum_cost_delay)"))
