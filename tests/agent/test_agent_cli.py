"""The ``fleet agent`` command, registered into a Typer app."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import typer
from typer.testing import CliRunner

from fleet.agent import runner
from fleet.agent.cli import register
from fleet.agent.config import AgentConfig


@pytest.fixture
def cli_app() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def root() -> None:
        """A stand-in for the fleet command group."""

    register(app)
    return app


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> list[AgentConfig]:
    """Capture the configs the command would serve instead of starting uvicorn."""
    configs: list[AgentConfig] = []
    monkeypatch.setattr(runner, "serve_agent", configs.append)
    for name in ("AGENT_API_KEY", "OUTBOUND_API_KEY", "AGENT_PORT", "AGENT_SIMULATE"):
        monkeypatch.delenv(name, raising=False)
    return configs


def test_options_become_the_config(cli_app: typer.Typer, served: list[AgentConfig], tmp_path: Path) -> None:
    args = ["agent", "--port", "9101", "--host", "10.0.0.11", "--api-key", "secret-key-123456"]
    args += [
        "--db",
        str(tmp_path / "a.db"),
        "--no-simulate",
        "--channels",
        "12",
        "--backfill",
        "90",
        "--seed",
        "4",
    ]
    result = CliRunner().invoke(cli_app, args)
    assert result.exit_code == 0, result.output
    (config,) = served
    assert (config.port, config.host, config.db_path, config.simulate) == (
        9101,
        "10.0.0.11",
        tmp_path / "a.db",
        False,
    )
    assert (config.channels, config.backfill_seconds, config.seed) == (12, 90, 4)
    assert config.api_key is not None and config.api_key.get_secret_value() == "secret-key-123456"
    assert "listening on http://10.0.0.11:9101" in result.output
    assert "secret-key-123456" not in result.output


def test_defaults_and_environment(
    cli_app: typer.Typer, served: list[AgentConfig], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OUTBOUND_API_KEY", "from-the-seed-env")
    monkeypatch.setenv("AGENT_PORT", "9202")
    result = CliRunner().invoke(cli_app, ["agent"])
    assert result.exit_code == 0, result.output
    (config,) = served
    assert (config.host, config.port, config.simulate, config.channels) == ("127.0.0.1", 9202, True, 25)
    assert config.api_key is not None and config.api_key.get_secret_value() == "from-the-seed-env"


def test_missing_key_is_generated_and_shown_once(cli_app: typer.Typer, served: list[AgentConfig]) -> None:
    result = CliRunner().invoke(cli_app, ["agent"])
    assert result.exit_code == 0, result.output
    key = served[0].api_key
    assert key is not None and len(key.get_secret_value()) >= 24
    assert result.output.count(key.get_secret_value()) == 1


def test_bad_option_is_a_usage_error(cli_app: typer.Typer, served: list[AgentConfig]) -> None:
    result = CliRunner().invoke(cli_app, ["agent", "--channels", "0", "--api-key", "k"])
    assert result.exit_code == 2 and served == []
    assert "channels" in result.output


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def test_command_serves_until_terminated(tmp_path: Path) -> None:
    port = _free_port()
    script = (
        "import typer\nfrom fleet.agent.cli import register\n"
        "app = typer.Typer()\napp.callback()(lambda: None)\nregister(app)\napp()\n"
    )
    args = ["agent", "--port", str(port), "--api-key", "cli-key-0123456789", "--db", str(tmp_path / "cli.db")]
    env = {**os.environ, "AGENT_BACKFILL_SECONDS": "30"}
    process = subprocess.Popen(
        [sys.executable, "-c", script, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
        text=True,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                response = httpx.get(
                    f"http://127.0.0.1:{port}/status", headers={"X-API-Key": "cli-key-0123456789"}
                )
                break
            except httpx.TransportError:
                assert process.poll() is None, process.stdout.read() if process.stdout else ""
                assert time.monotonic() < deadline, "the agent did not start"
                time.sleep(0.1)
        assert response.status_code == 200 and response.json()["db_ok"] is True
        assert response.json()["oldest_data"] is not None
    finally:
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=20)
    # uvicorn shuts the app down cleanly, then re-raises SIGTERM so the process ends "by the signal" as asked
    # (systemd counts that as a clean stop).
    assert process.returncode in (0, -signal.SIGTERM), output
    assert "Application shutdown complete" in output
    assert f"listening on http://127.0.0.1:{port}" in output
