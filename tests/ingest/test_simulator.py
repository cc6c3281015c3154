"""The simulators a newcomer runs: record times are now, every rate sends, a run that sends nothing says why."""

from __future__ import annotations

import json
import time

import pytest
from typer.testing import CliRunner

from fleet.cli import app
from fleet.db import Database
from fleet.simulate.engine import SimulationConfig, run_simulation

from .conftest import DRIVERS, StartIngest, free_port, imei_block, positions_of


@pytest.mark.parametrize("protocol", ["navtelecom", "teltonika"])
async def test_a_low_rate_sends_records_dated_now(
    db: Database, start_ingest: StartIngest, protocol: str
) -> None:
    service = await start_ingest()
    devices = 20
    first = imei_block(devices)
    started = time.time()
    result = await run_simulation(
        SimulationConfig(
            port=DRIVERS[protocol].port(service),
            protocol=protocol,
            devices=devices,
            rate=4.0,  # one record every 5 s per device: far fewer than a full frame in the run
            duration=6.0,
            first_imei=first,
            seed=3,
        )
    )
    assert result.records_recorded > 0 and result.records_acked == result.records_recorded
    assert result.diagnosis() is None
    async with db.system() as conn:
        rows = [row for n in range(devices) for row in await positions_of(conn, f"{first + n:015d}")]
    assert len(rows) == result.records_acked
    assert all(abs(row["device_time"].timestamp() - started) < 30 for row in rows)


async def test_a_run_that_sends_nothing_says_why(start_ingest: StartIngest) -> None:
    closed = await run_simulation(
        SimulationConfig(
            port=free_port(), devices=2, rate=10, duration=0.5, drain_timeout=0.5, connect_timeout=1
        )
    )
    assert closed.records_acked == 0 and "no device could connect" in (closed.diagnosis() or "")
    service = await start_ingest()
    idle = await run_simulation(
        SimulationConfig(
            port=service.ports["navtelecom"], devices=2, rate=0.01, duration=1.0, drain_timeout=1.0
        )
    )
    assert "no record was due" in (idle.diagnosis() or "")
    refused = await start_ingest(unknown_device_policy="reject")
    login = await run_simulation(
        SimulationConfig(
            port=refused.ports["teltonika"],
            protocol="teltonika",
            devices=1,
            rate=0,
            duration=1.0,
            drain_timeout=0.5,
            first_imei=imei_block(1),  # unknown to the server, which refuses unknown devices
        )
    )
    assert "did not accept the login" in (login.diagnosis() or "")


def test_the_command_exits_1_with_the_reason() -> None:
    result = CliRunner().invoke(
        app,
        [
            "simulate",
            "teltonika",
            "--devices",
            "1",
            "--duration",
            "0.5",
            "--port",
            str(free_port()),
            "--json",
        ],
    )
    assert result.exit_code == 1
    assert "nothing was acknowledged" in result.output and "could connect" in result.output


def test_the_benchmark_mix_a_quarter_of_29_field_trackers_report_can_values() -> None:
    """Profile 2.0-can and can_share: the load of bench_ingest.py (issue 14), decoded by the server's code."""
    import random
    from datetime import UTC, datetime

    from fleet.protocol.navtelecom import NavtelecomSession, RowBuilder, Telemetry, handshake
    from fleet.protocol.navtelecom.simulation import FLEX_PROFILES, new_device

    assert len(FLEX_PROFILES["2.0-can"][1]) == 29
    can_rows_per_device = []
    for number in range(100):
        imei = f"{860_000_000_000_000 + number:015d}"
        device = new_device(imei, random.Random(number), flex="2.0-can", can_share=0.25)
        session = NavtelecomSession()
        session.feed(handshake(imei))
        session.feed(device.profile.negotiation)
        (telemetry,) = session.feed(device.frame([device.record(i, 1_796_400_000 + i) for i in range(1, 11)]))
        assert isinstance(telemetry, Telemetry)
        rows = RowBuilder().telemetry(1, telemetry, datetime.now(UTC))
        assert len(rows.positions) == 10
        can_rows_per_device.append(sum(len(json.loads(row.signals)) for row in rows.can))
        assert len(rows.can) in (0, 10)  # one reading per record, or none
    # Exactly 25 of 100 consecutive IMEIs report values (9 signals per record); the others "not available".
    assert sorted(set(can_rows_per_device)) == [0, 90]
    assert can_rows_per_device.count(90) == 25
