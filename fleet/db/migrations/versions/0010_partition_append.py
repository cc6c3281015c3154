"""The ingest writer may append to the monthly partitions of `positions`, `raw_frames` and `can_data` directly.

PostgreSQL refuses `COPY FROM` into a table with row-level security, so the writer used to COPY each batch
into temp staging tables and move it with one `INSERT ... SELECT ... ON CONFLICT` through the parents. A
binary COPY straight into the month's partition costs PostgreSQL about 40 % less CPU per record (measured with
`bench/profile_ingest_batch.py`, docs/INGEST.md "Fourth pass"). Partitions carry no policies of their own; this
migration makes that path exactly as confined as the old one:

* `fleet_app` gets `INSERT` on each (non-default) partition of the three tables - nothing else. Reading,
  changing and deleting rows still go through the parents and their forced policies, and the default
  partitions stay closed.
* The write policies of these tables are a context check only (`fleet_role() = 'superuser'`, the system
  context of background services), so a statement-level `BEFORE INSERT` trigger on each partition enforces
  the same check, once per COPY: an append without that context is refused. The partitions' owner (the
  migrations, `fleet_ensure_partition`, maintenance) is not stopped by it.

`fleet_ensure_partition` does both for every partition it creates from now on. The writer takes the rows' ids
from the tables' identity sequences itself (a CAN reading needs its position's id before either is sent), so
`fleet_app` gets `USAGE` on those three sequences (the downgrade leaves that grant: it is harmless).
"""

from __future__ import annotations

import importlib

from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

_PREVIOUS = importlib.import_module("fleet.db.migrations.versions.0009_gentle_autovacuum")
PARENTS = ("positions", "raw_frames", "can_data")

GUARD = """
CREATE OR REPLACE FUNCTION fleet_partition_append_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF fleet_role() IS DISTINCT FROM 'superuser'
       AND NOT pg_has_role(current_user, (SELECT relowner FROM pg_class WHERE oid = TG_RELID), 'MEMBER') THEN
        RAISE EXCEPTION 'rows are appended to % only in the system context', TG_TABLE_NAME
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN NULL;
END
$$;
"""
_OPEN = """
    IF parent IN ('positions', 'raw_frames', 'can_data') THEN
        -- The ingest writer appends here with COPY (migration 0010); the trigger keeps the parent's check.
        EXECUTE format('GRANT INSERT ON %I TO fleet_app', part);
        EXECUTE format('CREATE TRIGGER append_guard BEFORE INSERT ON %I FOR EACH STATEMENT '
                       'EXECUTE FUNCTION fleet_partition_append_guard()', part);
    END IF;"""


def _each_partition(body: str) -> str:
    """A DO block running ``body`` (format() arguments: the partition) for every month partition of PARENTS."""
    parents = ", ".join(f"'{name}'" for name in PARENTS)
    return f"""
DO $$
DECLARE part regclass;
BEGIN
    FOR part IN SELECT i.inhrelid::regclass FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
                WHERE i.inhparent IN (SELECT oid FROM pg_class WHERE relname IN ({parents})
                                      AND relnamespace = 'public'::regnamespace)
                  AND NOT c.relname LIKE '%\\_default'
    LOOP
        {body}
    END LOOP;
END
$$;
"""


SEQUENCES = f"""
DO $$
DECLARE t text;
BEGIN
    FOREACH t IN ARRAY ARRAY[{", ".join(f"'{name}'" for name in PARENTS)}] LOOP
        EXECUTE format('GRANT USAGE ON SEQUENCE %s TO fleet_app', pg_get_serial_sequence(t, 'id'));
    END LOOP;
END
$$;
"""


def upgrade() -> None:
    op.execute(GUARD)
    op.execute(SEQUENCES)
    op.execute(_PREVIOUS._ENSURE_PARTITION.format(tune=_PREVIOUS._TUNE + _OPEN))
    op.execute(
        _each_partition(
            "EXECUTE format('GRANT INSERT ON %s TO fleet_app', part);\n"
            "        EXECUTE format('CREATE TRIGGER append_guard BEFORE INSERT ON %s FOR EACH STATEMENT "
            "EXECUTE FUNCTION fleet_partition_append_guard()', part);"
        )
    )


def downgrade() -> None:
    op.execute(
        _each_partition(
            "EXECUTE format('REVOKE INSERT ON %s FROM fleet_app', part);\n"
            "        EXECUTE format('DROP TRIGGER IF EXISTS append_guard ON %s', part);"
        )
    )
    op.execute(_PREVIOUS._ENSURE_PARTITION.format(tune=_PREVIOUS._TUNE))
    op.execute("DROP FUNCTION IF EXISTS fleet_partition_append_guard()")
