"""The vehicle page: track and replay, charts from the downsampled history, alarms, raw frames, live values."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from fleet.agent.channels import simulated_channels
from fleet.agent.config import AgentConfig
from fleet.agent.testing import running_agent_handle
from fleet.config import Settings
from fleet.db import Database
from fleet.db.queries.users import grant_vehicle

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

ENGINE_RPM = 2  # the reference agent's channel id (fleet.agent.channels)
VEHICLE_WS = ("/ws/vehicles/{vehicle_id}/live", "helper live: WS /ws/vehicles/{id}/live")
EVENTS = ("/vehicles/{vehicle_id}/events", "helper live: GET /vehicles/{id}/events")


async def vehicle_with_history(db: Database, owner: Any) -> Any:
    vehicle = await make_vehicle(db, owner, f"Truck {uuid.uuid4().hex[:6]}")
    now = datetime.now(UTC)
    await add_track(db, vehicle, points=120, start=now - timedelta(minutes=30))
    async with db.system() as conn:
        await conn.execute(
            "INSERT INTO channel_config (vehicle_id, channel_id, name, unit) VALUES ($1, 1, 'engine_rpm', 'rpm')",
            vehicle.id,
        )
        await conn.executemany(
            "INSERT INTO measurements (vehicle_id, channel_id, time, value) VALUES ($1, 1, $2, $3)",
            [(vehicle.id, now - timedelta(seconds=15 * i), 900.0 + i) for i in range(100)],
        )
        await conn.execute(
            """INSERT INTO alarms_log (vehicle_id, alarm_id, level, message, raised_at)
               VALUES ($1, 1, 'critical', 'Coolant temperature high', $2)""",
            vehicle.id,
            now - timedelta(minutes=5),
        )
        await conn.execute(
            """INSERT INTO raw_frames (device_id, vehicle_id, received_at, frame_type, data, outcome, error)
               VALUES ($1, $2, $3, 'flex_archive', '\\x7e4101020304'::bytea, 'error', 'bad checksum')""",
            vehicle.device_id,
            vehicle.id,
            now - timedelta(minutes=1),
        )
    return vehicle


async def test_track_replay_charts_and_alarms(page: Any, web_server: WebServer, db: Database) -> None:
    owner = await make_user(db)
    vehicle = await vehicle_with_history(db, owner)
    await sign_in(page, web_server, owner, f"/ui/vehicles/{vehicle.id}")
    await page.get_by_role("heading", name=vehicle.name).wait_for()
    await page.locator("#vehicle-map[data-track-points='120']").wait_for()
    await page.locator("#charts[data-charts='3']").wait_for()  # speed, altitude, engine_rpm
    await page.locator("#charts figcaption", has_text="engine_rpm (rpm)").wait_for()
    await page.locator("#alarm-list", has_text="Coolant temperature high").wait_for()
    assert await page.locator("#raw-panel").is_hidden()  # raw frames are for superusers
    # Replay: the cursor travels the track on its own.
    await page.get_by_label("Replay speed").select_option("300")
    await page.get_by_role("button", name="Play").click()
    await page.wait_for_function(
        "() => Number(document.querySelector('#vehicle-map').dataset.replayIndex) > 5"
    )
    await page.get_by_role("button", name="Pause").click()
    # The slider is usable from the keyboard too.
    await page.get_by_label("Replay position").focus()
    await page.keyboard.press("End")
    await page.locator("#vehicle-map[data-replay-index='119']").wait_for()
    await screenshot(page, "vehicle")


async def test_superuser_sees_raw_frames(page: Any, web_server: WebServer, db: Database) -> None:
    admin = await make_user(db, role="superuser")
    vehicle = await vehicle_with_history(db, None)
    await sign_in(page, web_server, admin, f"/ui/vehicles/{vehicle.id}")
    raw = page.locator("#raw-frames tbody tr[data-outcome='error']")
    await raw.wait_for()
    text = await raw.inner_text()
    assert "7e4101020304" in text and "bad checksum" in text and vehicle.imei in text
    await screenshot(page, "vehicle-superuser")


async def test_recent_events(page: Any, web_server: WebServer, db: Database, web_settings: Settings) -> None:
    require_paths(web_settings, EVENTS)
    owner = await make_user(db)
    vehicle = await make_vehicle(db, owner, f"Truck {uuid.uuid4().hex[:6]}")
    # A text event through the ingest path before the page opens, another one while it is open (live).
    frame = f"~E{vehicle.imei},1,{int(time.time()) - 60},driver says hello~"
    assert await send_text_frames(web_server.device_port, [frame]) == [f"~EACK,{vehicle.imei}~"]
    await sign_in(page, web_server, owner, f"/ui/vehicles/{vehicle.id}")
    await page.locator("#event-list", has_text="driver says hello").wait_for()


async def test_live_value_changes(
    page: Any, web_server: WebServer, db: Database, web_settings: Settings
) -> None:
    require_paths(web_settings, VEHICLE_WS)
    owner = await make_user(db)
    vehicle = await make_vehicle(db, owner, f"Truck {uuid.uuid4().hex[:6]}")
    await sign_in(page, web_server, owner, f"/ui/vehicles/{vehicle.id}")
    await page.locator("#live-indicator[data-state='live']").wait_for()
    now = int(time.time())
    for age, latitude in ((1, 49.25), (0, 49.5)):  # two fixes, a second apart (same time = a retransmission)
        frame = f"~A{vehicle.imei},{now - age},{latitude},32.1,55.0,45,10,0.8~"
        assert await send_text_frames(web_server.device_port, [frame]) == [f"~AACK,{vehicle.imei}~"]
        await page.locator("dd[data-field='latitude']", has_text=str(latitude)).wait_for(timeout=10_000)
    assert await page.locator("#vehicle-status").get_attribute("data-status") == "online"
    await screenshot(page, "vehicle-live")
    # Going offline is visible: a socket refused for an account that was blocked meanwhile.


async def test_pull_vehicle_values_change_live(
    page: Any, web_server: WebServer, db: Database, web_settings: Settings, tmp_path: Path
) -> None:
    """A vehicle whose logger answers the Outbound API: its values reach the page through the live poller."""
    require_paths(web_settings, VEHICLE_WS)
    owner = await make_user(db)
    key = "web-test-agent-key-0123456789abcdef"
    # No simulated data: the test writes the logger's values itself, so it knows what the page must show.
    config = AgentConfig(api_key=key, db_path=tmp_path / "agent.db", channels=4, simulate=False)
    async with running_agent_handle(config) as agent:
        port = int(agent.base_url.rsplit(":", 1)[1])
        async with db.system() as conn:
            vehicle_id = await conn.fetchval(
                """INSERT INTO vehicles (name, vpn_ip, api_port, api_key)
                   VALUES ($1, '127.0.0.1', $2, $3) RETURNING id""",
                f"Logger {uuid.uuid4().hex[:6]}",
                port,
                key,
            )
            await grant_vehicle(conn, user_id=owner.id, vehicle_id=vehicle_id, granted_by=None)
        await agent.store.upsert_channels(simulated_channels(4))
        await agent.store.append_rows([(ENGINE_RPM, int(time.time() * 1000) - 1000, 1234.0)])
        await sign_in(page, web_server, owner, f"/ui/vehicles/{vehicle_id}")
        rpm = page.locator("#channel-values td[data-channel='engine_rpm']")
        await rpm.filter(has_text="1,234 rpm").wait_for(timeout=15_000)
        await agent.store.append_rows([(ENGINE_RPM, int(time.time() * 1000), 2345.5)])
        await rpm.filter(has_text="2,345.5 rpm").wait_for(timeout=15_000)  # the next poll, 2 s later
        assert await page.locator("#vehicle-status").get_attribute("data-status") == "online"
        await screenshot(page, "vehicle-pull")
