"""Tenant isolation: another owner's vehicle or tracker is 404 on every endpoint, and RLS holds even when
a handler forgets to filter."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import pytest
from fastapi import APIRouter
from httpx import ASGITransport

from fleet.api.app import create_app
from fleet.api.deps import DbConn
from fleet.config import Settings
from fleet.db import Database, Tenant
from fleet.runtime import Runtime

from .conftest import Fleet, add_positions, make_account, make_fleet

VEHICLE_PATHS = [
    "/vehicles/{v}",
    "/vehicles/{v}/status",
    "/vehicles/{v}/alarms",
    "/vehicles/{v}/alarms?all=1",
    "/vehicles/{v}/positions",
    "/vehicles/{v}/positions?format=csv",
    "/vehicles/{v}/positions?format=gpx",
    "/vehicles/{v}/positions?bucket=1m",
    "/vehicles/{v}/measurements",
    "/vehicles/{v}/measurements?channel=1&bucket=1m",
]
DEVICE_PATHS = [
    "/api/v1/devices/{d}/telemetry",
    "/api/v1/devices/{d}/raw-frames",
    "/api/v2/devices/{d}/telemetry",
    "/api/v2/devices/{d}/can-data",
    "/api/v2/devices/{d}/raw-frames",
    "/api/devices/{d}/last",
    "/api/devices/{d}/can",
]


@pytest.fixture(scope="module")
async def two_owners(db: Database, api_settings: Settings) -> tuple[Fleet, Fleet]:
    a = await make_fleet(db, await make_account(db, api_settings))
    b = await make_fleet(db, await make_account(db, api_settings))
    start = datetime.now(UTC) - timedelta(hours=1)
    for fleet in (a, b):
        await add_positions(db, fleet, start, 5)
        async with db.system() as conn:
            await conn.execute(
                """INSERT INTO alarms_log (vehicle_id, alarm_id, level, message, raised_at)
                   VALUES ($1, 1, 'warning', 'low fuel', now())""",
                fleet.vehicle_id,
            )
            await conn.execute(
                """INSERT INTO can_data (device_id, vehicle_id, time, signals)
                   VALUES ($1, $2, now(), '[{"name": "engine_speed", "value": 900, "source": "j1939:61444"}]')""",
                fleet.device_id,
                fleet.vehicle_id,
            )
            await conn.execute(
                """INSERT INTO raw_frames (device_id, vehicle_id, data, outcome) VALUES ($1, $2, '\\x7e41', 'ok')""",
                fleet.device_id,
                fleet.vehicle_id,
            )
    return a, b


async def test_owner_gets_404_for_every_endpoint_of_another_owner(
    http: httpx.AsyncClient, two_owners: tuple[Fleet, Fleet]
) -> None:
    a, b = two_owners
    for path in VEHICLE_PATHS:
        own = await http.get(path.format(v=a.vehicle_id), headers=a.owner.headers)
        assert own.status_code == 200, (path, own.text)
        foreign = await http.get(path.format(v=b.vehicle_id), headers=a.owner.headers)
        assert foreign.status_code == 404, (path, foreign.text)
        assert foreign.json()["error"]["code"] == "not_found"
    for path in DEVICE_PATHS:
        for ref in (b.imei, str(b.device_id)):
            foreign = await http.get(path.format(d=ref), headers=a.owner.headers)
            assert foreign.status_code == 404, (path, foreign.text)
        own = await http.get(path.format(d=a.imei), headers=a.owner.headers)
        assert own.status_code == 200, (path, own.text)
    assign = await http.post(
        f"/admin/vehicles/{b.vehicle_id}/assign", json={"user_id": a.owner.id}, headers=a.owner.headers
    )
    assert assign.status_code == 403


async def test_lists_show_only_own_rows(http: httpx.AsyncClient, two_owners: tuple[Fleet, Fleet]) -> None:
    a, _b = two_owners
    vehicles = (await http.get("/vehicles", headers=a.owner.headers)).json()
    assert [v["id"] for v in vehicles["items"]] == [a.vehicle_id]
    for path in ("/api/v2/devices", "/api/v1/devices", "/api/devices"):
        devices = (await http.get(path, headers=a.owner.headers)).json()
        assert [d["imei"] for d in devices["items"]] == [a.imei], path
    frames = (await http.get("/api/v2/raw-frames", headers=a.owner.headers)).json()
    assert {f["device_id"] for f in frames["items"]} == {a.device_id}
    stats = (await http.get("/api/v2/stats", headers=a.owner.headers)).json()
    assert stats["vehicles"] == 1 and stats["devices"] == 1 and stats["positions_24h"] == 5


async def test_rls_filters_a_handler_that_forgets_to(
    db: Database, api_settings: Settings, two_owners: tuple[Fleet, Fleet]
) -> None:
    """A deliberately careless route (no WHERE at all) still sees only the caller's rows."""
    a, b = two_owners
    careless = APIRouter()

    @careless.get("/careless")
    async def everything(conn: DbConn) -> dict[str, list[int]]:
        return {
            table: [r[0] for r in await conn.fetch(f"SELECT DISTINCT vehicle_id FROM {table}")]
            for table in ("positions", "alarms_log", "can_data", "raw_frames", "devices")
        } | {
            "vehicles": [r[0] for r in await conn.fetch("SELECT id FROM vehicles")],
            "users": [r[0] for r in await conn.fetch("SELECT id FROM users")],
        }

    app = create_app(api_settings, runtime=Runtime(settings=api_settings, db=db, roles=["api"]))
    app.include_router(careless)
    async with app.router.lifespan_context(app):
        transport = ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://fleet") as client:
            seen = (await client.get("/careless", headers=a.owner.headers)).json()
    for table, ids in seen.items():
        if table == "users":
            assert ids == [a.owner.id]
        else:
            assert ids == [a.vehicle_id], table

    # The same unfiltered statements straight on the pool: only the tenant context decides.
    async with db.tenant(Tenant.owner(b.owner.id)) as conn:
        assert [r[0] for r in await conn.fetch("SELECT DISTINCT vehicle_id FROM positions")] == [b.vehicle_id]
    async with db.tenant(Tenant.anonymous()) as conn:
        assert await conn.fetchval("SELECT count(*) FROM positions") == 0


async def test_owner_cannot_write_fleet_tables_even_through_sql(
    db: Database, two_owners: tuple[Fleet, Fleet]
) -> None:
    import asyncpg

    a, b = two_owners
    async with db.tenant(Tenant.owner(a.owner.id)) as conn:
        status = await conn.execute(
            "INSERT INTO vehicle_access (user_id, vehicle_id) SELECT $1, $2 WHERE false",
            a.owner.id,
            b.vehicle_id,
        )
        assert status == "INSERT 0 0"
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        async with db.tenant(Tenant.owner(a.owner.id)) as conn:
            await conn.execute(
                "INSERT INTO vehicle_access (user_id, vehicle_id) VALUES ($1, $2)", a.owner.id, b.vehicle_id
            )
