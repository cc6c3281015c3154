"""Protocol-neutral devices and device commands.

* ``devices.protocol_state`` (jsonb) replaces the Navtelecom-only ``flex_protocol_version``,
  ``flex_struct_version`` and ``flex_mask`` columns; their values move into it
  (``{"protocol_version", "struct_version", "mask"}``, the mask as hex), nothing is lost. ``protocol`` names
  the device's protocol package (``navtelecom``, ``teltonika``, ...).
* ``device_commands``: commands to trackers (queued → sent → answered / failed / expired), with RLS like
  every tenant table; an owner may insert commands for the trackers of their own vehicles only (the API
  also requires a setting for that).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-04
"""

from __future__ import annotations

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

IS_SUPERUSER = "fleet_role() = 'superuser'"
SEES_VEHICLE = (
    "(fleet_role() = 'superuser' OR (fleet_role() = 'owner' AND vehicle_id IN "
    "(SELECT va.vehicle_id FROM vehicle_access va WHERE va.user_id = fleet_user_id())))"
)

UPGRADE = f"""
ALTER TABLE devices ADD COLUMN protocol_state jsonb;
UPDATE devices SET protocol_state = jsonb_strip_nulls(jsonb_build_object(
        'protocol_version', flex_protocol_version,
        'struct_version', flex_struct_version,
        'mask', encode(flex_mask, 'hex')))
    WHERE flex_mask IS NOT NULL OR flex_protocol_version IS NOT NULL OR flex_struct_version IS NOT NULL;
ALTER TABLE devices DROP COLUMN flex_protocol_version, DROP COLUMN flex_struct_version, DROP COLUMN flex_mask;
ALTER TABLE devices ADD CONSTRAINT devices_protocol_check CHECK (protocol ~ '^[a-z][a-z0-9_]{{0,31}}$');

CREATE TABLE device_commands (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    device_id     bigint NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
    vehicle_id    bigint REFERENCES vehicles (id) ON DELETE SET NULL,
    protocol      text NOT NULL,
    type          text NOT NULL
                  CHECK (type IN ('custom', 'output', 'request_position', 'reboot', 'resend_archive')),
    payload       jsonb NOT NULL DEFAULT '{{}}'::jsonb,
    status        text NOT NULL DEFAULT 'queued'
                  CHECK (status IN ('queued', 'sent', 'answered', 'failed', 'expired')),
    answer        text,
    error         text,
    requested_by  bigint REFERENCES users (id) ON DELETE SET NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    expires_at    timestamptz NOT NULL,
    sent_at       timestamptz,
    finished_at   timestamptz
);
CREATE INDEX device_commands_device_idx ON device_commands (device_id, created_at DESC);
-- The dispatcher's questions: what waits for a device, what waits for an answer.
CREATE INDEX device_commands_queued_idx ON device_commands (device_id, id) WHERE status = 'queued';
CREATE INDEX device_commands_sent_idx ON device_commands (sent_at) WHERE status = 'sent';

ALTER TABLE device_commands ENABLE ROW LEVEL SECURITY;
ALTER TABLE device_commands FORCE ROW LEVEL SECURITY;
CREATE POLICY device_commands_read ON device_commands FOR SELECT USING ({SEES_VEHICLE});
CREATE POLICY device_commands_write ON device_commands FOR ALL USING ({IS_SUPERUSER}) WITH CHECK ({IS_SUPERUSER});
-- An owner queues commands for the trackers of vehicles they may see, in their own name only.
CREATE POLICY device_commands_owner_insert ON device_commands FOR INSERT WITH CHECK (
    fleet_role() = 'owner' AND requested_by = fleet_user_id() AND status = 'queued' AND {SEES_VEHICLE}
    AND vehicle_id = (SELECT d.vehicle_id FROM devices d WHERE d.id = device_id));
GRANT SELECT, INSERT, UPDATE, DELETE ON device_commands TO fleet_app;
GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO fleet_app;
"""

DOWNGRADE = """
DROP TABLE IF EXISTS device_commands;
ALTER TABLE devices DROP CONSTRAINT IF EXISTS devices_protocol_check;
ALTER TABLE devices ADD COLUMN flex_protocol_version smallint, ADD COLUMN flex_struct_version smallint,
    ADD COLUMN flex_mask bytea;
UPDATE devices SET flex_protocol_version = (protocol_state ->> 'protocol_version')::smallint,
                   flex_struct_version = (protocol_state ->> 'struct_version')::smallint,
                   flex_mask = decode(protocol_state ->> 'mask', 'hex')
    WHERE protocol = 'navtelecom' AND protocol_state IS NOT NULL;
ALTER TABLE devices DROP COLUMN protocol_state;
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
