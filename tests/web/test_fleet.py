"""The fleet page: the list, the map with its markers, search and filter, tenancy, live movement."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from fleet.config import Settings
from fleet.db import Database

from .conftest import (
    WebServer,
    add_track,
    make_user,
    make_vehicle,
    require_paths,
    screenshot,
    send_text_frames,
    sign_in,
)

LATEST = ("/vehicles/latest-positions", "helper live: GET /vehicles/latest-positions")
FLEET_WS = ("/ws/fleet", "helper live: WS /ws/fleet")


async def owner_with_fleet(db: Database, count: int = 3) -> tuple[Any, list[Any]]:
    owner = await make_user(db)
    tag = uuid.uuid4().hex[:6]
    vehicles = [await make_vehicle(db, owner, f"Van {tag}-{i}") for i in range(count)]
    now = datetime.now(UTC)
    for i, vehicle in enumerate(vehicles):
        await add_track(
            db, vehicle, points=20, start=now - timedelta(seconds=200), lat=50.4 + i * 0.3, lon=30.5 + i * 0.4
        )
    return owner, vehicles


async def test_owner_sees_only_own_vehicles(page: Any, web_server: WebServer, db: Database) -> None:
    owner, mine = await owner_with_fleet(db)
    other = await make_user(db)
    theirs = await make_vehicle(db, other, f"Secret {uuid.uuid4().hex[:6]}")
    await sign_in(page, web_server, owner)
    rows = page.locator("#fleet-list .vehicle-row")
    await rows.first.wait_for()
    names = await page.locator("#fleet-list .vehicle-name").all_inner_texts()
    assert sorted(names) == sorted(v.name for v in mine)
    assert theirs.name not in await page.content()
    # Search narrows the list, by name or IMEI; the status filter too.
    await page.get_by_label("Search").fill(mine[1].imei)
    await page.locator("#fleet-list .vehicle-row").first.wait_for()
    assert await page.locator("#fleet-list .vehicle-name").all_inner_texts() == [mine[1].name]
    await page.get_by_label("Search").fill("")
    await page.get_by_label("Status").select_option("offline")
    assert await page.locator("#fleet-list .vehicle-row").count() == 0  # all sent a fix seconds ago
    await page.get_by_label("Status").select_option("online")
    assert await page.locator("#fleet-list .vehicle-row").count() == len(mine)
    await screenshot(page, "fleet-list")
    # Another owner's vehicle page shows nothing of it.
    await page.goto(f"{web_server.url}/ui/vehicles/{theirs.id}")
    await page.get_by_role("heading", name="Vehicle not found").wait_for()
    assert theirs.name not in await page.content()


async def test_fleet_map_shows_every_marker(
    page: Any, web_server: WebServer, db: Database, web_settings: Settings
) -> None:
    require_paths(web_settings, LATEST)
    owner, mine = await owner_with_fleet(db)
    await sign_in(page, web_server, owner)
    fleet_map = page.locator("#fleet-map[data-rendered='1']")
    await fleet_map.wait_for()
    assert await fleet_map.get_attribute("data-points") == str(len(mine))
    await page.locator(".leaflet-control-attribution", has_text="OpenStreetMap").wait_for()
    await screenshot(page, "fleet")
    # A marker opens a popup with a link to its vehicle page.
    single = int(await fleet_map.get_attribute("data-singles") or 0)
    clusters = int(await fleet_map.get_attribute("data-clusters") or 0)
    assert single + clusters >= 1


async def test_fleet_markers_move_live(
    page: Any, web_server: WebServer, db: Database, web_settings: Settings
) -> None:
    require_paths(web_settings, LATEST, FLEET_WS)
    owner, mine = await owner_with_fleet(db, count=1)
    await sign_in(page, web_server, owner)
    await page.locator("#live-indicator[data-state='live']").wait_for()
    vehicle = mine[0]
    # A tracker position through the real ingest path (the seed's text dialect), then the map follows.
    frame = f"~A{vehicle.imei},{int(time.time())},51.5,31.3,40.0,90,9,0.9~"
    assert await send_text_frames(web_server.device_port, [frame]) == [f"~AACK,{vehicle.imei}~"]
    moved = page.locator(f"#fleet-map[data-last-position='{vehicle.id}:51.5,31.3']")
    await moved.wait_for(timeout=10_000)
