"""Sync: a cursor of its own for alarms, so a failed `/alarms` pull is repeated instead of skipped.

`/alarms` failures are not fatal to a sync (seed 003): the data cursor `last_sync_at` moves on regardless. With
only that cursor, the alarm changes of a range whose `/alarms` request failed would never be asked for again.
`alarms_synced_at` is where the last successful `/alarms` window ended; the next pull starts there.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A new column of an existing table: its grants and row-level security policies already cover it.
    op.execute("ALTER TABLE vehicles ADD COLUMN alarms_synced_at timestamptz")


def downgrade() -> None:
    op.execute("ALTER TABLE vehicles DROP COLUMN IF EXISTS alarms_synced_at")
