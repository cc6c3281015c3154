"""Backups: dump → restore into an empty database → identical row counts and a working login; verification
catches a damaged file; rotation keeps BACKUP_KEEP; the record feeds metrics and /ready."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import httpx
import pytest
from prometheus_client import REGISTRY
from pydantic import SecretStr

from fleet.api.app import create_app
from fleet.config import Settings
from fleet.db import Database
from fleet.db.queries.users import create_user
from fleet.ops.backup import BackupError, create_backup, restore_backup, verify_backup
from fleet.ops.backup.catalog import table_counts
from fleet.ops.backup.dump import backup_name, local_backups, read_manifest, rotate
from fleet.ops.backup.restore import with_database
from fleet.ops.backup.status import BackupMonitor
from fleet.ops.backup.tools import find_tools, libpq_target
from fleet.passwords import hash_password
from tests.api.conftest import LiveServer

PASSWORD = "restore drill passphrase"


@pytest.fixture
async def empty_database(db: Database) -> AsyncIterator[str]:
    """Owner DSN of a new, empty database on the test server (dropped afterwards)."""
    assert db.owner_dsn is not None
    name = f"fleet_restore_{uuid.uuid4().hex[:10]}"
    conn = await asyncpg.connect(db.owner_dsn)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
        yield with_database(db.owner_dsn, name)
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@pytest.fixture
def backup_settings(test_settings: Settings, tmp_path: Path) -> Settings:
    return test_settings.model_copy(update={"backup_dir": tmp_path / "backups", "backup_keep": 7})


async def _seed(db: Database) -> tuple[str, int]:
    email = f"drill-{uuid.uuid4().hex[:8]}@example.com"
    async with db.system() as conn:
        await create_user(
            conn, email=email, password_hash=await hash_password(PASSWORD), role="owner", status="active"
        )
        user_id = await conn.fetchval("SELECT id FROM users WHERE email = $1", email)
        vehicle_id = await conn.fetchval("INSERT INTO vehicles (name) VALUES ('drill truck') RETURNING id")
        await conn.execute(
            "INSERT INTO vehicle_access (user_id, vehicle_id) VALUES ($1, $2)", user_id, vehicle_id
        )
        await conn.executemany(
            "INSERT INTO measurements (vehicle_id, channel_id, time, value) VALUES ($1, 1, $2, $3)",
            [(vehicle_id, datetime.now(UTC) - timedelta(seconds=i), float(i)) for i in range(500)],
        )
    return email, vehicle_id


async def test_backup_restore_gives_identical_counts_and_a_working_login(
    db: Database, backup_settings: Settings, empty_database: str
) -> None:
    assert db.owner_dsn is not None
    email, vehicle_id = await _seed(db)
    result = await create_backup(db.owner_dsn, backup_settings, verify=True)

    assert result.path.name.startswith("fleet-") and result.path.name.endswith("Z.dump")
    assert result.path.parent == (backup_settings.backup_path).resolve()
    assert result.path.read_bytes()[:5] == b"PGDMP"  # pg_dump's custom format
    assert result.path.stat().st_mode & 0o777 == 0o600
    manifest = read_manifest(result.path)
    assert manifest is not None and manifest["sha256"] == result.sha256
    assert manifest["row_counts"]["users"] >= 1 and manifest["alembic_revision"]
    assert result.verified is not None and result.verified.ok, result.verified.summary()
    assert result.verified.restored == manifest["row_counts"]
    assert not list(result.path.parent.glob("*.partial"))

    restored = await restore_backup(result.path, empty_database, backup_settings)
    assert restored.report.ok, restored.report.summary()
    conn = await asyncpg.connect(empty_database)
    try:
        assert await table_counts(conn) == manifest["row_counts"]
    finally:
        await conn.close()

    # The restored database runs the server: migrations are current, fleet_app signs a user in.
    settings = backup_settings.model_copy(update={"database_url": empty_database})
    server = await LiveServer(create_app(settings)).start()
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            login = await client.post("/auth/login", json={"email": email, "password": PASSWORD})
            assert login.status_code == 200, login.text
            token = login.json()["access_token"]
            vehicles = await client.get("/vehicles", headers={"Authorization": f"Bearer {token}"})
            assert [v["id"] for v in vehicles.json()["items"]] == [vehicle_id]
    finally:
        await server.stop()

    # The run is recorded; the metrics and /ready's view come from that record.
    monitor = BackupMonitor(db)
    await monitor.refresh()
    assert monitor.last is not None and monitor.last.file_name == result.path.name and monitor.last.verified
    assert REGISTRY.get_sample_value("fleet_backup_last_size_bytes") == result.size_bytes
    snapshot = monitor.snapshot(backup_settings)
    assert snapshot["state"] == "ok" and snapshot["file"] == result.path.name


async def test_restore_refuses_a_database_that_is_not_empty(db: Database, backup_settings: Settings) -> None:
    assert db.owner_dsn is not None
    result = await create_backup(db.owner_dsn, backup_settings)
    with pytest.raises(BackupError, match="not empty"):
        await restore_backup(result.path, db.owner_dsn, backup_settings)


async def test_verify_catches_a_damaged_file(db: Database, backup_settings: Settings) -> None:
    assert db.owner_dsn is not None
    result = await create_backup(db.owner_dsn, backup_settings)
    data = bytearray(result.path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 64] = bytes(64)  # zero a block inside the compressed table data

    damaged = result.path.with_name("fleet-20000101T000000Z.dump")
    damaged.write_bytes(bytes(data))
    damaged.with_name(damaged.name + ".json").write_text(result.manifest_path.read_text())
    report = await verify_backup(damaged, db.owner_dsn, backup_settings)
    assert not report.ok and "damaged" in (report.reason or "")

    # Without a manifest to compare checksums with, the restore itself catches it.
    damaged.with_name(damaged.name + ".json").unlink()
    report = await verify_backup(damaged, db.owner_dsn, backup_settings)
    assert not report.ok and "pg_restore" in (report.reason or ""), report.summary()

    truncated = result.path.with_name("fleet-20000102T000000Z.dump")
    truncated.write_bytes(result.path.read_bytes()[: len(data) // 3])
    report = await verify_backup(truncated, db.owner_dsn, backup_settings)
    assert not report.ok

    # A restore refuses the damaged file outright.
    damaged.with_name(damaged.name + ".json").write_text(result.manifest_path.read_text())
    with pytest.raises(BackupError, match="damaged"):
        await restore_backup(damaged, db.owner_dsn, backup_settings)


async def test_verify_catches_rows_missing_from_a_dump(db: Database, backup_settings: Settings) -> None:
    assert db.owner_dsn is not None
    result = await create_backup(db.owner_dsn, backup_settings)
    manifest = json.loads(result.manifest_path.read_text())
    manifest["row_counts"]["users"] += 1  # the manifest claims a row the dump does not hold
    result.manifest_path.write_text(json.dumps(manifest))
    # (the checksum still matches: only the counts disagree)
    report = await verify_backup(result.path, db.owner_dsn, backup_settings)
    assert not report.ok and "users" in report.mismatches


def test_rotation_keeps_the_newest(tmp_path: Path) -> None:
    start = datetime(2026, 1, 1, 2, 30, tzinfo=UTC)
    for day in range(10):
        path = tmp_path / backup_name(start + timedelta(days=day))
        path.write_bytes(b"PGDMP")
        path.with_name(path.name + ".json").write_text("{}")
    (tmp_path / "unrelated.dump").write_bytes(b"x")
    deleted = rotate(tmp_path, 7)
    assert [p.name for p in deleted] == [backup_name(start + timedelta(days=d)) for d in range(3)]
    kept = local_backups(tmp_path)
    assert [p.name for p in kept] == [backup_name(start + timedelta(days=d)) for d in range(3, 10)]
    assert len(list(tmp_path.glob("*.json"))) == 7 and (tmp_path / "unrelated.dump").exists()
    assert backup_name(datetime(2026, 12, 5, 1, 2, 3, tzinfo=UTC)) == "fleet-20261205T010203Z.dump"


async def test_tools_match_the_server_and_passwords_stay_off_the_command_line(db: Database) -> None:
    assert db.owner_dsn is not None
    conn = await asyncpg.connect(db.owner_dsn)
    try:
        major = int(await conn.fetchval("SHOW server_version_num")) // 10000
    finally:
        await conn.close()
    tools = find_tools(major)
    assert tools.major == major  # the embedded server's own pg_dump (pgserver ships it)
    with pytest.raises(BackupError, match="PG_BIN_DIR"):
        find_tools(major + 50)
    target, env = libpq_target("postgresql://owner:s3cret%40x@db.example:5433/fleet?sslmode=require")
    assert "s3cret" not in target and env["PGPASSWORD"] == "s3cret@x"
    assert "host=db.example" in target and "port=5433" in target and "sslmode=require" in target


async def test_rotation_after_a_real_backup_and_failure_is_recorded(
    db: Database, backup_settings: Settings, owner_conn: asyncpg.Connection
) -> None:
    assert db.owner_dsn is not None
    settings = backup_settings.model_copy(update={"backup_keep": 1})
    directory = settings.backup_path
    directory.mkdir(parents=True)
    old = directory / "fleet-20000101T000000Z.dump"
    old.write_bytes(b"PGDMP old")
    result = await create_backup(db.owner_dsn, settings)
    assert result.deleted == [old] and local_backups(directory) == [result.path]

    # A failing backup (an unwritable target) is recorded as failed, with the reason.
    blocker = directory / "file-not-dir"
    blocker.write_text("x")
    with pytest.raises(BackupError):
        await create_backup(db.owner_dsn, settings, out_dir=blocker / "sub")
    row = await owner_conn.fetchrow("SELECT status, error FROM backup_runs ORDER BY id DESC LIMIT 1")
    assert row["status"] == "failed" and "backup directory" in row["error"]


async def test_upload_to_s3_compatible_storage(db: Database, backup_settings: Settings) -> None:
    """Against moto's S3 server on 127.0.0.1 (a real HTTP endpoint speaking the S3 API)."""
    from moto.server import ThreadedMotoServer

    from fleet.ops.backup.s3 import make_client
    from tests.api.conftest import free_port

    assert db.owner_dsn is not None
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        settings = backup_settings.model_copy(
            update={
                "backup_s3_bucket": "fleet-offsite",
                "backup_s3_prefix": "prod/",
                "backup_s3_endpoint_url": f"http://127.0.0.1:{port}",
                "backup_s3_region": "eu-central-1",
                "backup_s3_access_key_id": "test-key",
                "backup_s3_secret_access_key": SecretStr("test-secret"),
            }
        )
        client = make_client(settings)
        client.create_bucket(
            Bucket="fleet-offsite", CreateBucketConfiguration={"LocationConstraint": "eu-central-1"}
        )
        result = await create_backup(db.owner_dsn, settings)
        assert result.uploaded_to == f"s3://fleet-offsite/prod/{result.path.name}"
        body = client.get_object(Bucket="fleet-offsite", Key=f"prod/{result.path.name}")["Body"].read()
        assert body == result.path.read_bytes()
        manifest = client.get_object(Bucket="fleet-offsite", Key=f"prod/{result.path.name}.json")[
            "Body"
        ].read()
        assert json.loads(manifest)["sha256"] == result.sha256

        # A bucket that does not exist fails the backup with a clear message (and keeps the local file).
        missing = settings.model_copy(update={"backup_s3_bucket": "no-such-bucket"})
        with pytest.raises(BackupError, match="upload to s3://no-such-bucket failed"):
            await create_backup(db.owner_dsn, missing, now=datetime.now(UTC) + timedelta(seconds=5))
    finally:
        server.stop()
