"""Upload a backup and its manifest to S3-compatible storage (boto3; AWS, Hetzner Object Storage, MinIO ...).

Upload only: old objects are removed by the bucket's lifecycle rule, not by this server, so credentials that
can only write (no delete) are enough — a compromised server cannot wipe its own off-site backups.
boto3 is an optional dependency (`pip install 'fleet-server[s3]'`); it is imported only when a bucket is set.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import structlog

from fleet.config import Settings
from fleet.ops.backup.errors import BackupError

log = structlog.get_logger(__name__)


def object_key(settings: Settings, name: str) -> str:
    prefix = settings.backup_s3_prefix.strip("/")
    return f"{prefix}/{name}" if prefix else name


def make_client(settings: Settings) -> Any:
    """A boto3 S3 client for the BACKUP_S3_* settings."""
    try:
        import boto3
        from botocore.config import Config
    except ImportError as err:
        raise BackupError(
            "BACKUP_S3_BUCKET is set but boto3 is not installed: pip install 'fleet-server[s3]'"
        ) from err
    secret = settings.backup_s3_secret_access_key
    return boto3.client(
        "s3",
        endpoint_url=settings.backup_s3_endpoint_url,
        region_name=settings.backup_s3_region,
        aws_access_key_id=settings.backup_s3_access_key_id,
        aws_secret_access_key=secret.get_secret_value() if secret is not None else None,
        config=Config(retries={"max_attempts": 5, "mode": "standard"}, connect_timeout=10, read_timeout=120),
    )


def _upload_sync(settings: Settings, files: list[Path]) -> str:
    from boto3.exceptions import Boto3Error
    from botocore.exceptions import BotoCoreError, ClientError

    bucket = settings.backup_s3_bucket
    assert bucket is not None
    client = make_client(settings)
    try:
        for path in files:
            key = object_key(settings, path.name)
            # Multipart above 8 MiB, handled by boto3's transfer manager; the size is checked afterwards.
            client.upload_file(str(path), bucket, key)
            head = client.head_object(Bucket=bucket, Key=key)
            if int(head["ContentLength"]) != path.stat().st_size:
                raise BackupError(f"s3://{bucket}/{key}: uploaded size differs from the local file")
    except (Boto3Error, BotoCoreError, ClientError) as err:
        raise BackupError(f"upload to s3://{bucket} failed: {err}") from err
    return f"s3://{bucket}/{object_key(settings, files[0].name)}"


async def upload(settings: Settings, dump: Path, manifest: Path) -> str:
    """Upload the dump, then its manifest; return the dump's `s3://bucket/key`."""
    location = await asyncio.to_thread(_upload_sync, settings, [dump, manifest])
    log.info("backup_uploaded", location=location)
    return location
