"""Hot reload: SIGHUP and file changes apply safe settings live, refuse bad files, name restart-only keys."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from structlog.testing import capture_logs

from fleet.config import Settings, load_settings
from fleet.db import Database
from fleet.ops.ratelimit import RateLimiter
from fleet.ops.reload import SettingsReloader
from fleet.runtime import Runtime
from tests.ingest.conftest import Tracker, archive_frame, free_port, unique_imei

BASE_YAML = """
log_level: WARNING
rate_limit:
  login_per_minute: 50
flags:
  text_dialect: true
  auto_register_devices: true
  registration_open: true
retention:
  audit_log_retention_days: 90
"""


def _write(path: Path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)  # what editors and config management do: never a half-written file


@pytest.fixture
def config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(BASE_YAML, encoding="utf-8")
    monkeypatch.setenv("CONFIG_FILE", str(path))
    for name in ("LOG_LEVEL", "RATE_LIMIT_LOGIN_PER_MINUTE", "API_PORT", "REGISTRATION_OPEN"):
        monkeypatch.delenv(name, raising=False)
    return path


def _loader(test_settings: Settings) -> Any:
    fixed = {
        "env": "test",
        "data_dir": test_settings.data_dir,
        "database_url": test_settings.database_url,
        "secret_key": test_settings.secret_key,
        "api_key": test_settings.api_key,
        "db_app_password": test_settings.db_app_password,
    }
    return lambda: load_settings(**fixed)


async def test_reload_applies_safe_settings_and_names_restart_ones(
    config_file: Path, test_settings: Settings, db: Database, owner_conn: asyncpg.Connection
) -> None:
    loader = _loader(test_settings)
    runtime = Runtime(settings=loader(), db=db, roles=["api"])
    limiter = RateLimiter.from_settings(runtime.settings)
    runtime.on_settings_change(limiter.apply_settings)
    reloader = SettingsReloader(runtime, loader)
    root = logging.getLogger()
    level_before = root.level
    try:
        assert runtime.settings.log_level == "WARNING" and limiter.items["login"].amount == 50
        _write(
            config_file,
            BASE_YAML.replace("log_level: WARNING", "log_level: DEBUG")
            .replace("login_per_minute: 50", "login_per_minute: 3")
            .replace("registration_open: true", "registration_open: false")
            .replace("auto_register_devices: true", "auto_register_devices: false")
            + "api:\n  port: 9999\n",
        )
        with capture_logs() as logs:
            outcome = await reloader.reload("test")
        assert outcome.result == "applied", outcome
        assert set(outcome.applied) == {
            "log_level",
            "rate_limit_login_per_minute",
            "registration_open",
            "unknown_device_policy",
        }
        assert outcome.needs_restart == ["api_port"]
        settings = runtime.settings
        assert settings.log_level == "DEBUG" and root.level == logging.DEBUG
        assert limiter.items["login"].amount == 3
        assert settings.registration_open is False and settings.unknown_device_policy == "reject"
        assert settings.api_port == test_settings.api_port  # restart-only: the running value stays
        restart = [e for e in logs if e["event"] == "setting_needs_restart"]
        assert restart and restart[0]["setting"] == "API_PORT" and restart[0]["configured"] == 9999
        changed = {e["setting"] for e in logs if e["event"] == "setting_changed"}
        assert "LOG_LEVEL" in changed and "RATE_LIMIT_LOGIN_PER_MINUTE" in changed
        assert reloader.state.pending_restart == {"api_port": 9999}

        entry = await owner_conn.fetchrow(
            "SELECT actor_id, details FROM admin_audit_log WHERE action = 'settings.reload' ORDER BY id DESC LIMIT 1"
        )
        details = json.loads(entry["details"]) if isinstance(entry["details"], str) else entry["details"]
        assert entry["actor_id"] is None and details["source"] == "test"
        assert details["changed"]["RATE_LIMIT_LOGIN_PER_MINUTE"] == {"from": 50, "to": 3}
        assert details["needs_restart"] == ["API_PORT"]

        # An invalid file is refused with the reason, and nothing changes.
        for bad, reason in (
            ("log_level: [unclosed", "invalid YAML"),
            ("log_level: LOUD\n", "LOG_LEVEL"),
            ("rate_limit:\n  login_per_minute: 0\n", "RATE_LIMIT_LOGIN_PER_MINUTE"),
            ("flags:\n  teleport: true\n", "unknown settings flags_teleport"),
        ):
            _write(config_file, bad)
            with capture_logs() as logs:
                refused = await reloader.reload("test")
            assert refused.result == "refused" and reason in (refused.error or ""), (bad, refused.error)
            [event] = [e for e in logs if e["event"] == "config_reload_refused"]
            assert event["action"] == "keeping the running settings"
            assert runtime.settings is settings
        assert reloader.state.last_result == "refused"
    finally:
        root.setLevel(level_before)
        await reloader.close()
        await limiter.close()


async def test_file_change_is_noticed_by_the_watch_job(
    config_file: Path, test_settings: Settings, db: Database
) -> None:
    loader = _loader(test_settings)
    runtime = Runtime(settings=loader(), db=db, roles=["sync"])
    reloader = SettingsReloader(runtime, loader)
    job = reloader.watch_job()
    root = logging.getLogger()
    level_before = root.level
    try:
        await job.run_once()
        assert reloader.state.last_reload_at is None  # nothing changed yet
        await asyncio.sleep(0.01)
        _write(config_file, BASE_YAML.replace("audit_log_retention_days: 90", "audit_log_retention_days: 30"))
        await job.run_once()
        assert runtime.settings.audit_log_retention_days == 30
        assert reloader.state.last_result == "applied"
        await asyncio.to_thread(config_file.unlink)
        with capture_logs() as logs:
            await job.run_once()
        assert any(e["event"] == "config_file_missing" for e in logs)
        assert runtime.settings.audit_log_retention_days == 30
    finally:
        root.setLevel(level_before)
        await reloader.close()


# --- the whole server: SIGHUP while a tracker stays connected -------------------------------------------------


def _events(log_path: Path) -> list[dict[str, Any]]:
    events = []
    for line in log_path.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            try:
                events.append(json.loads(line))
            except ValueError:
                continue
    return events


async def _until(predicate: Any, within: float = 20.0) -> Any:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        value = await predicate()
        if value:
            return value
        await asyncio.sleep(0.1)
    raise AssertionError("condition not reached in time")


@pytest.mark.slow
async def test_sighup_changes_log_level_and_rate_limit_while_a_tracker_stays_connected(
    test_settings: Settings, db: Database, tmp_path: Path
) -> None:
    assert db.owner_dsn is not None and test_settings.db_app_password is not None
    device_port, api_port = free_port(), free_port()
    config = tmp_path / "config.yaml"
    config.write_text(BASE_YAML)
    api_key = "reload-test-api-key-0123456789"
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DB_", "INGEST_", "SERVER_", "API_", "RATE_"))
    }
    env.update(
        DATABASE_URL=db.owner_dsn,
        DB_APP_PASSWORD=test_settings.db_app_password.get_secret_value(),
        DB_MIGRATE_ON_START="0",
        DATA_DIR=str(tmp_path),
        CONFIG_FILE=str(config),
        SECRET_KEY="reload-test-secret-key-0123456789",
        API_KEY=api_key,
        ENV="test",
        LOG_FORMAT="json",
        SERVER_HOST="127.0.0.1",
        SERVER_PORT=str(device_port),
        TELTONIKA_PORT="0",  # only the Navtelecom port is used here; 5027 may be another run's
        API_PORT=str(api_port),
        INGEST_BATCH_WINDOW_MS="5",
        CONFIG_WATCH_INTERVAL_SEC="0",  # this test drives reloads with SIGHUP only
    )
    env.pop("LOG_LEVEL", None)
    env.pop("REDIS_URL", None)
    log_path = tmp_path / "server.out"
    with log_path.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            *("-m", "fleet", "serve", "--role", "ingest", "--role", "api"),
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=tmp_path,
        )
    base = f"http://127.0.0.1:{api_port}"
    admin = {"Authorization": f"Bearer {api_key}"}
    try:
        # A fresh connection per request: on a loaded machine the gap between two requests can reach the
        # server's 5 s keep-alive timeout, and a request on a connection the server is closing fails.
        no_keepalive = httpx.Limits(max_keepalive_connections=0)
        async with httpx.AsyncClient(base_url=base, timeout=10, limits=no_keepalive) as client:

            async def healthy() -> bool:
                if proc.returncode is not None:
                    raise AssertionError(log_path.read_text()[-3000:])
                try:
                    return (await client.get("/health")).status_code == 200
                except httpx.HTTPError:
                    return False

            await _until(healthy, 60)
            imei = unique_imei()
            tracker = await Tracker.connect(device_port)
            await tracker.login(imei)
            await tracker.send(archive_frame(1, 2))
            assert len(await tracker.read(4)) == 4  # acknowledged

            assert not [e for e in _events(log_path) if e.get("level") == "debug"]
            config.write_text(
                BASE_YAML.replace("log_level: WARNING", "log_level: DEBUG").replace(
                    "login_per_minute: 50", "login_per_minute: 2"
                )
            )
            os.kill(proc.pid, signal.SIGHUP)

            async def reloaded() -> dict[str, Any] | None:
                body: dict[str, Any] = (await client.get("/admin/settings", headers=admin)).json()
                return body if body["settings"]["LOG_LEVEL"] == "DEBUG" else None

            body = await _until(reloaded)
            assert body["settings"]["RATE_LIMIT_LOGIN_PER_MINUTE"] == 2
            assert (
                body["reload"]["last_result"] == "applied" and body["flags"]["auto_register_devices"] is True
            )
            assert body["settings"]["SECRET_KEY"] == "***"

            # The new login limit holds at once: two attempts, then 429.
            codes = [
                (
                    await client.post("/auth/login", json={"email": "x@example.com", "password": "wrong one"})
                ).status_code
                for _ in range(3)
            ]
            assert codes == [401, 401, 429]
            # DEBUG lines now appear (every answered request is logged at DEBUG).
            await client.get("/health")
            await _until(
                lambda: asyncio.sleep(0, [e for e in _events(log_path) if e.get("level") == "debug"])
            )

            # The tracker's connection survived: the same socket still gets its ACKs.
            await tracker.send(archive_frame(3, 1))
            assert len(await tracker.read(4)) == 4
            await tracker.close()
        events = _events(log_path)
        reload_events = [e for e in events if e.get("event") == "settings_reloaded"]
        assert reload_events and reload_events[0]["source"] == "sighup"
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), 30)
        except TimeoutError:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0, log_path.read_text()[-3000:]
