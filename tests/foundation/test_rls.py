"""Row-level security, exercised exactly as the application connects (role fleet_app, Database.tenant)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from fleet.db import Database, Tenant

# Every table with RLS and the column that ties a row to a vehicle or a user.
VEHICLE_TABLES = {
    "vehicles": "id",
    "devices": "vehicle_id",
    "channel_config": "vehicle_id",
    "measurements": "vehicle_id",
    "positions": "vehicle_id",
    "raw_frames": "vehicle_id",
    "can_data": "vehicle_id",
    "events": "vehicle_id",
    "alarms_log": "vehicle_id",
    "sync_journal": "vehicle_id",
}
USER_TABLES = {
    "users": "id",
    "vehicle_access": "user_id",
    "oauth_accounts": "user_id",
    "refresh_tokens": "user_id",
    "api_keys": "user_id",
}
ADMIN_TABLES = ("revoked_tokens", "mail_outbox", "admin_audit_log")


async def _seed_tenant(conn: asyncpg.Connection, tag: str) -> dict[str, int]:
    """One owner with one vehicle and a row in every tenant table (inserted as the schema owner)."""
    now = datetime.now(UTC)
    user_id = await conn.fetchval(
        "INSERT INTO users (email, role, status) VALUES ($1, 'owner', 'active') RETURNING id",
        f"{tag}@rls.test",
    )
    vehicle_id = await conn.fetchval("INSERT INTO vehicles (name) VALUES ($1) RETURNING id", f"truck-{tag}")
    await conn.execute(
        "INSERT INTO vehicle_access (user_id, vehicle_id) VALUES ($1, $2)", user_id, vehicle_id
    )
    device_id = await conn.fetchval(
        "INSERT INTO devices (imei, vehicle_id) VALUES ($1, $2) RETURNING id", tag[:32], vehicle_id
    )
    await conn.execute(
        "INSERT INTO channel_config (vehicle_id, channel_id, name) VALUES ($1, 1, 'speed')", vehicle_id
    )
    await conn.execute(
        "INSERT INTO measurements (vehicle_id, channel_id, time, value) VALUES ($1, 1, $2, 42)",
        vehicle_id,
        now,
    )
    position_id = await conn.fetchval(
        """INSERT INTO positions (device_id, vehicle_id, record_index, device_time, latitude, longitude)
           VALUES ($1, $2, 1, $3, 55.7, 37.6) RETURNING id""",
        device_id,
        vehicle_id,
        now,
    )
    await conn.execute(
        "INSERT INTO raw_frames (device_id, vehicle_id, data, outcome) VALUES ($1, $2, '\\x7f', 'ok')",
        device_id,
        vehicle_id,
    )
    await conn.execute(
        """INSERT INTO can_data (device_id, vehicle_id, position_id, time, signals)
           VALUES ($1, $2, $3, $4, '[{"name": "engine_speed", "value": 900, "source": "test"}]')""",
        device_id,
        vehicle_id,
        position_id,
        now,
    )
    await conn.execute(
        "INSERT INTO events (device_id, vehicle_id, time, event_code) VALUES ($1, $2, $3, 1)",
        device_id,
        vehicle_id,
        now,
    )
    await conn.execute(
        "INSERT INTO alarms_log (vehicle_id, alarm_id, raised_at) VALUES ($1, 1, $2)", vehicle_id, now
    )
    await conn.execute(
        "INSERT INTO sync_journal (vehicle_id, started_at, status) VALUES ($1, $2, 'ok')", vehicle_id, now
    )
    await conn.execute(
        "INSERT INTO oauth_accounts (user_id, provider, subject) VALUES ($1, 'google', $2)", user_id, tag
    )
    await conn.execute(
        """INSERT INTO refresh_tokens (id, user_id, family_id, token_hash, expires_at)
           VALUES ($1, $2, $1, 'h', $3)""",
        f"rt-{tag}",
        user_id,
        now + timedelta(days=1),
    )
    await conn.execute(
        "INSERT INTO api_keys (user_id, name, prefix, key_hash) VALUES ($1, 'k', $2, 'h')",
        user_id,
        f"p-{tag}",
    )
    await conn.execute(
        "INSERT INTO revoked_tokens (jti, user_id, expires_at) VALUES ($1, $2, $3)",
        f"jti-{tag}",
        user_id,
        now + timedelta(days=1),
    )
    await conn.execute(
        "INSERT INTO mail_outbox (recipient, subject, body) VALUES ($1, 's', 'b')", f"{tag}@x.y"
    )
    await conn.execute("INSERT INTO admin_audit_log (actor_id, action) VALUES ($1, 'test')", user_id)
    return {"user": user_id, "vehicle": vehicle_id}


@pytest.fixture
async def two_tenants(owner_conn: asyncpg.Connection) -> tuple[dict[str, int], dict[str, int]]:
    tag = uuid.uuid4().hex[:10]
    return await _seed_tenant(owner_conn, f"a{tag}"), await _seed_tenant(owner_conn, f"b{tag}")


async def test_owner_sees_only_assigned_rows_in_every_table(
    db: Database, two_tenants: tuple[dict[str, int], dict[str, int]]
) -> None:
    a, b = two_tenants
    async with db.tenant(Tenant.owner(a["user"])) as conn:
        for table, column in VEHICLE_TABLES.items():
            seen = {r[0] for r in await conn.fetch(f"SELECT {column} FROM {table}")}
            assert seen == {a["vehicle"]}, table
        for table, column in USER_TABLES.items():
            seen = {r[0] for r in await conn.fetch(f"SELECT {column} FROM {table}")}
            assert seen == {a["user"]}, table
        for table in ADMIN_TABLES:
            assert await conn.fetchval(f"SELECT count(*) FROM {table}") == 0, table
        # Even a deliberate filter on the other tenant's id finds nothing.
        assert await conn.fetchval("SELECT count(*) FROM positions WHERE vehicle_id = $1", b["vehicle"]) == 0


async def test_no_context_means_no_rows(
    db: Database, two_tenants: tuple[dict[str, int], dict[str, int]]
) -> None:
    async with db.tenant(Tenant.anonymous()) as conn:
        for table in [*VEHICLE_TABLES, *USER_TABLES, *ADMIN_TABLES]:
            assert await conn.fetchval(f"SELECT count(*) FROM {table}") == 0, table
    # An owner role without a user id is no one either.
    async with db.tenant(Tenant(None, "owner")) as conn:
        assert await conn.fetchval("SELECT count(*) FROM vehicles") == 0


async def test_superuser_context_sees_everything(
    db: Database, two_tenants: tuple[dict[str, int], dict[str, int]]
) -> None:
    a, b = two_tenants
    async with db.system() as conn:
        for table, column in VEHICLE_TABLES.items():
            seen = {r[0] for r in await conn.fetch(f"SELECT {column} FROM {table}")}
            assert {a["vehicle"], b["vehicle"]} <= seen, table


async def test_owner_cannot_write_other_tenants_or_grant_itself(
    db: Database, two_tenants: tuple[dict[str, int], dict[str, int]]
) -> None:
    a, b = two_tenants
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        async with db.tenant(Tenant.owner(a["user"])) as conn:
            await conn.execute(
                "INSERT INTO vehicle_access (user_id, vehicle_id) VALUES ($1, $2)", a["user"], b["vehicle"]
            )
    async with db.tenant(Tenant.owner(a["user"])) as conn:
        status = await conn.execute("UPDATE vehicles SET name = 'stolen' WHERE id = $1", b["vehicle"])
        assert status == "UPDATE 0"
        assert (
            await conn.execute("DELETE FROM measurements WHERE vehicle_id = $1", b["vehicle"]) == "DELETE 0"
        )
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        async with db.tenant(Tenant.owner(a["user"])) as conn:
            await conn.execute("UPDATE users SET role = 'superuser' WHERE id = $1", a["user"])


async def test_context_is_transaction_local(
    db: Database, two_tenants: tuple[dict[str, int], dict[str, int]]
) -> None:
    async with db.system() as conn:
        assert await conn.fetchval("SELECT count(*) FROM vehicles") >= 2
    # The pool hands the same connections out again: the superuser context must be gone.
    for _ in range(5):
        async with db.tenant(Tenant.anonymous()) as conn:
            assert await conn.fetchval("SELECT count(*) FROM vehicles") == 0


async def test_app_role_cannot_bypass_rls(
    app_dsn: str, two_tenants: tuple[dict[str, int], dict[str, int]]
) -> None:
    conn = await asyncpg.connect(app_dsn)
    try:
        flags = await conn.fetchrow(
            "SELECT rolsuper, rolbypassrls, rolcreaterole, rolcreatedb FROM pg_roles WHERE rolname = current_user"
        )
        assert tuple(flags) == (False, False, False, False)
        # Without the setting: nothing, whatever the query says.
        assert await conn.fetchval("SELECT count(*) FROM positions") == 0
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute("ALTER TABLE positions DISABLE ROW LEVEL SECURITY")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute("ALTER TABLE vehicles NO FORCE ROW LEVEL SECURITY")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute("DROP POLICY vehicles_read ON vehicles")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute("SET ROLE postgres")
        # Partitions are read only through their RLS-protected parent (the ingest writer may append: 0010).
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.fetchval("SELECT count(*) FROM positions_default")
        await conn.execute("SET row_security = off")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.fetchval("SELECT count(*) FROM vehicles")
    finally:
        await conn.close()


async def test_grafana_role_is_read_only(
    owner_conn: asyncpg.Connection, two_tenants: tuple[dict[str, int], dict[str, int]]
) -> None:
    flags = await owner_conn.fetchrow(
        "SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = 'fleet_grafana'"
    )
    assert tuple(flags) == (False, False)
    privileges = await owner_conn.fetch(
        """SELECT table_schema, table_name, privilege_type FROM information_schema.role_table_grants
           WHERE grantee = 'fleet_grafana'"""
    )
    # No table at all: dashboards read through the grafana.* functions only (migration 0004).
    assert [tuple(row) for row in privileges] == []
    users_grant = await owner_conn.fetchval("SELECT has_table_privilege('fleet_grafana', 'users', 'SELECT')")
    assert users_grant is False


async def test_every_table_forces_rls(owner_conn: asyncpg.Connection) -> None:
    rows = await owner_conn.fetch(
        """SELECT c.relname, c.relrowsecurity, c.relforcerowsecurity
           FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
           WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') AND NOT c.relispartition
             AND c.relname <> 'alembic_version'"""
    )
    assert rows
    for name, enabled, forced in rows:
        assert enabled and forced, name
