"""Live view: every vehicle's last position kept by the database, positions of pull vehicles, GPS mapping.

* `vehicle_last_positions` — one row per vehicle: its newest position with coordinates. The fleet map asks
  for the last position of thousands of vehicles at once (`GET /vehicles/latest-positions`); reading them
  from `positions` costs an index descent into every monthly partition per vehicle (the default partition
  stops PostgreSQL from scanning the partitions in time order), about 15 per vehicle. The row is kept by
  statement-level triggers on `positions` reading the statement's transition table, so every writer
  (ingest batches, `fleet redecode`, the sync's positions of pull vehicles, an attached tracker's history)
  keeps it right without knowing about it — one extra statement per inserting statement, not per row.
* `positions.device_id` becomes nullable: a pull vehicle whose Outbound API reports GPS channels gets
  positions with its `vehicle_id` and no device. `positions_pull_key` keeps them unique per vehicle and time
  (a window pulled twice stores nothing new).
* `vehicles.gps_channels` — an explicit mapping of a vehicle's channels to position fields
  (`{"latitude": 16, "longitude": 17, "speed": 1, ...}`), or `{"off": true}`; NULL: recognised by name and
  unit (docs/LIVE.md).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-04
"""

from __future__ import annotations

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

IS_SUPERUSER = "fleet_role() = 'superuser'"
SEES_VEHICLE = (
    "(fleet_role() = 'superuser' OR (fleet_role() = 'owner' AND vehicle_id IN "
    "(SELECT va.vehicle_id FROM vehicle_access va WHERE va.user_id = fleet_user_id())))"
)

SCHEMA = f"""
ALTER TABLE positions ALTER COLUMN device_id DROP NOT NULL;
CREATE UNIQUE INDEX positions_pull_key ON positions (vehicle_id, device_time) WHERE device_id IS NULL;

ALTER TABLE vehicles ADD COLUMN gps_channels jsonb
    CHECK (gps_channels IS NULL OR jsonb_typeof(gps_channels) = 'object');

CREATE TABLE vehicle_last_positions (
    vehicle_id  bigint PRIMARY KEY REFERENCES vehicles (id) ON DELETE CASCADE,
    device_id   bigint,
    time        timestamptz NOT NULL,
    latitude    double precision NOT NULL,
    longitude   double precision NOT NULL,
    altitude    double precision,
    speed       real,
    course      real,
    satellites  smallint,
    valid       boolean NOT NULL DEFAULT false,
    updated_at  timestamptz NOT NULL DEFAULT now()
) WITH (fillfactor = 50);  -- rewritten all the time: room on each page keeps the updates HOT (no index work)

-- The newest located row of each vehicle in the statement's new rows replaces the stored one when it is not
-- older. Rows are taken in vehicle order, so two concurrent statements lock the rows they share in the same
-- order and never deadlock; one waits at most for the other's commit.
CREATE FUNCTION fleet_track_last_positions() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO vehicle_last_positions AS l
           (vehicle_id, device_id, time, latitude, longitude, altitude, speed, course, satellites, valid)
    SELECT DISTINCT ON (n.vehicle_id) n.vehicle_id, n.device_id, n.device_time, n.latitude, n.longitude,
           n.altitude, n.speed, n.course, n.satellites, n.valid
    FROM fleet_new_positions n
    WHERE n.vehicle_id IS NOT NULL AND n.latitude IS NOT NULL AND n.longitude IS NOT NULL
    ORDER BY n.vehicle_id, n.device_time DESC
    ON CONFLICT (vehicle_id) DO UPDATE SET
        device_id = EXCLUDED.device_id, time = EXCLUDED.time, latitude = EXCLUDED.latitude,
        longitude = EXCLUDED.longitude, altitude = EXCLUDED.altitude, speed = EXCLUDED.speed,
        course = EXCLUDED.course, satellites = EXCLUDED.satellites, valid = EXCLUDED.valid, updated_at = now()
    WHERE EXCLUDED.time >= l.time;
    RETURN NULL;
END
$$;
CREATE TRIGGER positions_last_on_insert AFTER INSERT ON positions
    REFERENCING NEW TABLE AS fleet_new_positions
    FOR EACH STATEMENT EXECUTE FUNCTION fleet_track_last_positions();
CREATE TRIGGER positions_last_on_update AFTER UPDATE ON positions
    REFERENCING NEW TABLE AS fleet_new_positions
    FOR EACH STATEMENT EXECUTE FUNCTION fleet_track_last_positions();

ALTER TABLE vehicle_last_positions ENABLE ROW LEVEL SECURITY;
ALTER TABLE vehicle_last_positions FORCE ROW LEVEL SECURITY;
CREATE POLICY vehicle_last_positions_read ON vehicle_last_positions FOR SELECT USING ({SEES_VEHICLE});
CREATE POLICY vehicle_last_positions_write ON vehicle_last_positions FOR ALL
    USING ({IS_SUPERUSER}) WITH CHECK ({IS_SUPERUSER});
GRANT SELECT, INSERT, UPDATE, DELETE ON vehicle_last_positions TO fleet_app;

-- Vehicles that already have positions start with their newest one.
INSERT INTO vehicle_last_positions (vehicle_id, device_id, time, latitude, longitude, altitude, speed, course,
                                    satellites, valid)
SELECT DISTINCT ON (vehicle_id) vehicle_id, device_id, device_time, latitude, longitude, altitude, speed,
       course, satellites, valid
FROM positions
WHERE vehicle_id IS NOT NULL AND latitude IS NOT NULL AND longitude IS NOT NULL
ORDER BY vehicle_id, device_time DESC;
"""


def upgrade() -> None:
    op.execute(SCHEMA)


def downgrade() -> None:
    op.execute("DROP TRIGGER IF EXISTS positions_last_on_update ON positions")
    op.execute("DROP TRIGGER IF EXISTS positions_last_on_insert ON positions")
    op.execute("DROP FUNCTION IF EXISTS fleet_track_last_positions()")
    op.execute("DROP TABLE IF EXISTS vehicle_last_positions")
    op.execute("ALTER TABLE vehicles DROP COLUMN IF EXISTS gps_channels")
    op.execute("DROP INDEX IF EXISTS positions_pull_key")
    # Positions of pull vehicles have no device: they cannot stay once device_id is required again.
    op.execute("DELETE FROM positions WHERE device_id IS NULL")
    op.execute("ALTER TABLE positions ALTER COLUMN device_id SET NOT NULL")
