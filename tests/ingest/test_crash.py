"""Crash safety with a real server process: SIGKILL mid-run, restart, let the devices retransmit.

Every record a simulated device saw acknowledged must be in the database exactly once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import asyncpg
import pytest

from fleet.simulate.engine import SimulationConfig, run_simulation

from .conftest import Driver, ServerProcess, imei_block

pytestmark = pytest.mark.slow
TIME_BASE = 1_767_225_600.0  # device clocks start at 2026-01-01


async def test_acknowledged_records_survive_sigkill(
    owner_conn: asyncpg.Connection, server_process: Callable[..., ServerProcess], proto: Driver
) -> None:
    server = server_process(protocol=proto.name)
    server.start()
    devices = 25
    first_imei = imei_block(devices)
    config = SimulationConfig(
        port=server.port,
        protocol=proto.name,
        devices=devices,
        rate=1500.0,
        duration=7.0,
        records_per_frame=10,
        ack_timeout=3.0,
        drain_timeout=25.0,
        first_imei=first_imei,
        deliver_backlog=True,
        seed=7,
        time_base=TIME_BASE,
    )
    simulation = asyncio.create_task(run_simulation(config))
    await asyncio.sleep(3.0)
    server.kill()
    await asyncio.sleep(0.7)
    server.start()
    result = await simulation
    server.stop()

    assert result.disconnects + result.ack_timeouts > 0, "the kill was not noticed by the devices"
    assert result.retransmissions > 0
    acked = result.acked
    assert sum(acked.values()) == result.records_acked > 0
    # Recording ran for the whole duration and everything recorded was finally delivered.
    assert all(tally.acked == tally.generated for tally in result.devices.values())

    imeis = sorted(acked)
    rows = await owner_conn.fetch(
        """SELECT d.imei, p.record_index, p.device_time FROM positions p JOIN devices d ON d.id = p.device_id
           WHERE d.imei = ANY($1)""",
        imeis,
    )
    # Which simulated record a stored row is: Navtelecom stores the black-box index; Teltonika has none,
    # and the simulator's record i is taken at time_base + (i - first_index) * (devices / rate).
    step = config.devices / config.rate
    stored: dict[str, list[int]] = {imei: [] for imei in imeis}
    for row in rows:
        if proto.name == "navtelecom":
            index = row["record_index"]
        else:
            index = config.first_index + round((row["device_time"].timestamp() - TIME_BASE) / step)
        stored[row["imei"]].append(index)
    for imei, count in acked.items():
        indexes = stored[imei]
        assert len(indexes) == len(set(indexes)), f"{imei}: records stored more than once"
        expected = set(range(config.first_index, config.first_index + count))
        missing = expected - set(indexes)
        assert not missing, f"{imei}: acknowledged but not stored: {sorted(missing)[:10]}"
