"""`fleet backup`, `fleet restore`, `fleet cleanup` as an operator runs them (real processes)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import pytest

from fleet.config import Settings
from fleet.db import Database
from fleet.db.embedded import EmbeddedPostgres

pytestmark = pytest.mark.slow


def fleet(env: dict[str, str], *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fleet", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        stdin=subprocess.DEVNULL,
    )


def base_env(**extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DB_", "DATABASE_", "API_", "TEST_", "BACKUP_", "CONFIG_FILE", "REDIS_URL"))
    }
    env.update(ENV="development", LOG_FORMAT="json", LOG_LEVEL="WARNING", COLUMNS="200", **extra)
    return env


@pytest.fixture
def work_dir() -> Iterator[Path]:
    # Not tmp_path: the embedded server runs as an unprivileged user when tests run as root (see test_serve).
    path = Path(tempfile.mkdtemp(prefix="fleet-ops-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def test_embedded_backup_verify_and_restore_into_a_fresh_data_dir(work_dir: Path) -> None:
    source = base_env(DATA_DIR=str(work_dir / "source"))
    # Data commands never create a database by accident (fleet.db.server_record): `db upgrade` does.
    assert fleet(source, "db", "upgrade").returncode == 0
    created = fleet(
        source, "user", "create", "--email", "boss@example.com", "--password", "a long password 1"
    )
    assert created.returncode == 0, created.stderr
    vehicle = fleet(source, "vehicle", "add", "--name", "Truck 7", "--imei", "356307042441013")
    assert vehicle.returncode == 0, vehicle.stderr

    backup = fleet(source, "backup", "--verify")
    assert backup.returncode == 0, backup.stderr
    assert "verified:" in backup.stdout and "matching the manifest" in backup.stdout
    [dump] = sorted((work_dir / "source" / "backups").glob("fleet-*.dump"))

    # Another directory (another machine): restore without --yes and no terminal is refused.
    target = base_env(DATA_DIR=str(work_dir / "target"))
    refused = fleet(target, "restore", str(dump))
    assert refused.returncode == 2 and "--yes" in refused.stderr
    restored = fleet(target, "restore", str(dump), "--yes")
    assert restored.returncode == 0, restored.stderr + restored.stdout
    assert "matching the manifest" in restored.stdout

    # A second restore into the now non-empty database is refused.
    again = fleet(target, "restore", str(dump), "--yes")
    assert again.returncode == 1 and "not empty" in again.stderr

    server = EmbeddedPostgres(work_dir / "target" / "pg")
    dsn = server.start()
    try:
        import asyncio

        async def check() -> tuple[str, str]:
            conn = await asyncpg.connect(dsn)
            try:
                email = await conn.fetchval("SELECT email FROM users WHERE email = 'boss@example.com'")
                imei = await conn.fetchval(
                    "SELECT d.imei FROM devices d JOIN vehicles v ON v.id = d.vehicle_id WHERE v.name = 'Truck 7'"
                )
                return email, imei
            finally:
                await conn.close()

        assert asyncio.run(check()) == ("boss@example.com", "356307042441013")
    finally:
        server.stop()


def test_backup_out_dir_and_damaged_file_restore(
    work_dir: Path, test_settings: Settings, db: Database
) -> None:
    assert db.owner_dsn is not None and test_settings.db_app_password is not None
    env = base_env(
        DATA_DIR=str(work_dir / "ext"),
        DATABASE_URL=db.owner_dsn,
        DB_APP_PASSWORD=test_settings.db_app_password.get_secret_value(),
        BACKUP_KEEP="2",
    )
    out = work_dir / "elsewhere"
    for _ in range(3):
        result = fleet(env, "backup", "--out", str(out))
        assert result.returncode == 0, result.stderr
    assert len(list(out.glob("fleet-*.dump"))) == 2 and "rotated out" in result.stdout
    [newest] = sorted(out.glob("fleet-*.dump"))[-1:]
    data = bytearray(newest.read_bytes())
    data[len(data) // 2] ^= 0xFF
    newest.write_bytes(bytes(data))
    refused = fleet(env, "restore", str(newest), "--yes")
    assert refused.returncode == 1 and "damaged" in refused.stderr and "Traceback" not in refused.stderr


async def test_cleanup_dry_run_lists_and_cleanup_drops(
    test_settings: Settings, db: Database, owner_conn: asyncpg.Connection
) -> None:
    assert db.owner_dsn is not None and test_settings.db_app_password is not None
    async with db.system() as conn:
        await conn.fetchval(
            "SELECT fleet_ensure_partition('positions', $1)", datetime(1996, 1, 10, tzinfo=UTC)
        )
        device_id = await conn.fetchval(
            "INSERT INTO devices (imei) VALUES ($1) RETURNING id", str(uuid.uuid4().int)[:15]
        )
        await conn.execute(
            "INSERT INTO positions (device_id, record_index, device_time) VALUES ($1, 1, $2)",
            device_id,
            datetime(1996, 1, 10, tzinfo=UTC),
        )
    env = base_env(
        DATA_DIR=tempfile.mkdtemp(prefix="fleet-cleanup-"),
        DATABASE_URL=db.owner_dsn,
        DB_APP_PASSWORD=test_settings.db_app_password.get_secret_value(),
        DB_MIGRATE_ON_START="0",
    )
    import asyncio

    dry = await asyncio.to_thread(fleet, env, "cleanup", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "positions_p199601" in dry.stdout and "dry run" in dry.stdout and "would drop" in dry.stdout
    assert await owner_conn.fetchval("SELECT to_regclass('positions_p199601') IS NOT NULL")

    real = await asyncio.to_thread(fleet, env, "cleanup")
    assert real.returncode == 0, real.stderr
    assert "positions_p199601" in real.stdout and "dropped" in real.stdout
    assert not await owner_conn.fetchval("SELECT to_regclass('positions_p199601') IS NOT NULL")
