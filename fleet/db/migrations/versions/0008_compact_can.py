"""CAN signals stored compactly: one `can_data` row per reading instead of one row per signal.

A tracker reporting CAN values sends about ten of them with every record. Stored one row per signal, each
value cost a heap tuple of ~130 bytes and three index entries, and those rows were about 60 % of the
database's CPU per ingested record (bench/profile_ingest_batch.py, docs/PERFORMANCE.md). Now a row holds
everything one message brought:

* a **record's** signals (FLEX CAN fields, Teltonika CAN I/O elements): `record_index` is the record's
  black-box index, `position_id` its position, `frame` is empty;
* a **CAN frame's** signals (the text `~T` CAN frames of Navtelecom): `record_index` is -1, `position_id`
  NULL, `frame` names the frame (its identifier, e.g. `0x18FEF100`).

`signals` is a JSON array of `{"name", "value" | "value_text", "unit", "source"}` objects (absent keys are
null), so a signal reads the same as before: `jsonb_to_recordset(signals)` gives the former columns back.
The primary key (device, time, record, frame) is also the retransmission guard and the index for a device's
history; `can_data_vehicle_time_idx` serves a vehicle's. Existing rows are regrouped into readings.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-05
"""

from __future__ import annotations

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

IS_SUPERUSER = "fleet_role() = 'superuser'"
SEES_VEHICLE = (
    "(fleet_role() = 'superuser' OR (fleet_role() = 'owner' AND vehicle_id IN "
    "(SELECT va.vehicle_id FROM vehicle_access va WHERE va.user_id = fleet_user_id())))"
)
DEFINER = "SECURITY DEFINER SET search_path = public, pg_temp SET app.user_id = '' SET app.user_role = ''"

# What a stored signal is, as jsonb_to_recordset reads it back.
SIGNAL_RECORD = "s(name text, value double precision, value_text text, unit text, source text)"

COMPACT_TABLE = """
CREATE TABLE can_data (
    id            bigint GENERATED ALWAYS AS IDENTITY,
    device_id     bigint NOT NULL,
    vehicle_id    bigint,
    position_id   bigint,
    time          timestamptz NOT NULL,
    record_index  bigint NOT NULL DEFAULT -1,
    frame         text NOT NULL DEFAULT '',
    signals       jsonb NOT NULL CHECK (jsonb_typeof(signals) = 'array'),
    PRIMARY KEY (device_id, time, record_index, frame)
) PARTITION BY RANGE (time);
CREATE INDEX can_data_vehicle_time_idx ON can_data (vehicle_id, time DESC);
"""

PER_SIGNAL_TABLE = """
CREATE TABLE can_data (
    id           bigint GENERATED ALWAYS AS IDENTITY,
    device_id    bigint NOT NULL,
    vehicle_id   bigint,
    position_id  bigint,
    time         timestamptz NOT NULL,
    name         text NOT NULL,
    value        double precision,
    value_text   text,
    unit         text,
    source       text NOT NULL,
    PRIMARY KEY (id, time),
    UNIQUE (device_id, time, source, name)
) PARTITION BY RANGE (time);
CREATE INDEX can_data_vehicle_name_time_idx ON can_data (vehicle_id, name, time DESC);
CREATE INDEX can_data_device_time_idx ON can_data (device_id, time DESC);
"""

# Readings from the per-signal rows: a linked signal joins its position's reading, a free one the reading of
# its source (one decoded CAN frame).
TO_COMPACT = """
CREATE TEMP TABLE can_data_migrating AS
SELECT o.device_id, max(o.vehicle_id) AS vehicle_id, o.position_id, o.time,
       coalesce(max(p.record_index), -1) AS record_index,
       CASE WHEN o.position_id IS NULL THEN o.source ELSE '' END AS frame,
       jsonb_agg(jsonb_strip_nulls(jsonb_build_object(
           'name', o.name, 'value', o.value, 'value_text', o.value_text, 'unit', o.unit, 'source', o.source
       )) ORDER BY o.source, o.name) AS signals
FROM can_data o LEFT JOIN positions p ON p.id = o.position_id AND p.device_time = o.time
GROUP BY o.device_id, o.position_id, o.time, CASE WHEN o.position_id IS NULL THEN o.source ELSE '' END
"""
TO_PER_SIGNAL = f"""
CREATE TEMP TABLE can_data_migrating AS
SELECT DISTINCT ON (c.device_id, c.time, coalesce(s.source, c.frame), s.name)
       c.device_id, c.vehicle_id, c.position_id, c.time, s.name, s.value, s.value_text, s.unit,
       coalesce(s.source, c.frame) AS source
FROM can_data c CROSS JOIN LATERAL jsonb_to_recordset(c.signals) AS {SIGNAL_RECORD}
WHERE s.name IS NOT NULL
"""

