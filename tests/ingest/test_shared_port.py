"""Two `fleet serve --role ingest` processes on one device port (SO_REUSEPORT), with a simulated fleet.

* one is killed with SIGKILL mid-run: every tracker ends up on the survivor, and every record the
  simulator saw acknowledged is stored exactly once;
* handover (`fleet serve --workers 1` and SIGUSR2, the documented upgrade): a second process starts, the
  first gets SIGTERM mid-run: it commits and acknowledges what it received, no acknowledged record is lost
  or stored twice, and no connection attempt is refused; then the supervisor restarts a crashed child,
  forwards SIGHUP and exits cleanly on SIGTERM.

The kill test speaks Navtelecom and the handover test Teltonika, so both listeners are covered.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import asyncpg
import pytest

from fleet.simulate.engine import SimulationConfig, SimulationResult, run_simulation

from .conftest import ServerProcess, free_port, imei_block
from .procnet import established, listening

pytestmark = pytest.mark.slow
TIME_BASE = 1_767_225_600.0  # device clocks start at 2026-01-01


async def wait_until(predicate: Callable[[], bool], within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached within {within} s: {what}")
        await asyncio.sleep(0.1)


async def assert_stored_exactly_once(
    conn: asyncpg.Connection, config: SimulationConfig, result: SimulationResult
) -> None:
    """Every acknowledged record of every device is stored, none twice."""
    acked = result.acked
    assert sum(acked.values()) == result.records_acked > 0
    rows = await conn.fetch(
        """SELECT d.imei, p.record_index, p.device_time FROM positions p JOIN devices d ON d.id = p.device_id
           WHERE d.imei = ANY($1)""",
        sorted(acked),
    )
    # Navtelecom stores the black-box index; Teltonika has none, and the simulator's record i is taken
    # at time_base + (i - first_index) * (devices / rate).
    step = config.devices / config.rate
    stored: dict[str, list[int]] = {imei: [] for imei in acked}
    for row in rows:
        if config.protocol == "navtelecom":
            index = row["record_index"]
        else:
            index = config.first_index + round((row["device_time"].timestamp() - TIME_BASE) / step)
        stored[row["imei"]].append(index)
    for imei, count in acked.items():
        indexes = stored[imei]
        assert len(indexes) == len(set(indexes)), f"{imei}: records stored more than once"
        missing = set(range(config.first_index, config.first_index + count)) - set(indexes)
        assert not missing, f"{imei}: acknowledged but not stored: {sorted(missing)[:10]}"


def fleet_config(port: int, protocol: str, devices: int, duration: float) -> SimulationConfig:
    return SimulationConfig(
        port=port,
        protocol=protocol,
        devices=devices,
        rate=devices * 20.0,
        duration=duration,
        records_per_frame=10,
        ack_timeout=3.0,
        drain_timeout=20.0,
        first_imei=imei_block(devices),
        deliver_backlog=True,
        seed=13,
        time_base=TIME_BASE,
    )


async def test_sigkill_of_one_of_two_processes_moves_every_tracker_to_the_survivor(
    owner_conn: asyncpg.Connection, server_process: Callable[..., ServerProcess]
) -> None:
    port = free_port()
    first = server_process(port=port, protocol="navtelecom")
    second = server_process(port=port, protocol="navtelecom")
    first.start()
    second.start(ready_event="ingest_listening")
    devices = 40
    config = fleet_config(port, "navtelecom", devices, duration=6.0)
    simulation = asyncio.create_task(run_simulation(config))

    # The kernel spreads the trackers over both processes.
    await wait_until(
        lambda: established(first.pid, port) + established(second.pid, port) == devices,
        within=10.0,
        what="every tracker connected",
    )
    assert established(first.pid, port) > 0 and established(second.pid, port) > 0
    await asyncio.sleep(1.0)
    first.kill()
    await wait_until(
        lambda: established(second.pid, port) == devices, within=10.0, what="every tracker on the survivor"
    )
    result = await simulation
    second.stop()

    assert result.disconnects + result.ack_timeouts > 0, "the kill was not noticed by the devices"
    assert all(tally.acked == tally.generated for tally in result.devices.values())
    await assert_stored_exactly_once(owner_conn, config, result)


async def test_handover_on_sigterm_during_a_rolling_restart_then_crash_restart_and_clean_exit(
    owner_conn: asyncpg.Connection, server_process: Callable[..., ServerProcess]
) -> None:
    """`fleet serve --workers 1`: SIGUSR2 starts a new ingest process next to the old one, which then gets
    SIGTERM mid-run (the documented upgrade); afterwards a SIGKILLed child is restarted, SIGHUP is
    forwarded, and SIGTERM stops everything with exit code 0."""
    template = server_process(protocol="teltonika")  # its environment: test database, a free port
    port = template.port
    with template.log_path.open("ab") as log:
        supervisor = await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "fleet", "serve", "--workers", "1", "--role", "ingest"),
            env=template.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=template.env["DATA_DIR"],
        )

    def logged(event: str) -> int:
        return sum(1 for e in template.log_events() if e.get("event") == event)

    try:
        launched = time.monotonic()
        await wait_until(lambda: logged("supervisor_ready") == 1, within=60.0, what="supervisor ready")
        # A new child takes as long to start as the first did (seconds of imports on a busy machine): the
        # fleet must still be running when the handover happens.
        startup = time.monotonic() - launched
        # The supervisor keeps DATA_DIR/server.json; its children do not overwrite it.
        record = Path(template.env["DATA_DIR"]) / "server.json"
        assert f'"pid": {supervisor.pid}' in record.read_text()
        [old] = children(supervisor.pid)
        devices = 30
        config = fleet_config(port, "teltonika", devices, duration=min(max(1.5 * startup + 2, 6.0), 25.0))
        # The upgrade: a new process starts (seconds of imports), then the old one gets SIGTERM; the
        # fleet starts meanwhile, on the old process, the only one listening yet.
        supervisor.send_signal(signal.SIGUSR2)
        simulation = asyncio.create_task(run_simulation(config))
        await wait_until(lambda: established(old, port) == devices, within=10.0, what="every tracker on old")
        await wait_until(lambda: logged("supervisor_child_replaced") == 1, within=40.0, what="handover")
        [new] = children(supervisor.pid)
        assert new != old
        await wait_until(
            lambda: established(new, port) == devices, within=10.0, what="every tracker on the new process"
        )
        result = await simulation

        # The old process committed and acknowledged what it had received, then closed its connections.
        stopped = [e for e in template.log_events() if e.get("event") == "ingest_stopped"]
        assert stopped and stopped[0]["stored"], "the old process stored nothing before stopping"
        assert result.connect_failures == 0, f"connections refused during the switch: {result.last_error}"
        assert result.disconnects > 0, "the trackers never left the old process"
        assert all(tally.acked == tally.generated for tally in result.devices.values())
        await assert_stored_exactly_once(owner_conn, config, result)

        os.kill(new, signal.SIGKILL)
        await wait_until(lambda: logged("supervisor_child_exited") == 1, within=10.0, what="crash noticed")
        await wait_until(
            lambda: any(listening(pid, port) for pid in children(supervisor.pid) if pid != new),
            within=30.0,
            what="crashed child restarted and listening",
        )
        supervisor.send_signal(signal.SIGHUP)
        await wait_until(lambda: logged("supervisor_signal_forwarded") == 1, within=10.0, what="SIGHUP")
        remaining = children(supervisor.pid)
        supervisor.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(supervisor.wait(), 60) == 0
        assert not [pid for pid in remaining if alive(pid)]
        assert not record.exists()
    finally:
        if supervisor.returncode is None:
            leftovers = children(supervisor.pid)
            supervisor.kill()  # its children get SIGTERM from the kernel (stop_with_supervisor)
            await supervisor.wait()
            for pid in leftovers:
                await wait_until(lambda pid=pid: not alive(pid), within=30.0, what=f"child {pid} stopped")


def children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(item) for item in path.read_text().split()] if path.exists() else []


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
