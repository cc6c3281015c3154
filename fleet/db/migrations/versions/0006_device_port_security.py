"""Device-port hardening: security events, per-device address allow-lists, raw-frame excerpts.

* ``security_events``: what the device port refused for security reasons (a takeover of an online
  tracker's session from another address, a tracker connecting from outside its allow-list). Repeated
  attempts of one kind, device and address within a few seconds are one row with a ``count``. Only a
  superuser context sees it; the application may append and prune, never edit.
* ``devices.allowed_networks``: optional networks a tracker may connect from (NULL: anywhere).
* ``raw_frames.frame_length`` / ``frame_sha256``: set when ``data`` holds only an excerpt of a frame (the
  frames of unidentified or repeatedly failing peers): the whole frame's length and SHA-256. NULL when
  ``data`` is the whole frame.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06
"""

from __future__ import annotations

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

IS_SUPERUSER = "fleet_role() = 'superuser'"

UPGRADE = f"""
CREATE TABLE security_events (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind        text NOT NULL CHECK (kind ~ '^[a-z][a-z0-9_]{{0,63}}$'),
    first_at    timestamptz NOT NULL,
    last_at     timestamptz NOT NULL,
    count       integer NOT NULL DEFAULT 1 CHECK (count >= 1),
    device_id   bigint REFERENCES devices (id) ON DELETE SET NULL,
    imei        text,
    protocol    text,
    peer        text,
    details     jsonb NOT NULL DEFAULT '{{}}'::jsonb
);
CREATE INDEX security_events_time_idx ON security_events (last_at DESC, id DESC);
CREATE INDEX security_events_device_idx ON security_events (device_id, last_at DESC);
ALTER TABLE security_events ENABLE ROW LEVEL SECURITY;
ALTER TABLE security_events FORCE ROW LEVEL SECURITY;
CREATE POLICY security_events_admin ON security_events FOR ALL
    USING ({IS_SUPERUSER}) WITH CHECK ({IS_SUPERUSER});
GRANT SELECT, INSERT, DELETE ON security_events TO fleet_app;
GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO fleet_app;

ALTER TABLE devices ADD COLUMN allowed_networks cidr[];

ALTER TABLE raw_frames ADD COLUMN frame_length integer, ADD COLUMN frame_sha256 bytea;
"""

DOWNGRADE = """
ALTER TABLE raw_frames DROP COLUMN IF EXISTS frame_length, DROP COLUMN IF EXISTS frame_sha256;
ALTER TABLE devices DROP COLUMN IF EXISTS allowed_networks;
DROP TABLE IF EXISTS security_events;
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
