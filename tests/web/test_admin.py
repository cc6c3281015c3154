"""The admin panel: approve a pending registration, block a user, the audit log with filters; owners are
kept out."""

from __future__ import annotations

import uuid
from typing import Any

from fleet.config import Settings
from fleet.db import Database

from .conftest import WebServer, make_user, require_paths, screenshot, sign_in


async def test_approve_pending_user_and_read_the_audit(
    page: Any, web_server: WebServer, db: Database
) -> None:
    admin = await make_user(db, role="superuser")
    pending = await make_user(db, status="pending")
    other = await make_user(db)
    await sign_in(page, web_server, admin, "/ui/admin")
    await page.locator("body[data-ready='1']").wait_for()
    row = page.locator(f"#pending-table tr[data-email='{pending.email}']")
    await row.wait_for()
    await screenshot(page, "admin")
    await row.get_by_role("button", name="Approve").click()
    await row.wait_for(state="detached")
    await page.locator(f"#users-table tr[data-email='{pending.email}'][data-status='active']").wait_for()
    async with db.system() as conn:
        assert await conn.fetchval("SELECT status FROM users WHERE id = $1", pending.id) == "active"

    page.once("dialog", lambda dialog: dialog.accept())  # "block ...?" confirmation
    await (
        page.locator(f"#users-table tr[data-email='{other.email}']")
        .get_by_role("button", name="Block")
        .click()
    )
    await page.locator(f"#users-table tr[data-email='{other.email}'][data-status='blocked']").wait_for()

    await page.get_by_label("Action").fill("user.")
    await page.get_by_label("Who").fill(admin.email)  # the suite's database is shared by other tests
    await page.get_by_role("button", name="Filter").click()
    await page.locator("#audit-table tr[data-action='user.block']").wait_for()
    actions = set(
        await page.locator("#audit-table tbody tr").evaluate_all("rows => rows.map(r => r.dataset.action)")
    )
    assert actions == {"user.approve", "user.block"}


async def test_owner_is_kept_out_of_admin(page: Any, web_server: WebServer, db: Database) -> None:
    owner = await make_user(db)
    await sign_in(page, web_server, owner)
    assert await page.locator("#nav-admin").is_hidden()
    await page.goto(f"{web_server.url}/ui/admin")
    await page.wait_for_url(f"{web_server.url}/ui/")


MANAGEMENT = (
    ("/admin/vehicles", "helper harden-api: POST /admin/vehicles"),
    ("/admin/vehicles/{vehicle_id}", "helper harden-api: PATCH/DELETE /admin/vehicles/{id}"),
    ("/admin/devices", "helper harden-api: GET/POST /admin/devices"),
    ("/admin/devices/{device_id}/link", "helper harden-api: POST /admin/devices/{id}/link"),
    ("/admin/devices/{device_id}/unlink", "helper harden-api: POST /admin/devices/{id}/unlink"),
    (
        "/admin/vehicles/{vehicle_id}/access/{user_id}",
        "helper harden-api: DELETE /admin/vehicles/{id}/access/{user}",
    ),
)


async def test_manage_vehicles_trackers_and_owners(
    page: Any, web_server: WebServer, db: Database, web_settings: Settings
) -> None:
    require_paths(web_settings, *MANAGEMENT)
    admin = await make_user(db, role="superuser")
    owner = await make_user(db)
    name = f"Bus {uuid.uuid4().hex[:6]}"
    imei = str(uuid.uuid4().int)[:15]
    await sign_in(page, web_server, admin, "/ui/admin")
    await page.locator("body[data-ready='1']").wait_for()
    # Create a vehicle, rename it.
    await page.get_by_label("Name", exact=True).first.fill(name)
    await page.get_by_role("button", name="Add vehicle").click()
    row = page.locator("#vehicles-table tbody tr", has_text=name)
    await row.wait_for()
    await row.get_by_role("button", name="Edit").click()
    await page.locator("#vf-name").fill(f"{name} renamed")
    await page.get_by_role("button", name="Save").click()
    row = page.locator("#vehicles-table tbody tr", has_text=f"{name} renamed")
    await row.wait_for()
    vehicle_id = int(await row.get_attribute("data-id") or 0)
    # Grant an owner access, who then sees it; revoke it again.
    await page.locator("#as-vehicle").select_option(str(vehicle_id))
    await page.locator("#as-email").fill(owner.email)
    await page.get_by_role("button", name="Grant access").click()
    await page.locator("#notice", has_text="Access granted").wait_for()
    async with db.system() as conn:
        assert await conn.fetchval(
            "SELECT count(*) FROM vehicle_access WHERE user_id = $1 AND vehicle_id = $2", owner.id, vehicle_id
        )
    await page.get_by_role("button", name="Revoke access").click()
    await page.locator("#notice", has_text="Access revoked").wait_for()
    # Register a tracker on the vehicle, unlink it, link it again.
    await page.locator("#tf-imei").fill(imei)
    await page.locator("#tf-vehicle").select_option(str(vehicle_id))
    await page.get_by_role("button", name="Register tracker").click()
    tracker = page.locator(f"#trackers-table tr[data-imei='{imei}']")
    await tracker.filter(has_text=f"{name} renamed").wait_for()
    await tracker.get_by_role("button", name="Unlink").click()
    await tracker.filter(has_text="(no vehicle)").wait_for()
    await tracker.get_by_role("combobox").select_option(str(vehicle_id))
    await tracker.get_by_role("button", name="Link", exact=True).click()
    await tracker.filter(has_text=f"{name} renamed").wait_for()
    await screenshot(page, "admin-managed")
    # Delete the vehicle (confirmed); its tracker stays, unlinked.
    page.once("dialog", lambda dialog: dialog.accept())
    await row.get_by_role("button", name="Delete").click()
    await row.wait_for(state="detached")
    async with db.system() as conn:
        assert await conn.fetchval("SELECT count(*) FROM vehicles WHERE id = $1", vehicle_id) == 0
    actions = {r["action"] for r in await _audit_actions(db, admin.id)}
    # Every action the panel took is in the audit log, as the management API records it.
    assert {
        "vehicle.create", "vehicle.edit", "vehicle.assign", "vehicle.delete", "device.register",
        "device.unlink", "device.link",
    } <= actions  # fmt: skip


async def _audit_actions(db: Database, actor_id: int) -> list[Any]:
    async with db.system() as conn:
        return list(await conn.fetch("SELECT action FROM admin_audit_log WHERE actor_id = $1", actor_id))
