"""`fleet serve` as `make run` starts it: embedded PostgreSQL, /health, graceful SIGTERM, data kept."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(env: dict[str, str], *roles: str) -> subprocess.Popen[str]:
    args = [sys.executable, "-m", "fleet", "serve"]
    for role in roles:
        args += ["--role", role]
    return subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def wait_healthy(port: int, proc: subprocess.Popen[str], timeout: float = 60) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited early: {proc.stdout.read() if proc.stdout else ''}")
        try:
            response = httpx.get(f"http://127.0.0.1:{port}/health", timeout=2)
            if response.status_code == 200:
                body: dict[str, object] = response.json()
                return body
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError("server did not become healthy")


def stop(proc: subprocess.Popen[str]) -> str:
    proc.send_signal(signal.SIGTERM)
    output, _ = proc.communicate(timeout=30)
    return output


def postgres_running_for(data_dir: Path) -> bool:
    pid_file = data_dir / "pg" / "postmaster.pid"
    if not pid_file.exists():
        return False
    pid = int(pid_file.read_text().split()[0])
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture
def serve_dir() -> Iterator[Path]:
    # Not pytest's tmp_path: the embedded server runs as an unprivileged user when tests run as root,
    # and pytest keeps resetting its base directory to 0700 (another pytest process may start meanwhile).
    path = Path(tempfile.mkdtemp(prefix="fleet-serve-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def test_embedded_serve_health_restart_and_clean_stop(serve_dir: Path) -> None:
    tmp_path = serve_dir
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DB_", "DATABASE_", "API_", "TEST_"))}
    env.update(DATA_DIR=str(tmp_path / "var"), API_PORT=str(port), ENV="development", LOG_FORMAT="json")
    env.pop("CONFIG_FILE", None)
    env.pop("REDIS_URL", None)

    proc = start_server(env, "api", "maintenance")
    try:
        body = wait_healthy(port, proc)
        assert body["database"] == "ok"
        assert postgres_running_for(tmp_path / "var")
        # Only a Unix socket: the embedded server has no TCP listener.
        conf = (tmp_path / "var" / "pg" / "postmaster.opts").read_text()
        assert '-h ""' in conf or "-h" in conf
    finally:
        output = stop(proc)
    assert proc.returncode == 0, output
    assert "Fleet Server is running" in output and "Log in:" in output
    assert "shutdown_complete" in output
    assert not postgres_running_for(tmp_path / "var")
    credentials = (tmp_path / "var" / "initial_admin.txt").read_text()

    # Second start reuses the data directory: same database, same development administrator.
    proc = start_server(env, "api", "maintenance")
    try:
        wait_healthy(port, proc)
    finally:
        output = stop(proc)
    assert proc.returncode == 0, output
    assert (tmp_path / "var" / "initial_admin.txt").read_text() == credentials
    assert (tmp_path / "var" / "logs" / "server.log").stat().st_size > 0


def test_serve_rejects_unknown_role(tmp_path: Path) -> None:
    env = dict(os.environ, DATA_DIR=str(tmp_path))
    result = subprocess.run(
        [sys.executable, "-m", "fleet", "serve", "--role", "teleport"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    assert "unknown role" in result.stderr and "Traceback" not in result.stderr
