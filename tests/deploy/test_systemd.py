"""systemd units: `systemd-analyze verify` clean, hardened; the server speaks the notify/watchdog protocol."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from fleet.config import Settings
from fleet.db import Database
from fleet.ops import systemd
from tests.api.conftest import free_port

UNITS = Path(__file__).resolve().parents[2] / "deploy" / "systemd"
ANALYZE = shutil.which("systemd-analyze")
FLEET = str(Path(sys.executable).parent / "fleet")


def _local_units(tmp_path: Path) -> list[Path]:
    """The units with ExecStart pointing at this checkout's `fleet` (verify checks that binaries exist)."""
    paths = []
    for unit in sorted(UNITS.iterdir()):
        target = tmp_path / unit.name
        target.write_text(unit.read_text().replace("/opt/fleet/venv/bin/fleet", FLEET))
        paths.append(target)
    return paths


def _unit(name: str) -> dict[str, list[str]]:
    values: dict[str, list[str]] = {}
    for line in (UNITS / name).read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            values.setdefault(key.strip(), []).append(value.strip())
    return values


@pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze is not installed")
def test_units_verify_cleanly(tmp_path: Path) -> None:
    assert ANALYZE is not None
    units = _local_units(tmp_path)
    result = subprocess.run(
        [ANALYZE, "verify", "--man=no", *map(str, units)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    # verify exits 0 even for unknown keys and bad values; its complaints go to stderr.
    assert result.returncode == 0 and result.stderr.strip() == "", result.stderr
    broken = tmp_path / "fleet.service"
    broken.write_text(broken.read_text().replace("Restart=always", "Restart=sometimes"))
    complaint = subprocess.run(
        [ANALYZE, "verify", "--man=no", str(broken)], capture_output=True, text=True, check=False
    )
    assert "restart specifier" in complaint.stderr


@pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze is not installed")
def test_the_service_is_hardened(tmp_path: Path) -> None:
    assert ANALYZE is not None
    [service] = [u for u in _local_units(tmp_path) if u.name == "fleet.service"]
    result = subprocess.run(
        [ANALYZE, "security", "--offline=yes", "--no-pager", str(service)],
        capture_output=True,
        text=True,
        check=False,
    )
    text = result.stdout + result.stderr
    exposure = float(text.split("Overall exposure level for fleet.service:")[1].split()[0])
    assert exposure <= 2.5, text[-2000:]  # systemd's scale: 0 (locked down) … 10 (unprotected)


def test_units_say_what_the_operations_need() -> None:
    service = _unit("fleet.service")
    assert service["Restart"] == ["always"] and service["Type"] == ["notify"]
    assert service["WatchdogSec"] and service["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert service["ExecStartPost"][0].endswith("fleet check --timeout 10")
    assert service["User"] == ["fleet"] and service["NoNewPrivileges"] == ["yes"]
    assert _unit("fleet-backup.service")["ExecStart"][0].endswith("fleet backup --verify")
    assert _unit("fleet-cleanup.service")["ExecStart"][0].endswith("fleet cleanup")
    for timer in ("fleet-backup.timer", "fleet-cleanup.timer"):
        assert _unit(timer)["Persistent"] == ["true"] and _unit(timer)["OnCalendar"]


def test_notify_speaks_the_datagram_protocol(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(str(path))
        monkeypatch.setenv("NOTIFY_SOCKET", str(path))
        assert systemd.notify("READY=1")
        assert server.recv(100) == b"READY=1"
    monkeypatch.delenv("NOTIFY_SOCKET")
    assert not systemd.notify("READY=1")
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    assert systemd.watchdog_interval() == 15.0
    monkeypatch.setenv("WATCHDOG_PID", "1")
    assert systemd.watchdog_interval() is None  # meant for another process


@pytest.mark.slow
async def test_serve_notifies_ready_and_feeds_the_watchdog_while_healthy(
    tmp_path: Path, test_settings: Settings, db: Database
) -> None:
    assert db.owner_dsn is not None and test_settings.db_app_password is not None
    path = tmp_path / "notify.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(str(path))
    server.setblocking(False)
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("DB_", "API_", "WATCHDOG_", "CONFIG_FILE"))
    }
    env.update(
        DATABASE_URL=db.owner_dsn,
        DB_APP_PASSWORD=test_settings.db_app_password.get_secret_value(),
        DB_MIGRATE_ON_START="0",
        DATA_DIR=str(tmp_path),
        ENV="development",
        LOG_FORMAT="json",
        API_PORT=str(free_port()),
        NOTIFY_SOCKET=str(path),
        WATCHDOG_USEC="2000000",  # a ping every second
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "fleet",
        "serve",
        "--role",
        "api",
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    loop = asyncio.get_running_loop()
    messages: list[bytes] = []
    try:
        async with asyncio.timeout(60):
            while sum(m == b"WATCHDOG=1" for m in messages) < 2:
                messages.append(await loop.sock_recv(server, 256))
        assert messages[0].startswith(b"READY=1")
        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(30):
            while not messages[-1].startswith(b"STOPPING=1"):
                messages.append(await loop.sock_recv(server, 256))
        await asyncio.wait_for(proc.wait(), 30)
        assert proc.returncode == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        server.close()
