"""Errors of the backup commands (a clean message and exit code 1 at the CLI)."""

from __future__ import annotations

from fleet.errors import FleetError


class BackupError(FleetError):
    """A backup, verification or restore could not be done; the message says why and what to do."""
