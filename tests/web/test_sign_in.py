"""Sign-in pages in a real browser: login, a session that survives a reload, logout, registration and the
waiting page of a pending owner, the language switch."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from fleet.config import Settings
from fleet.db import Database
from fleet.web.testing import only_server

from .conftest import PASSWORD, WebServer, make_user, require_paths, screenshot, sign_in


async def test_login_reload_and_logout(page: Any, web_server: WebServer, db: Database) -> None:
    user = await make_user(db)
    response = await page.goto(f"{web_server.url}/ui/login")
    # The pages run under the strict policy (INTERFACES §3); any violation fails the test (the `context` fixture).
    assert response is not None and "script-src 'self';" in response.headers["content-security-policy"]
    await page.goto(f"{web_server.url}/")
    await page.wait_for_url(f"{web_server.url}/ui/login*")  # no session: sent to sign in
    await screenshot(page, "login")
    await page.get_by_label("E-mail").fill(user.email)
    await page.get_by_label("Password").fill("wrong password")
    await page.get_by_role("button", name="Sign in").click()
    await page.get_by_role("alert").filter(has_text="Wrong e-mail or password").wait_for()
    await page.get_by_label("Password").fill(PASSWORD)
    await page.keyboard.press("Enter")  # the form works from the keyboard
    await page.wait_for_url(f"{web_server.url}/ui/")
    await page.locator("#user-email", has_text=user.email).wait_for()
    # The access token lives in memory only: nothing in storage, the refresh cookie is HttpOnly on /auth.
    assert await page.evaluate("localStorage.length + sessionStorage.length") == 0
    assert "fleet_refresh" not in await page.evaluate("document.cookie")
    cookies = {c["name"]: c for c in await page.context.cookies()}
    assert cookies["fleet_refresh"]["httpOnly"] and cookies["fleet_refresh"]["path"] == "/auth"

    await page.reload()
    await page.locator("#user-email", has_text=user.email).wait_for()
    assert page.url == f"{web_server.url}/ui/"

    await page.get_by_role("button", name="Sign out").click()
    await page.wait_for_url(f"{web_server.url}/ui/login")
    await page.goto(f"{web_server.url}/ui/")
    await page.wait_for_url(f"{web_server.url}/ui/login*")


async def test_refused_session_ends_cleanly(page: Any, web_server: WebServer, db: Database) -> None:
    user = await make_user(db)
    await sign_in(page, web_server, user)
    async with db.system() as conn:  # an administrator blocks the account meanwhile
        await conn.execute(
            "UPDATE users SET status = 'blocked', token_version = token_version + 1 WHERE id = $1", user.id
        )
        await conn.execute("UPDATE refresh_tokens SET revoked_at = now() WHERE user_id = $1", user.id)
    await page.reload()
    await page.wait_for_url(f"{web_server.url}/ui/login*")
    await page.get_by_label("E-mail").wait_for()


async def test_registration_waits_for_approval(page: Any, web_server: WebServer, db: Database) -> None:
    email = f"new-{id(page)}@example.com"
    await page.goto(f"{web_server.url}/ui/register")
    await page.get_by_label("Name").fill("New Owner")
    await page.get_by_label("E-mail").fill(email)
    await page.get_by_label("Password").fill(PASSWORD)
    await screenshot(page, "register")
    await page.get_by_role("button", name="Create account").click()
    await page.wait_for_url(f"{web_server.url}/ui/pending")
    await page.get_by_role("heading", name="Awaiting approval").wait_for()
    await page.locator("#pending-email", has_text=email).wait_for()
    await screenshot(page, "pending")
    # A pending owner who opens the fleet page is sent back to the waiting page.
    await page.goto(f"{web_server.url}/ui/")
    await page.wait_for_url(f"{web_server.url}/ui/pending")
    await page.locator("#pending-email", has_text=email).wait_for()  # its first check is done
    async with db.system() as conn:
        await conn.execute("UPDATE users SET status = 'active' WHERE email = $1", email)
    await page.get_by_role("button", name="Check again").click()
    await page.wait_for_url(f"{web_server.url}/ui/")


async def test_switch_to_ukrainian_is_remembered(page: Any, web_server: WebServer, db: Database) -> None:
    user = await make_user(db)
    await sign_in(page, web_server, user)
    await page.get_by_label("Language").select_option("uk")
    await page.get_by_role("heading", name="Автопарк").wait_for()
    await page.locator("#user-email", has_text=user.email).wait_for()  # session renewed after the reload
    assert await page.get_attribute("html", "lang") == "uk"
    await page.get_by_role("button", name="Вийти").wait_for()
    await screenshot(page, "fleet-uk")
    await page.reload()
    await page.get_by_role("heading", name="Автопарк").wait_for()
    await page.locator("#user-email", has_text=user.email).wait_for()
    await page.get_by_role("button", name="Вийти").click()  # every page, also before signing in
    await page.get_by_role("heading", name="Вхід").wait_for()
    await page.get_by_label("Мова").select_option("ru")
    await page.get_by_role("heading", name="Вход").wait_for()


async def test_google_button_only_when_configured(
    page: Any, web_server: WebServer, web_settings: Settings
) -> None:
    await page.goto(f"{web_server.url}/ui/login")
    await page.get_by_role("button", name="Sign in").wait_for()
    expected = 1 if web_settings.google_client_id else 0
    assert await page.locator("#google-signin").count() == expected


async def test_pages_fit_a_phone(browser: Any, web_server: WebServer, db: Database) -> None:
    """On a phone-sized screen no page scrolls sideways; screenshots of each are kept."""
    user = await make_user(db, role="superuser")
    context = await browser.new_context(
        viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True
    )
    await context.route("**/*", only_server(web_server.url))
    try:
        page = await context.new_page()
        await sign_in(page, web_server, user)
        for name, path in (("fleet", "/ui/"), ("admin", "/ui/admin"), ("login", "/ui/register")):
            await page.goto(f"{web_server.url}{path}")
            await page.locator("main").wait_for()
            await screenshot(page, f"phone-{name}")
            overflow = await page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
            assert overflow <= 1, f"{path} is {overflow}px wider than the phone"
    finally:
        await context.close()


async def test_sign_in_returns_to_grafana(
    page: Any, web_server: WebServer, db: Database, web_settings: Settings
) -> None:
    """Grafana's sign-in sends a reader without a session to the login page and expects them back."""
    require_paths(web_settings, ("/auth/grafana/login", "observability: GET /auth/grafana/login"))
    user = await make_user(db)
    back = quote("/auth/grafana/login?next=/grafana/d/fleet-vehicle/vehicle-telemetry", safe="/")
    await page.goto(f"{web_server.url}/ui/login?next={back}")
    await page.get_by_label("E-mail").fill(user.email)
    await page.get_by_label("Password").fill(PASSWORD)
    async with page.expect_request(lambda r: "/auth/grafana/login" in r.url):
        await page.get_by_role("button", name="Sign in").click()
    # Anything else in `next` is ignored: the reader lands on the fleet page.
    await page.goto(f"{web_server.url}/ui/login?next=https://evil.example/")
    await page.wait_for_url(f"{web_server.url}/ui/")
