"""The `fleet` command line, run as a real process against the test database."""

from __future__ import annotations

import uuid

import asyncpg

from .conftest import fleet


async def test_user_vehicle_round_trip(cli_env: dict[str, str], owner_conn: asyncpg.Connection) -> None:
    email = f"Owner.{uuid.uuid4().hex[:8]}@Example.COM"
    created = fleet(cli_env, "user", "create", "--email", email, "--password", "correct-horse-9")
    assert created.returncode == 0, created.stderr
    assert "created owner" in created.stdout

    user = await owner_conn.fetchrow(
        "SELECT id, role, status, password_hash FROM users WHERE lower(email) = lower($1)", email
    )
    assert user["role"] == "owner" and user["status"] == "active"
    assert user["password_hash"].startswith("$2b$12$")  # bcrypt, cost 12

    imei = str(uuid.uuid4().int)[:15]
    added = fleet(cli_env, "vehicle", "add", "--name", "Truck CLI", "--imei", imei, "--vpn-ip", "10.0.0.11")
    assert added.returncode == 0, added.stderr
    vehicle_id = int(added.stdout.strip())
    row = await owner_conn.fetchrow(
        "SELECT v.name, host(v.vpn_ip) AS ip, v.api_port, d.imei FROM vehicles v JOIN devices d ON d.vehicle_id = v.id WHERE v.id = $1",
        vehicle_id,
    )
    assert tuple(row) == ("Truck CLI", "10.0.0.11", 8001, imei)

    assigned = fleet(cli_env, "vehicle", "assign", "--vehicle", str(vehicle_id), "--user", email.lower())
    assert assigned.returncode == 0, assigned.stderr
    assert (
        await owner_conn.fetchval(
            "SELECT count(*) FROM vehicle_access WHERE user_id = $1 AND vehicle_id = $2",
            user["id"],
            vehicle_id,
        )
        == 1
    )
    again = fleet(cli_env, "vehicle", "assign", "--vehicle", str(vehicle_id), "--user", email)
    assert again.returncode == 0 and "already had" in again.stdout


def test_bad_input_gives_clear_messages(cli_env: dict[str, str]) -> None:
    email = f"dup.{uuid.uuid4().hex[:8]}@example.com"
    assert fleet(cli_env, "user", "create", "--email", email, "--password", "long-enough-1").returncode == 0
    duplicate = fleet(cli_env, "user", "create", "--email", email.upper(), "--password", "long-enough-1")
    assert duplicate.returncode == 1
    assert "already exists" in duplicate.stderr and "Traceback" not in duplicate.stderr

    short = fleet(cli_env, "user", "create", "--email", "x@example.com", "--password", "short")
    assert short.returncode == 2 and "at least 10" in short.stderr

    bad_role = fleet(
        cli_env, "user", "create", "--email", "y@example.com", "--password", "long-enough-1", "--role", "king"
    )
    assert bad_role.returncode == 2 and "unknown role" in bad_role.stderr

    bad_email = fleet(cli_env, "user", "create", "--email", "not-an-email", "--password", "long-enough-1")
    assert bad_email.returncode == 1 and "e-mail" in bad_email.stderr

    bad_ip = fleet(cli_env, "vehicle", "add", "--name", "X", "--vpn-ip", "300.1.1.1")
    assert bad_ip.returncode == 1 and "not an IP address" in bad_ip.stderr

    bad_imei = fleet(cli_env, "vehicle", "add", "--name", "X", "--imei", "12 34")
    assert bad_imei.returncode == 2 and "IMEI" in bad_imei.stderr

    no_vehicle = fleet(cli_env, "vehicle", "assign", "--vehicle", "999999999", "--user", email)
    assert no_vehicle.returncode == 1 and "no vehicle" in no_vehicle.stderr

    no_user = fleet(cli_env, "vehicle", "add", "--name", "Lonely")
    vehicle_id = no_user.stdout.strip()
    missing = fleet(cli_env, "vehicle", "assign", "--vehicle", vehicle_id, "--user", "nobody@example.com")
    assert missing.returncode == 1 and "no user" in missing.stderr

    usage = fleet(cli_env, "vehicle", "assign", "--vehicle", "abc", "--user", email)
    assert usage.returncode == 2
    for result in (duplicate, short, bad_role, bad_email, bad_ip, bad_imei, no_vehicle, missing, usage):
        assert "Traceback" not in result.stderr + result.stdout


def test_bad_configuration_is_reported(cli_env: dict[str, str]) -> None:
    env = dict(cli_env, SERVER_PORT="not-a-port")
    result = fleet(env, "db", "upgrade")
    assert result.returncode == 2
    assert "SERVER_PORT" in result.stderr and "Traceback" not in result.stderr


def test_check_fails_when_nothing_listens(cli_env: dict[str, str]) -> None:
    result = fleet(cli_env, "check", "--url", "http://127.0.0.1:9", "--timeout", "1")
    assert result.returncode == 1 and "not reachable" in result.stderr


def test_db_upgrade_is_a_no_op_on_a_current_database(cli_env: dict[str, str]) -> None:
    result = fleet(cli_env, "db", "upgrade")
    assert result.returncode == 0, result.stderr
