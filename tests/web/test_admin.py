"""The admin panel: approve a pending registration, block a user, the audit log with filters; owners are
kept out."""

from __future__ import annotations

from typing import Any

from fleet.db import Database

from .conftest import WebServer, make_user, screenshot, sign_in


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
    await page.get_by_role("button", name="Filter").click()
    await page.locator("#audit-table tr[data-action='user.block']").wait_for()
    actions = set(
        await page.locator("#audit-table tbody tr").evaluate_all("rows => rows.map(r => r.dataset.action)")
    )
    assert {"user.approve", "user.block"} <= actions and all(a.startswith("user.") for a in actions)


async def test_owner_is_kept_out_of_admin(page: Any, web_server: WebServer, db: Database) -> None:
    owner = await make_user(db)
    await sign_in(page, web_server, owner)
    assert await page.locator("#nav-admin").is_hidden()
    await page.goto(f"{web_server.url}/ui/admin")
    await page.wait_for_url(f"{web_server.url}/ui/")
