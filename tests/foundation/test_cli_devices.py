"""`fleet device command|commands|allow|security-events` (issue 15 leftovers): thin commands over the use
cases, results on stdout, refusals on stderr with a non-zero exit code (2 for usage errors)."""

from __future__ import annotations

import json
import uuid

import asyncpg

from .conftest import fleet
from .test_cli_management import audit, ok


def imei() -> str:
    return str(uuid.uuid4().int)[:15]


async def test_device_commands_from_the_cli(cli_env: dict[str, str], owner_conn: asyncpg.Connection) -> None:
    tracker = imei()
    device_id = int(ok(fleet(cli_env, "device", "add", "--imei", tracker, "--protocol", "teltonika")))
    command_id = int(ok(fleet(cli_env, "device", "command", tracker, "--type", "custom", "--text", "getver")))
    row = await owner_conn.fetchrow(
        "SELECT device_id, type, payload, status FROM device_commands WHERE id = $1", command_id
    )
    assert row is not None and row["device_id"] == device_id and row["status"] == "queued"
    assert (row["type"], json.loads(row["payload"])) == ("custom", {"text": "getver"})
    entry = await audit(owner_conn, "device.command", f"device:{device_id}")
    assert entry["details"]["command_id"] == command_id and entry["actor_email"].startswith("cli:")

    unsupported = fleet(
        cli_env, "device", "command", tracker, "--type", "resend_archive",
        "--from", "2026-01-01T00:00:00+00:00", "--to", "2026-01-02T00:00:00+00:00",
    )  # fmt: skip
    assert unsupported.returncode == 1 and "do not support 'resend_archive'" in " ".join(
        unsupported.stderr.split()
    )
    assert unsupported.stdout == ""
    missing = fleet(cli_env, "device", "command", tracker, "--type", "output", "--output", "1")
    assert missing.returncode == 2 and "--on or --off" in missing.stderr

    listed = json.loads(ok(fleet(cli_env, "device", "commands", tracker, "--json")))
    assert [(c["id"], c["status"]) for c in listed] == [(command_id, "queued")]
    assert fleet(cli_env, "device", "commands", imei()).returncode != 0


async def test_device_allow_list_from_the_cli(
    cli_env: dict[str, str], owner_conn: asyncpg.Connection
) -> None:
    tracker = imei()
    device_id = int(ok(fleet(cli_env, "device", "add", "--imei", tracker)))
    said = ok(
        fleet(cli_env, "device", "allow", tracker, "--network", "10.0.0.9/24", "--network", "198.51.100.7")
    )
    assert "10.0.0.0/24, 198.51.100.7/32" in said
    stored = await owner_conn.fetchval(
        "SELECT allowed_networks::text[] FROM devices WHERE id = $1", device_id
    )
    assert stored == ["10.0.0.0/24", "198.51.100.7/32"]
    entry = await audit(owner_conn, "device.allowed_networks", f"device:{device_id}")
    assert entry["details"]["networks"] == ["10.0.0.0/24", "198.51.100.7/32"]
    bad = fleet(cli_env, "device", "allow", tracker, "--network", "10.0.0.0/33")
    assert bad.returncode == 1 and "CIDR" in bad.stderr
    assert "any address" in ok(fleet(cli_env, "device", "allow", tracker, "--any"))
    assert await owner_conn.fetchval("SELECT allowed_networks FROM devices WHERE id = $1", device_id) is None

    await owner_conn.execute(
        """INSERT INTO security_events (kind, first_at, last_at, count, device_id, imei, protocol, peer, details)
           VALUES ('takeover_refused', now(), now(), 3, $1, $2, 'navtelecom', '203.0.113.9:4000', '{}')""",
        device_id,
        tracker,
    )
    events = json.loads(ok(fleet(cli_env, "device", "security-events", "--imei", tracker, "--json")))
    assert [(e["kind"], e["count"], e["peer"]) for e in events] == [
        ("takeover_refused", 3, "203.0.113.9:4000")
    ]
