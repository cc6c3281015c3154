"""Debian's HAProxy, run with the shipped deploy/haproxy/haproxy.cfg (addresses rewritten only), in front of
two ingest processes that require the PROXY protocol v2."""

from __future__ import annotations

import asyncio
import re
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import asyncpg
import pytest

from fleet.protocol.navtelecom import ack_archive, archive
from fleet.simulate.engine import run_simulation

from .conftest import REPO, ServerProcess, Tracker, free_port, record, unique_imei
from .procnet import established
from .test_shared_port import assert_stored_exactly_once, fleet_config, wait_until

pytestmark = pytest.mark.slow
HAPROXY = Path("/usr/sbin/haproxy")
SHIPPED = REPO / "deploy" / "haproxy" / "haproxy.cfg"
CLIENT_ADDRESS = "127.0.0.5"  # the tracker's source address; HAProxy reaches the nodes from 127.0.0.1


def test_shipped_config_is_valid(tmp_path: Path) -> None:
    check = subprocess.run(
        [str(HAPROXY), "-c", "-f", str(SHIPPED)], capture_output=True, text=True, cwd=tmp_path, check=False
    )
    assert check.returncode == 0, check.stdout + check.stderr


def loopback_config(front: int, backends: list[int]) -> str:
    """The shipped config with loopback addresses and ports, faster checks, and no chroot/user/socket."""
    text = SHIPPED.read_text()
    # Root-only or host-wide global settings of a real install.
    text = re.sub(r"(?m)^\s*(chroot|user|group|stats socket|log /dev/log)\b.*\n", "", text)
    text = re.sub(r"maxconn \d+", "maxconn 2000", text)  # within the test's RLIMIT_NOFILE
    text = text.replace("bind :5221", f"bind 127.0.0.1:{front}")
    text = re.sub(r"(?ms)^frontend teltonika.*?(?=^backend)", "", text)
    text = re.sub(r"(?ms)^backend ingest_teltonika.*", "", text)
    text = text.replace("check inter 2s fall 2 rise 2", "check inter 300ms fall 1 rise 1")
    servers = "".join(f"    server ingest{i} 127.0.0.1:{port}\n" for i, port in enumerate(backends, 1))
    text = re.sub(r"(?m)^    server ingest\d+ .*\n", "", text)
    return text.rstrip("\n") + "\n" + servers


@pytest.fixture
def haproxy(tmp_path: Path) -> Iterator[Callable[[int, list[int]], subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []

    def start(front: int, backends: list[int]) -> subprocess.Popen[bytes]:
        config = tmp_path / "haproxy.cfg"
        config.write_text(loopback_config(front, backends))
        check = subprocess.run([str(HAPROXY), "-c", "-f", str(config)], capture_output=True, check=False)
        assert check.returncode == 0, check.stdout + check.stderr
        log = (tmp_path / "haproxy.log").open("ab")
        proc = subprocess.Popen([str(HAPROXY), "-db", "-f", str(config)], stdout=log, stderr=log)
        log.close()
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def test_haproxy_with_proxy_protocol_in_front_of_two_ingest_processes(
    owner_conn: asyncpg.Connection,
    server_process: Callable[..., ServerProcess],
    haproxy: Callable[[int, list[int]], subprocess.Popen[bytes]],
) -> None:
    nodes = [server_process(protocol="navtelecom", INGEST_PROXY_PROTOCOL="1") for _ in range(2)]
    for node in nodes:
        node.start()
    front = free_port()
    haproxy(front, [node.port for node in nodes])

    # A raw connection straight to a node (no PROXY header) is refused.
    raw = await Tracker.connect(nodes[0].port)
    await raw.send(b"@NTC" + b"\x00" * 12)
    assert await raw.closed_within(5)
    await raw.close()

    # Through HAProxy the node stores the tracker's own address, not HAProxy's.
    await wait_until(lambda: _accepts(front), within=10.0, what="haproxy listening")
    imei = unique_imei()
    tracker = await Tracker.connect(front, source=CLIENT_ADDRESS)
    client_port = tracker.writer.get_extra_info("sockname")[1]
    await tracker.login(imei)
    await tracker.send(archive([record(1)]))
    assert await tracker.read(4) == ack_archive(1)
    await tracker.close()
    expected_peer = f"{CLIENT_ADDRESS}:{client_port}"
    for _ in range(50):
        peers = await owner_conn.fetchrow(
            """SELECT d.last_peer, array_agg(DISTINCT r.peer) AS frames FROM devices d
               JOIN raw_frames r ON r.device_id = d.id WHERE d.imei = $1 GROUP BY d.last_peer""",
            imei,
        )
        if peers is not None and peers["last_peer"]:
            break
        await asyncio.sleep(0.1)
    assert peers is not None
    assert peers["last_peer"] == expected_peer
    assert peers["frames"] == [expected_peer]

    # A fleet through HAProxy; one node stops mid-run and its trackers move to the other.
    devices = 16
    config = fleet_config(front, "navtelecom", devices, duration=7.0)
    simulation = asyncio.create_task(run_simulation(config))
    await wait_until(
        lambda: sum(established(node.pid, node.port) for node in nodes) == devices,
        within=10.0,
        what="every tracker connected through haproxy",
    )
    assert all(established(node.pid, node.port) > 0 for node in nodes), "leastconn used one node only"
    await asyncio.sleep(1.0)
    await asyncio.to_thread(nodes[0].stop)
    await wait_until(
        lambda: established(nodes[1].pid, nodes[1].port) == devices,
        within=10.0,
        what="every tracker on the remaining node",
    )
    result = await simulation
    assert all(tally.acked == tally.generated for tally in result.devices.values())
    await assert_stored_exactly_once(owner_conn, config, result)


def _accepts(port: int) -> bool:
    import socket

    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False
