"""Management at the command line (issue 15): results alone on stdout, no silent tracker moves, the use cases
with their audit rows, and no silent second database."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from .conftest import fleet


@pytest.fixture
def debug_env(cli_env: dict[str, str]) -> dict[str, str]:
    """Every log line there is (none of them may reach stdout), as JSON."""
    return dict(cli_env, LOG_LEVEL="DEBUG", LOG_FORMAT="json")


def imei() -> str:
    return str(uuid.uuid4().int)[:15]


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


async def audit(owner_conn: asyncpg.Connection, action: str, target: str) -> dict[str, Any]:
    row = await owner_conn.fetchrow(
        "SELECT actor_id, actor_email, details FROM admin_audit_log WHERE action = $1 AND target = $2 "
        "ORDER BY id DESC LIMIT 1",
        action,
        target,
    )
    assert row is not None, (action, target)
    return {**dict(row), "details": json.loads(row["details"])}


def test_stdout_carries_only_the_result(debug_env: dict[str, str]) -> None:
    shell = f'ID=$("{sys.executable}" -m fleet vehicle add --name "T {uuid.uuid4().hex[:6]}" 2>/dev/null); echo "[$ID]"'
    result = subprocess.run(["bash", "-c", shell], env=debug_env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    captured = result.stdout.strip()
    assert captured.startswith("[") and captured.endswith("]")
    assert captured[1:-1].isdigit(), captured
    # The logs exist, on stderr.
    added = fleet(debug_env, "vehicle", "add", "--name", f"T {uuid.uuid4().hex[:6]}")
    assert ok(added).strip().isdigit()
    assert '"event"' in added.stderr


async def test_vehicle_and_tracker_commands(
    debug_env: dict[str, str], owner_conn: asyncpg.Connection
) -> None:
    tracker = imei()
    first = int(ok(fleet(debug_env, "vehicle", "add", "--name", f"A {tracker}", "--imei", tracker)))
    # A second vehicle with the same tracker: refused, and no vehicle is left behind.
    second_name = f"B {tracker}"
    refused = fleet(debug_env, "vehicle", "add", "--name", second_name, "--imei", tracker)
    assert refused.returncode == 1 and "linked to vehicle" in refused.stderr and refused.stdout == ""
    assert await owner_conn.fetchval("SELECT count(*) FROM vehicles WHERE name = $1", second_name) == 0
    second = int(ok(fleet(debug_env, "vehicle", "add", "--name", second_name, "--imei", tracker, "--move")))
    assert await owner_conn.fetchval("SELECT vehicle_id FROM devices WHERE imei = $1", tracker) == second
    device_id = await owner_conn.fetchval("SELECT id FROM devices WHERE imei = $1", tracker)
    moved = await audit(owner_conn, "device.move", f"device:{device_id}")
    assert moved["actor_id"] is None and moved["actor_email"].startswith("cli:")
    assert moved["details"]["via"] == "cli" and moved["details"]["previous_vehicle_id"] == first

    bad = fleet(debug_env, "vehicle", "add", "--name", "X", "--imei", "123")
    assert bad.returncode == 2 and "15 digits" in bad.stderr

    ok(fleet(debug_env, "vehicle", "unlink", "--imei", tracker))
    ok(fleet(debug_env, "vehicle", "link", "--vehicle", str(first), "--imei", tracker))
    assert await owner_conn.fetchval("SELECT vehicle_id FROM devices WHERE imei = $1", tracker) == first
    edited = ok(fleet(debug_env, "vehicle", "edit", str(first), "--vpn-ip", "10.9.0.1", "--api-port", "8011"))
    assert "10.9.0.1:8011" in edited
    assert (await audit(owner_conn, "vehicle.edit", f"vehicle:{first}"))["details"]["changes"][
        "api_port"
    ] == {
        "from": 8001,
        "to": 8011,
    }
    key = ok(fleet(debug_env, "vehicle", "set-key", str(first))).strip()
    assert (
        len(key) >= 40
        and await owner_conn.fetchval("SELECT api_key FROM vehicles WHERE id = $1", first) == key
    )

    new_tracker = imei()
    device = int(ok(fleet(debug_env, "device", "add", "--imei", new_tracker, "--protocol", "teltonika")))
    listed = json.loads(ok(fleet(debug_env, "device", "list", "--unlinked", "--json")))
    assert device in [d["id"] for d in listed]
    ok(fleet(debug_env, "device", "delete", "--imei", new_tracker))
    assert await owner_conn.fetchval("SELECT count(*) FROM devices WHERE imei = $1", new_tracker) == 0

    state = json.loads(ok(fleet(debug_env, "vehicle", "sync", str(first), "--json")))
    assert state["vehicle_id"] == first and state["api_key"] == "vehicle"
    ok(fleet(debug_env, "vehicle", "delete", str(second), "--yes"))
    assert await owner_conn.fetchval("SELECT count(*) FROM vehicles WHERE id = $1", second) == 0
    assert (await audit(owner_conn, "vehicle.delete", f"vehicle:{second}"))["details"]["via"] == "cli"


async def test_user_commands(debug_env: dict[str, str], owner_conn: asyncpg.Connection) -> None:
    email = f"cli.{uuid.uuid4().hex[:8]}@example.com"
    ok(fleet(debug_env, "user", "create", "--email", email, "--password", "correct-horse-9"))
    user_id = await owner_conn.fetchval("SELECT id FROM users WHERE email = $1", email)
    assert (await audit(owner_conn, "user.create", f"user:{user_id}"))["actor_email"].startswith("cli:")
    assert "blocked" in ok(fleet(debug_env, "user", "block", email))
    assert "status active" in ok(fleet(debug_env, "user", "unblock", str(user_id)))
    again = fleet(debug_env, "user", "unblock", email)
    assert again.returncode == 1 and "not blocked" in again.stderr
    weak = fleet(debug_env, "user", "set-password", email, "--password", "password123")
    assert weak.returncode == 1 and "common passwords" in weak.stderr
    generated = ok(fleet(debug_env, "user", "set-password", email, "--generate"))
    assert "password: " in generated
    assert await audit(owner_conn, "user.password_reset", f"user:{user_id}")


def test_no_silent_second_database(debug_env: dict[str, str], tmp_path: Path) -> None:
    # Run from another directory with the embedded database: no ./var/pg there, so it refuses with a hint.
    elsewhere = {
        k: v for k, v in debug_env.items() if k not in ("DATABASE_URL", "DB_APP_PASSWORD", "DATA_DIR")
    }
    result = subprocess.run(
        [sys.executable, "-m", "fleet", "vehicle", "list"],
        env=elsewhere,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert "there is no database under" in result.stderr and "DATA_DIR" in result.stderr
    assert not (tmp_path / "var" / "pg").exists()

    # A server running from this DATA_DIR on another database: refused, naming both.
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    server = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)  # fleet serve"])
    try:
        record = {"pid": server.pid, "database": "postgresql://fleet@db.internal:5432/fleet"}
        (data_dir / "server.json").write_text(json.dumps(record))
        clash = fleet(dict(debug_env, DATA_DIR=str(data_dir)), "vehicle", "list")
        assert clash.returncode == 2
        assert "db.internal" in clash.stderr and f"pid {server.pid}" in clash.stderr
    finally:
        server.kill()
        server.wait()
    # Once that server is gone, the command runs and says which database it used.
    listed = fleet(dict(debug_env, DATA_DIR=str(data_dir)), "vehicle", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert "using postgresql://" in listed.stderr and json.loads(listed.stdout) is not None
