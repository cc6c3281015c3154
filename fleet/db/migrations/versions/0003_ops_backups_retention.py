"""Operations: a record of backups, and partition retention that names what it drops.

`backup_runs` holds one row per `fleet backup` (or scheduled backup): when, which file, how big, verified or
not, uploaded where, or why it failed. Every process reads the newest success from it, so `/ready` and the
`fleet_backup_*` metrics know about a backup taken by the systemd timer, cron or another host. Only a
superuser context (admins, background services) sees it.

`fleet_drop_expired_partitions` is `fleet_drop_partitions_before` returning the names it dropped, so that
`fleet cleanup` can print them.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-05
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

SCHEMA = r"""
CREATE TABLE backup_runs (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    started_at   timestamptz NOT NULL,
    finished_at  timestamptz NOT NULL DEFAULT now(),
    status       text NOT NULL CHECK (status IN ('ok', 'failed')),
    file_name    text,
    size_bytes   bigint,
    sha256       text,
    verified     boolean NOT NULL DEFAULT false,
    uploaded_to  text,
    host         text,
    error        text
);
CREATE INDEX backup_runs_ok_idx ON backup_runs (finished_at DESC) WHERE status = 'ok';
ALTER TABLE backup_runs ENABLE ROW LEVEL SECURITY;
ALTER TABLE backup_runs FORCE ROW LEVEL SECURITY;
CREATE POLICY backup_runs_admin ON backup_runs FOR ALL
    USING (fleet_role() = 'superuser') WITH CHECK (fleet_role() = 'superuser');
GRANT SELECT, INSERT, DELETE ON backup_runs TO fleet_app;

-- Retention: drop whole monthly partitions that end before `cutoff`; return their names.
CREATE FUNCTION fleet_drop_expired_partitions(parent text, cutoff timestamptz) RETURNS SETOF text
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    part     record;
    upper_ts timestamptz;
BEGIN
    IF fleet_partition_column(parent) IS NULL THEN
        RAISE EXCEPTION 'table % is not a partitioned fleet table', parent;
    END IF;
    FOR part IN
        SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) AS bound
        FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent = parent::regclass AND c.relname <> parent || '_default'
        ORDER BY c.relname
    LOOP
        upper_ts := substring(part.bound FROM 'TO \(''([^'']+)''\)')::timestamptz;
        IF upper_ts IS NOT NULL AND upper_ts <= cutoff THEN
            EXECUTE format('DROP TABLE %I', part.relname);
            RETURN NEXT part.relname;
        END IF;
    END LOOP;
END
$$;
REVOKE ALL ON FUNCTION fleet_drop_expired_partitions(text, timestamptz) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION fleet_drop_expired_partitions(text, timestamptz) TO fleet_app;
"""


def upgrade() -> None:
    op.execute(SCHEMA)


def downgrade() -> None:
    op.execute("DROP FUNCTION IF EXISTS fleet_drop_expired_partitions(text, timestamptz)")
    op.execute("DROP TABLE IF EXISTS backup_runs")
