"""`POST|GET /api/v2/devices/{device_id}/commands`: typed bodies, who may, unsupported → 422, audit."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from httpx import ASGITransport

from fleet.api.app import create_app
from fleet.config import Settings
from fleet.db import Database
from fleet.ops.bus import InProcessBus
from fleet.runtime import Runtime

from .conftest import Account, make_account, make_fleet


@pytest.fixture
async def bus() -> InProcessBus:
    return InProcessBus()


async def client_for(settings: Settings, db: Database, bus: InProcessBus) -> AsyncIterator[httpx.AsyncClient]:
    runtime = Runtime(settings=settings, db=db, roles=["api"])
    runtime.extras["bus"] = bus
    app = create_app(settings, runtime=runtime)
    transport = ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://fleet") as client,
    ):
        yield client
    await runtime.cancel_tasks()


@pytest.fixture
async def strict(api_settings: Settings, db: Database, bus: InProcessBus) -> AsyncIterator[httpx.AsyncClient]:
    """The default: only superusers command trackers."""
    async for client in client_for(api_settings, db, bus):
        yield client


@pytest.fixture
async def open_to_owners(
    api_settings: Settings, db: Database, bus: InProcessBus
) -> AsyncIterator[httpx.AsyncClient]:
    settings = api_settings.model_copy(update={"device_commands_owners_allowed": True})
    async for client in client_for(settings, db, bus):
        yield client


async def test_superuser_queues_and_lists_a_command(
    strict: httpx.AsyncClient, db: Database, api_settings: Settings, admin: Account, bus: InProcessBus
) -> None:
    fleet = await make_fleet(db, await make_account(db, api_settings))
    events = await bus.subscribe("commands")
    answer = await strict.post(
        f"/api/v2/devices/{fleet.imei}/commands",
        json={"type": "output", "index": 1, "on": True},
        headers=admin.headers,
    )
    assert answer.status_code == 201, answer.text
    body = answer.json()
    assert (
        body["status"] == "queued"
        and body["type"] == "output"
        and body["payload"] == {"index": 1, "on": True}
    )
    assert body["device_id"] == fleet.device_id and body["vehicle_id"] == fleet.vehicle_id
    event = await events.get(within=5)
    assert event == {
        "type": "command",
        "command_id": body["id"],
        "device_id": fleet.device_id,
        "vehicle_id": fleet.vehicle_id,
        "status": "queued",
        "answer": None,
        "time": event["time"],
    }
    listed = (await strict.get(f"/api/v2/devices/{fleet.device_id}/commands", headers=admin.headers)).json()
    assert [item["id"] for item in listed["items"]] == [body["id"]] and listed["total"] == 1
    async with db.system() as conn:
        audit = await conn.fetchrow(
            "SELECT * FROM admin_audit_log WHERE action = 'device.command' AND target = $1",
            f"device:{fleet.device_id}",
        )
    assert audit is not None and audit["actor_id"] == admin.id and audit["details"]["type"] == "output"
    await events.close()


async def test_owners_are_refused_unless_the_setting_allows(
    strict: httpx.AsyncClient, db: Database, api_settings: Settings
) -> None:
    fleet = await make_fleet(db, await make_account(db, api_settings))
    answer = await strict.post(
        f"/api/v2/devices/{fleet.device_id}/commands", json={"type": "reboot"}, headers=fleet.owner.headers
    )
    assert answer.status_code == 403 and answer.json()["error"]["code"] == "forbidden"


async def test_an_owner_commands_only_their_own_trackers(
    open_to_owners: httpx.AsyncClient, db: Database, api_settings: Settings
) -> None:
    mine = await make_fleet(db, await make_account(db, api_settings))
    theirs = await make_fleet(db, await make_account(db, api_settings))
    own = await open_to_owners.post(
        f"/api/v2/devices/{mine.device_id}/commands", json={"type": "reboot"}, headers=mine.owner.headers
    )
    assert own.status_code == 201 and own.json()["requested_by"] == mine.owner.id
    other = await open_to_owners.post(
        f"/api/v2/devices/{theirs.device_id}/commands", json={"type": "reboot"}, headers=mine.owner.headers
    )
    assert other.status_code == 404  # another owner's tracker does not exist for this caller
    listed = await open_to_owners.get(f"/api/v2/devices/{theirs.imei}/commands", headers=mine.owner.headers)
    assert listed.status_code == 404
    async with db.system() as conn:
        count = await conn.fetchval(
            "SELECT count(*) FROM device_commands WHERE device_id = $1", theirs.device_id
        )
    assert count == 0


async def test_unsupported_commands_get_422_naming_the_protocol(
    strict: httpx.AsyncClient, db: Database, api_settings: Settings, admin: Account
) -> None:
    fleet = await make_fleet(db, await make_account(db, api_settings))
    async with db.system() as conn:
        await conn.execute("UPDATE devices SET protocol = 'teltonika' WHERE id = $1", fleet.device_id)
    answer = await strict.post(
        f"/api/v2/devices/{fleet.device_id}/commands",
        json={"type": "resend_archive", "from": "2026-01-01T00:00:00Z", "to": "2026-01-02T00:00:00Z"},
        headers=admin.headers,
    )
    assert answer.status_code == 422
    assert (
        answer.json()["error"]["code"] == "unsupported_command"
        and "teltonika" in answer.json()["error"]["message"]
    )
    wrong = await strict.post(
        f"/api/v2/devices/{fleet.device_id}/commands", json={"type": "launch"}, headers=admin.headers
    )
    assert wrong.status_code == 422
    navtelecom = await make_fleet(db, await make_account(db, api_settings))
    text = await strict.post(
        f"/api/v2/devices/{navtelecom.device_id}/commands",
        json={"type": "custom", "text": "getinfo"},
        headers=admin.headers,
    )
    assert text.status_code == 422 and "navtelecom" in text.json()["error"]["message"]