CAN_SIGNALS_ARGS = (
    "p_login text, p_vehicle bigint, p_from timestamptz, p_to timestamptz, p_interval_ms bigint DEFAULT 1000"
)
CAN_SIGNALS_QUERY = {
    "compact": f"""
    SELECT date_bin(grafana.bucket(p_interval_ms), d.time, p_from) AS t,
           s.name || coalesce(', ' || s.unit, ''), avg(s.value)
    FROM can_data d CROSS JOIN LATERAL jsonb_to_recordset(d.signals) AS {SIGNAL_RECORD}
    WHERE d.vehicle_id = p_vehicle AND d.time >= p_from AND d.time < p_to AND s.value IS NOT NULL
    GROUP BY 1, 2 ORDER BY 1, 2""",
    "per_signal": """
    SELECT date_bin(grafana.bucket(p_interval_ms), d.time, p_from) AS t,
           d.name || coalesce(', ' || d.unit, ''), avg(d.value)
    FROM can_data d
    WHERE d.vehicle_id = p_vehicle AND d.time >= p_from AND d.time < p_to AND d.value IS NOT NULL
    GROUP BY 1, 2 ORDER BY 1, 2""",
}


def _can_signals_function(shape: str) -> str:
    """Grafana's `can_signals` (revision 0004) reading the given table shape; same signature and result."""
    return f"""
CREATE OR REPLACE FUNCTION grafana.can_signals({CAN_SIGNALS_ARGS})
RETURNS TABLE ("time" timestamptz, metric text, value double precision)
LANGUAGE plpgsql {DEFINER} AS $$
BEGIN
    IF NOT grafana.may_see(p_login, p_vehicle) THEN
        RETURN;
    END IF;
    RETURN QUERY {CAN_SIGNALS_QUERY[shape].strip()};
END
$$"""


def _rebuild(table_sql: str, columns: str) -> None:
    """Replace `can_data` by `table_sql` and move the rows of `can_data_migrating` into it."""
    op.execute("DROP TABLE can_data CASCADE")
    op.execute(table_sql)
    op.execute("CREATE TABLE can_data_default PARTITION OF can_data DEFAULT")
    op.execute("ALTER TABLE can_data ENABLE ROW LEVEL SECURITY")
    op.execute("ALTER TABLE can_data FORCE ROW LEVEL SECURITY")
    op.execute(f"CREATE POLICY can_data_read ON can_data FOR SELECT USING ({SEES_VEHICLE})")
    op.execute(
        f"CREATE POLICY can_data_write ON can_data FOR ALL USING ({IS_SUPERUSER}) WITH CHECK ({IS_SUPERUSER})"
    )
    op.execute("GRANT SELECT, INSERT, UPDATE, DELETE ON can_data TO fleet_app")
    op.execute("GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO fleet_app")
    # Months that hold rows get their partitions before the rows arrive; then the months ahead.
    op.execute(
        """SELECT fleet_ensure_partition('can_data', m)
           FROM (SELECT DISTINCT date_trunc('month', time AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' AS m
                 FROM can_data_migrating) months"""
    )
    op.execute("SELECT fleet_ensure_partitions_ahead(2)")
    # Readings whose positions were deleted meanwhile may meet on the key: the first one is kept.
    op.execute(
        f"INSERT INTO can_data ({columns}) SELECT {columns} FROM can_data_migrating ON CONFLICT DO NOTHING"
    )
    op.execute("DROP TABLE can_data_migrating")


# The rows move under forced row-level security: the migrating role reads and writes them in a superuser
# context of this transaction only (a role that bypasses RLS would not need it; one that does not would
# otherwise see no rows and move nothing).
SYSTEM_CONTEXT = "SELECT set_config('app.user_role', 'superuser', true)"


def upgrade() -> None:
    op.execute(SYSTEM_CONTEXT)
    op.execute(TO_COMPACT)
    _rebuild(COMPACT_TABLE, "device_id, vehicle_id, position_id, time, record_index, frame, signals")
    op.execute(_can_signals_function("compact"))


def downgrade() -> None:
    op.execute(SYSTEM_CONTEXT)
    op.execute(TO_PER_SIGNAL)
    _rebuild(
        PER_SIGNAL_TABLE, "device_id, vehicle_id, position_id, time, name, value, value_text, unit, source"
    )
    op.execute(_can_signals_function("per_signal"))
