"""Crash safety with a real server process: SIGKILL mid-run, restart, let the devices retransmit.

Every record a simulated device saw acknowledged must be in the database exactly once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import asyncpg
import pytest

from fleet.simulate.engine import SimulationConfig, run_simulation

from .conftest import ServerProcess, imei_block

pytestmark = pytest.mark.slow


async def test_acknowledged_records_survive_sigkill(
    owner_conn: asyncpg.Connection, server_process: Callable[..., ServerProcess]
) -> None:
    server = server_process()
    server.start()
    devices = 25
    first_imei = imei_block(devices)
    config = SimulationConfig(
        port=server.port,
        devices=devices,
        rate=1500.0,
        duration=7.0,
        records_per_frame=10,
        ack_timeout=3.0,
        drain_timeout=25.0,
        first_imei=first_imei,
        deliver_backlog=True,
        seed=7,
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
        """SELECT d.imei, p.record_index, count(*) AS copies
           FROM positions p JOIN devices d ON d.id = p.device_id
           WHERE d.imei = ANY($1) GROUP BY d.imei, p.record_index""",
        imeis,
    )
    stored: dict[str, set[int]] = {imei: set() for imei in imeis}
    for row in rows:
        assert row["copies"] == 1, f"{row['imei']} record {row['record_index']} stored {row['copies']} times"
        stored[row["imei"]].add(row["record_index"])
    for imei, count in acked.items():
        expected = set(range(config.first_index, config.first_index + count))
        missing = expected - stored[imei]
        assert not missing, f"{imei}: acknowledged but not stored: {sorted(missing)[:10]}"
