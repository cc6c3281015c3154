"""Database backups: `pg_dump` custom format, verified by a restore into a scratch database, optional upload
to S3-compatible storage, and restore into an empty database (see docs/OPERATIONS.md)."""

from fleet.ops.backup.dump import BackupResult, create_backup
from fleet.ops.backup.errors import BackupError
from fleet.ops.backup.restore import RestoreResult, VerifyReport, restore_backup, verify_backup

__all__ = [
    "BackupError",
    "BackupResult",
    "RestoreResult",
    "VerifyReport",
    "create_backup",
    "restore_backup",
    "verify_backup",
]
