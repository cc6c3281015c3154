"""`fleet redecode`: stored raw frames decoded again, results upserted, idempotent."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from datetime import UTC, datetime, timedelta

import pytest

from fleet.config import Settings
from fleet.db import Database
from fleet.ingest.redecode import redecode
from fleet.protocol.navtelecom import ack_archive, archive, build_record, flex_negotiation, layout_for_fields

from .conftest import DRIVERS, REPO, StartIngest, Tracker, archive_frame, positions_of, unique_imei

SMALL_FIELDS = (1, 2, 3, 8, 9, 10, 11, 13)
SMALL = layout_for_fields(SMALL_FIELDS)


async def _upload(port: int, imei: str) -> None:
    """Frames with the FLEX 2.0 test mask, then a renegotiation to a smaller mask and more frames."""
    tracker = await Tracker.connect(port)
    await tracker.login(imei)
    await tracker.send(archive_frame(1, 3))
    assert await tracker.read(4) == ack_archive(3)
    await tracker.send(flex_negotiation(SMALL_FIELDS, version=20, bit_count=122))
    await tracker.read_ntcb()
    small = [
        build_record(
            SMALL,
            index=i,
            device_time=1_767_225_600 + i,
            fix_time=1_767_225_600 + i,
            valid=True,
            satellites=5,
            latitude=50.0,
            longitude=30.0,
            speed_kmh=10.0,
        )
        for i in (10, 11)
    ]
    await tracker.send(archive(small))
    assert await tracker.read(4) == ack_archive(2)
    await tracker.close()


async def test_redecode_restores_and_is_idempotent(
    db: Database, start_ingest: StartIngest, test_settings: Settings
) -> None:
    service = await start_ingest()
    imei = unique_imei()
    await _upload(service.ports["navtelecom"], imei)
    assert await service.writer.wait_idle(5)
    async with db.system() as conn:
        original = {r["record_index"]: dict(r) for r in await positions_of(conn, imei)}
        assert sorted(original) == [1, 2, 3, 10, 11]
        # What a decoder bug would have left behind: wrong values, a missing record, a frame marked failed.
        await conn.execute(
            """UPDATE positions p SET latitude = 0, attributes = '{}' FROM devices d
               WHERE d.id = p.device_id AND d.imei = $1""",
            imei,
        )
        await conn.execute(
            """DELETE FROM positions p USING devices d
               WHERE d.id = p.device_id AND d.imei = $1 AND p.record_index = 2""",
            imei,
        )
        await conn.execute(
            """UPDATE raw_frames r SET outcome = 'error', error = 'decoder bug' FROM devices d
               WHERE d.id = r.device_id AND d.imei = $1 AND r.frame_type = 'A'""",
            imei,
        )
    since = datetime.now(UTC) - timedelta(hours=1)
    report = await redecode(db, test_settings, imei, since)
    assert report.decoded == 2 and report.records == 5
    assert report.now_ok == 2 and not report.failed
    async with db.system() as conn:
        restored = {r["record_index"]: dict(r) for r in await positions_of(conn, imei)}
        outcomes = {
            r["outcome"]
            for r in await conn.fetch(
                "SELECT r.outcome FROM raw_frames r JOIN devices d ON d.id = r.device_id WHERE d.imei = $1",
                imei,
            )
        }
    assert sorted(restored) == [1, 2, 3, 10, 11]
    for index, row in original.items():
        assert restored[index]["latitude"] == pytest.approx(row["latitude"])
        assert restored[index]["attributes"] == row["attributes"]
    assert restored[10]["latitude"] == pytest.approx(50.0)  # decoded with the renegotiated mask
    assert outcomes == {"ok"}

    again = await redecode(db, test_settings, imei, since)
    assert again.decoded == 2 and again.now_ok == 0
    async with db.system() as conn:
        assert {r["record_index"]: dict(r) for r in await positions_of(conn, imei)} == restored


async def test_redecode_unknown_device(db: Database, test_settings: Settings) -> None:
    from fleet.errors import NotFound

    with pytest.raises(NotFound):
        await redecode(db, test_settings, unique_imei(), datetime.now(UTC))


async def test_redecode_command(db: Database, start_ingest: StartIngest, test_settings: Settings) -> None:
    service = await start_ingest()
    imei = unique_imei()
    await _upload(service.ports["navtelecom"], imei)
    assert await service.writer.wait_idle(5)
    assert db.owner_dsn is not None and test_settings.db_app_password is not None
    env = {k: v for k, v in os.environ.items() if not k.startswith("DB_")}
    env.update(
        DATABASE_URL=db.owner_dsn,
        DB_APP_PASSWORD=test_settings.db_app_password.get_secret_value(),
        DB_MIGRATE_ON_START="0",
        DATA_DIR=str(test_settings.data_dir),
        ENV="test",
        LOG_LEVEL="WARNING",
    )
    if test_settings.db_grafana_password is not None:
        env["DB_GRAFANA_PASSWORD"] = test_settings.db_grafana_password.get_secret_value()
    process = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "fleet", "redecode", "--device", imei, "--since", "2h"),
        env=env,
        cwd=REPO,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, stderr.decode()
    text = stdout.decode()
    report = json.loads(text[text.index("{") :])
    assert report["imei"] == imei and report["records"] == 5 and report["failed"] == {}


async def test_redecode_teltonika_frames(
    db: Database, start_ingest: StartIngest, test_settings: Settings
) -> None:
    """Stored AVL packets are decoded again by the protocol that wrote them."""
    service = await start_ingest()
    imei = unique_imei()
    driver = DRIVERS["teltonika"]
    tracker = await Tracker.connect(driver.port(service))
    await driver.login(tracker, imei)
    for first in (1, 4):
        await tracker.send(driver.frame(first, 3))
        assert await tracker.read(4) == driver.ack(3)
    await tracker.close()
    assert await service.writer.wait_idle(5)
    async with db.system() as conn:
        original = {r["device_time"]: dict(r) for r in await positions_of(conn, imei)}
        await conn.execute(
            "UPDATE positions p SET attributes = '{}' FROM devices d WHERE d.id = p.device_id AND d.imei = $1",
            imei,
        )
    report = await redecode(db, test_settings, imei, datetime.now(UTC) - timedelta(hours=1))
    assert report.decoded == 2 and report.records == 6 and not report.failed
    assert report.skipped == 1  # the IMEI login
    async with db.system() as conn:
        restored = {r["device_time"]: dict(r) for r in await positions_of(conn, imei)}
    assert restored == original
