"""Per-tenant isolation of the Grafana dashboards, checked where it is enforced: in the database.

Every query of every dashboard is expanded as Grafana would expand it and executed as `fleet_grafana`, the
role Grafana connects with: for an owner with their own vehicle (data comes back), with another owner's vehicle
id (what a user gets by editing `var-vehicle_id` in the URL: nothing), as a superuser, as a pending user, and
with an e-mail in place of the opaque login. Then the role itself is probed: it can read no table, whatever
session settings it forges.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from fleet.config import Settings, with_user
from fleet.db import Database
from fleet.db.queries import grafana as grafana_q

from .grafana_queries import PG_UID, Query, dashboards, expand_sql, queries

NOW = datetime.now(UTC).replace(microsecond=0)
START, END = NOW - timedelta(hours=1), NOW + timedelta(minutes=1)


async def _seed_vehicle(conn: asyncpg.Connection, tag: str) -> dict[str, Any]:
    """A vehicle with rows in every table the dashboards read (inserted as the schema owner)."""
    at = NOW - timedelta(minutes=10)
    vehicle_id = await conn.fetchval(
        "INSERT INTO vehicles (name, last_seen_at, last_sync_at, sync_status) VALUES ($1, $2, $2, 'ok') RETURNING id",
        f"truck-{tag}",
        at,
    )
    device_id = await conn.fetchval(
        "INSERT INTO devices (imei, vehicle_id, last_seen_at) VALUES ($1, $2, $3) RETURNING id",
        f"g{tag}"[:32],
        vehicle_id,
        at,
    )
    await conn.execute(
        "INSERT INTO channel_config (vehicle_id, channel_id, name, unit) VALUES ($1, 1, 'engine_rpm', 'rpm')",
        vehicle_id,
    )
    await conn.executemany(
        "INSERT INTO measurements (vehicle_id, channel_id, time, value) VALUES ($1, 1, $2, $3)",
        [(vehicle_id, at + timedelta(seconds=i), 1000.0 + i) for i in range(5)],
    )
    position_id = await conn.fetchval(
        """INSERT INTO positions (device_id, vehicle_id, record_index, device_time, latitude, longitude, speed, valid)
           VALUES ($1, $2, 1, $3, 55.7, 37.6, 42, true) RETURNING id""",
        device_id,
        vehicle_id,
        at,
    )
    await conn.execute(
        """INSERT INTO can_data (device_id, vehicle_id, position_id, time, record_index, signals)
           VALUES ($1, $2, $3, $4, 1,
                   '[{"name": "engine_speed", "value": 900, "unit": "rpm", "source": "j1939"}]')""",
        device_id,
        vehicle_id,
        position_id,
        at,
    )
    await conn.execute(
        """INSERT INTO alarms_log (vehicle_id, alarm_id, channel_id, level, message, raised_at)
           VALUES ($1, 7, 1, 'critical', $2, $3)""",
        vehicle_id,
        f"overheat {tag}",
        at,
    )
    await conn.execute(
        """INSERT INTO events (device_id, vehicle_id, time, event_code, event_type, description)
           VALUES ($1, $2, $3, 4, 'alarm', $4)""",
        device_id,
        vehicle_id,
        at,
        f"panic {tag}",
    )
    await conn.execute(
        """INSERT INTO sync_journal (vehicle_id, started_at, status, rows_written) VALUES ($1, $2, 'ok', 5)""",
        vehicle_id,
        at,
    )
    return {"vehicle_id": vehicle_id, "name": f"truck-{tag}"}


async def _user(conn: asyncpg.Connection, tag: str, role: str, status: str = "active") -> int:
    user_id: int = await conn.fetchval(
        "INSERT INTO users (email, role, status) VALUES ($1, $2, $3) RETURNING id",
        f"{tag}@grafana.test",
        role,
        status,
    )
    return user_id


@pytest.fixture
async def tenants(db: Database, owner_conn: asyncpg.Connection) -> dict[str, dict[str, Any]]:
    tag = uuid.uuid4().hex[:8]
    a = await _seed_vehicle(owner_conn, f"a{tag}")
    b = await _seed_vehicle(owner_conn, f"b{tag}")
    people = {
        "owner_a": (await _user(owner_conn, f"a{tag}", "owner"), a),
        "owner_b": (await _user(owner_conn, f"b{tag}", "owner"), b),
        "admin": (await _user(owner_conn, f"s{tag}", "superuser"), None),
        "pending": (await _user(owner_conn, f"p{tag}", "owner", "pending"), a),
    }
    result: dict[str, dict[str, Any]] = {}
    for key, (user_id, vehicle) in people.items():
        if vehicle is not None:
            await owner_conn.execute(
                "INSERT INTO vehicle_access (user_id, vehicle_id) VALUES ($1, $2)",
                user_id,
                vehicle["vehicle_id"],
            )
        # The login is minted the way the API mints it: by fleet_app, through the SECURITY DEFINER function.
        async with db.system() as conn:
            login = await grafana_q.grafana_login(conn, user_id)
        result[key] = {"user_id": user_id, "login": login, "email": f"{key[0]}{tag}@grafana.test"}
    result["a"], result["b"] = a, b
    return result


@pytest.fixture
async def grafana_conn(db: Database, test_settings: Settings) -> AsyncIterator[asyncpg.Connection]:
    assert db.owner_dsn is not None and test_settings.db_grafana_password is not None
    dsn = with_user(db.owner_dsn, "fleet_grafana", test_settings.db_grafana_password.get_secret_value())
    conn = await asyncpg.connect(dsn)
    try:
        yield conn
    finally:
        await conn.close()


def _pg_queries() -> list[Query]:
    found = [q for name in dashboards() for q in queries(name) if q.datasource == PG_UID]
    assert found, "the dashboards have PostgreSQL queries"
    return found


async def _run(conn: asyncpg.Connection, query: Query, login: str, vehicle_id: int) -> list[asyncpg.Record]:
    sql = expand_sql(
        query.text,
        login=login,
        variables={"vehicle_id": str(vehicle_id)},
        start=START,
        end=END,
        interval_ms=60_000,
    )
    rows: list[asyncpg.Record] = await conn.fetch(sql)
    return rows


def _mentions(rows: list[asyncpg.Record], vehicle: dict[str, Any]) -> bool:
    for row in rows:
        for key in ("id", "vehicle_id"):
            if key in row and row[key] == vehicle["vehicle_id"]:
                return True
        if any(isinstance(value, str) and vehicle["name"] in value for value in row.values()):
            return True
    return False


async def test_owner_gets_own_vehicle_and_nothing_of_a_foreign_one(
    tenants: dict[str, dict[str, Any]], grafana_conn: asyncpg.Connection
) -> None:
    own, foreign = tenants["a"], tenants["b"]
    login = tenants["owner_a"]["login"]
    for query in _pg_queries():
        mine = await _run(grafana_conn, query, login, own["vehicle_id"])
        assert mine, f"{query.dashboard} / {query.where}: no rows for the owner's own vehicle"
        assert not _mentions(mine, foreign), f"{query.dashboard} / {query.where} leaks the foreign vehicle"
        edited = await _run(grafana_conn, query, login, foreign["vehicle_id"])
        if query.uses_vehicle:
            assert edited == [], f"{query.dashboard} / {query.where}: rows for another owner's vehicle"
        else:
            assert not _mentions(edited, foreign), f"{query.dashboard} / {query.where} leaks"


async def test_vehicle_variable_lists_only_the_users_vehicles(
    tenants: dict[str, dict[str, Any]], grafana_conn: asyncpg.Connection
) -> None:
    (variable,) = [q for q in queries("vehicle-telemetry.json") if q.where == "$vehicle_id"]
    rows = await _run(grafana_conn, variable, tenants["owner_a"]["login"], 0)
    assert [(r["__value"], r["__text"]) for r in rows] == [(tenants["a"]["vehicle_id"], tenants["a"]["name"])]
    every = await _run(grafana_conn, variable, tenants["admin"]["login"], 0)
    ids = {r["__value"] for r in every}
    assert {tenants["a"]["vehicle_id"], tenants["b"]["vehicle_id"]} <= ids


async def test_superuser_sees_every_vehicle(
    tenants: dict[str, dict[str, Any]], grafana_conn: asyncpg.Connection
) -> None:
    for query in _pg_queries():
        rows = await _run(grafana_conn, query, tenants["admin"]["login"], tenants["b"]["vehicle_id"])
        assert rows, f"{query.dashboard} / {query.where}: a superuser sees nothing"


@pytest.mark.parametrize("who", ["pending", "email", "unknown", "grafana_admin", "injection"])
async def test_anyone_else_gets_nothing(
    who: str, tenants: dict[str, dict[str, Any]], grafana_conn: asyncpg.Connection
) -> None:
    login = {
        "pending": tenants["pending"]["login"],
        "email": tenants["owner_a"]["email"],  # a hand-made query naming a person, not their login
        "unknown": "u1-00000000000000000000000000000000",
        "grafana_admin": "admin",  # Grafana's own local admin
        "injection": "x' OR true OR '",
    }[who]
    for query in _pg_queries():
        sql_login = login.replace("'", "''") if who == "injection" else login
        rows = await _run(grafana_conn, query, sql_login, tenants["a"]["vehicle_id"])
        assert rows == [], f"{query.dashboard} / {query.where}: rows for login {who}"


async def test_login_is_opaque_stable_and_rotatable(db: Database, tenants: dict[str, dict[str, Any]]) -> None:
    user_id, login = tenants["owner_a"]["user_id"], tenants["owner_a"]["login"]
    assert login.startswith(f"u{user_id}-") and len(login) >= 30 and "@" not in login
    async with db.system() as conn:
        assert await grafana_q.grafana_login(conn, user_id) == login
        rotated = await grafana_q.grafana_login(conn, user_id, rotate=True)
    assert rotated != login


async def test_grafana_role_can_read_no_table(
    tenants: dict[str, dict[str, Any]], owner_conn: asyncpg.Connection, grafana_conn: asyncpg.Connection
) -> None:
    relations = await owner_conn.fetch(
        """SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
           WHERE n.nspname IN ('public', 'grafana') AND c.relkind IN ('r', 'p', 'v', 'm', 'f')"""
    )
    assert len(relations) > 20
    # A forged tenant context changes nothing: the role has no privilege to be filtered in the first place.
    await grafana_conn.execute("SELECT set_config('app.user_role', 'superuser', false)")
    for schema, name in relations:
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await grafana_conn.fetch(f'SELECT * FROM "{schema}"."{name}" LIMIT 1')
    for call in (
        f"SELECT grafana.enter('{tenants['admin']['login']}')",
        "SELECT * FROM grafana.visible_ids()",
        f"SELECT fleet_grafana_login({tenants['admin']['user_id']})",
        "SELECT fleet_ensure_partitions_ahead(2)",
    ):
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await grafana_conn.fetch(call)
    assert await grafana_conn.fetchval("SHOW default_transaction_read_only") == "on"
    assert await grafana_conn.fetchval("SHOW statement_timeout") == "30s"


async def test_every_function_the_role_may_call_is_reviewed(owner_conn: asyncpg.Connection) -> None:
    """Callable by fleet_grafana: the grafana.* API (definer rights, checks the login) or invoker-rights
    functions, which can read nothing the role cannot. A new SECURITY DEFINER function in `public` that
    forgets `REVOKE ... FROM PUBLIC` fails here."""
    rows = await owner_conn.fetch(
        """SELECT n.nspname, p.proname, p.prosecdef
           FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
           WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%'
             AND has_function_privilege('fleet_grafana', p.oid, 'EXECUTE')"""
    )
    definer = sorted(f"{schema}.{name}" for schema, name, secdef in rows if secdef)
    assert definer and all(name.startswith("grafana.") for name in definer), definer
    assert "grafana.enter" not in {f"{s}.{n}" for s, n, _ in rows}
