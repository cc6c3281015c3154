"""Browser tests: the real server (ingest + API roles on ephemeral ports, the session's database) and one
headless Chromium (Debian's, driven by Playwright) shared by the whole session; a fresh browser context
per test. Screenshots land in `test-artifacts/screenshots/`.

Skipped, with the reason, only where Chromium or Playwright is not installed.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from fleet.config import Settings
from fleet.db import Database
from fleet.db.queries.users import create_user, grant_vehicle
from fleet.db.queries.vehicles import attach_device, create_vehicle
from fleet.runtime import Runtime, load_role
from fleet.web.pages import VENDOR_MARKER
from fleet.web.testing import CHROMIUM, CHROMIUM_ARGS, only_server

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "test-artifacts" / "screenshots"
# bcrypt cost 12 of this password, computed once per session (sign-in tests type it into the form).
PASSWORD = "web-test-password-1"

BROWSER_FIXTURES = {"browser", "web_server", "context", "page"}


def _why_no_browser() -> str | None:
    try:
        import playwright.async_api  # noqa: F401
    except ImportError:
        return "Playwright's Python package is not installed (it is in the dev extra: make venv)"
    if not (shutil.which(CHROMIUM) or Path(CHROMIUM).exists()):
        return f"Chromium is not installed at {CHROMIUM} (make system-deps installs Debian's chromium)"
    if not VENDOR_MARKER.exists():
        return "the web UI's browser libraries are not installed (make web)"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark the tests that drive a browser; skip them, with the reason, where one cannot run."""
    reason = _why_no_browser()
    here = Path(__file__).parent
    for item in items:
        uses_browser = BROWSER_FIXTURES & set(getattr(item, "fixturenames", ()))
        if Path(str(item.fspath)).is_relative_to(here) and uses_browser:
            item.add_marker(pytest.mark.browser)
            if reason is not None:
                item.add_marker(pytest.mark.skip(reason=reason))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class WebServer:
    """The server under test: where its API and its device port listen."""

    url: str
    device_port: int
    runtime: Runtime

    def ws_url(self, path: str) -> str:
        return self.url.replace("http://", "ws://") + path


@pytest.fixture(scope="session")
def web_settings(test_settings: Settings) -> Settings:
    update: dict[str, Any] = {"teltonika_port": 0} if "teltonika_port" in Settings.model_fields else {}
    return test_settings.model_copy(
        update={
            **update,
            "api_host": "127.0.0.1",
            "api_port": free_port(),
            "server_host": "127.0.0.1",
            "server_port": free_port(),
            "rate_limit_login_per_minute": 10_000,
            "rate_limit_register_per_hour": 10_000,
            "rate_limit_refresh_per_minute": 10_000,
            "rate_limit_api_per_minute": 100_000,
            "rate_limit_key_prefix": f"fleet-web-test:{uuid.uuid4().hex[:8]}",
            "unknown_device_policy": "register",
        }
    )


@pytest.fixture(scope="session")
async def web_server(web_settings: Settings, db: Database) -> AsyncIterator[WebServer]:
    """The ingest and API roles as `fleet serve` runs them, sharing the session database."""
    if _why_no_browser():
        pytest.skip(_why_no_browser() or "")
    runtime = Runtime(settings=web_settings, db=db, roles=["ingest", "api"])
    async with AsyncExitStack() as stack:
        stack.push_async_callback(runtime.cancel_tasks)
        for role in ("ingest", "api"):
            await stack.enter_async_context(load_role(role)(runtime))
        yield WebServer(f"http://127.0.0.1:{web_settings.api_port}", web_settings.server_port, runtime)


@pytest.fixture(scope="session")
async def browser() -> AsyncIterator[Any]:
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(executable_path=CHROMIUM, args=list(CHROMIUM_ARGS))
        try:
            yield chromium
        finally:
            await chromium.close()


class PageErrors:
    """Script errors and CSP refusals seen by a page; tests end by asserting there were none."""

    def __init__(self) -> None:
        self.errors: list[str] = []

    def console(self, message: Any) -> None:
        text = message.text
        if message.type == "error" and ("Content Security Policy" in text or "Refused to" in text):
            self.errors.append(text)

    def page_error(self, error: Any) -> None:
        self.errors.append(f"uncaught: {error}")


@pytest.fixture
async def context(browser: Any, web_server: WebServer) -> AsyncIterator[Any]:
    """A fresh browser profile (cookies, storage) per test. Only the server under test is reachable:
    map tiles and anything else from outside fail at once, as on a machine without internet."""
    ctx = await browser.new_context(viewport={"width": 1280, "height": 860}, locale="en-GB")
    await ctx.route("**/*", only_server(web_server.url))
    errors = PageErrors()
    ctx.on("page", lambda page: (page.on("console", errors.console), page.on("pageerror", errors.page_error)))
    ctx.page_errors = errors
    try:
        yield ctx
    finally:
        await ctx.close()
    assert errors.errors == [], errors.errors


@pytest.fixture
async def page(context: Any) -> Any:
    return await context.new_page()


async def screenshot(page: Any, name: str) -> Path:
    """Save a full-page screenshot as test-artifacts/screenshots/<name>.png."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    await page.screenshot(path=str(path), full_page=True)
    return path


@dataclass
class WebUser:
    id: int
    email: str
    role: str


_PASSWORD_HASH: dict[str, str] = {}


async def password_hash() -> str:
    if "h" not in _PASSWORD_HASH:
        from fleet.passwords import hash_password

        _PASSWORD_HASH["h"] = await hash_password(PASSWORD)
    return _PASSWORD_HASH["h"]


async def make_user(db: Database, *, role: str = "owner", status: str = "active") -> WebUser:
    email = f"{role}-{uuid.uuid4().hex[:10]}@example.com"
    async with db.system() as conn:
        user = await create_user(
            conn, email=email, password_hash=await password_hash(), role=role, status=status
        )
    return WebUser(user["id"], email, role)


@dataclass
class WebVehicle:
    id: int
    name: str
    device_id: int
    imei: str


async def make_vehicle(db: Database, owner: WebUser | None, name: str) -> WebVehicle:
    imei = str(uuid.uuid4().int)[:15]
    async with db.system() as conn:
        vehicle = await create_vehicle(conn, name=name)
        device = await attach_device(conn, imei=imei, vehicle_id=vehicle["id"])
        if owner is not None:
            await grant_vehicle(conn, user_id=owner.id, vehicle_id=vehicle["id"], granted_by=None)
    return WebVehicle(vehicle["id"], name, device["id"], imei)


async def add_track(
    db: Database, vehicle: WebVehicle, *, points: int, start: datetime, lat: float = 50.45, lon: float = 30.52
) -> None:
    """A track of `points` fixes 10 s apart heading north-east, and the device's last activity."""
    rows = [
        (
            vehicle.device_id,
            vehicle.id,
            i,
            start + timedelta(seconds=10 * i),
            True,
            lat + i * 2e-4,
            lon + i * 3e-4,
            float(30 + i % 50),
            150.0 + i,
        )
        for i in range(points)
    ]
    async with db.system() as conn:
        await conn.executemany(
            """INSERT INTO positions (device_id, vehicle_id, record_index, device_time, valid, latitude,
                                      longitude, speed, altitude) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)""",
            rows,
        )
        await conn.execute(
            "UPDATE devices SET last_seen_at = $2 WHERE id = $1", vehicle.device_id, rows[-1][3]
        )


async def sign_in(page: Any, server: WebServer, user: WebUser, path: str = "/ui/") -> None:
    """Sign in through the login form and land on `path`."""
    await page.goto(f"{server.url}/ui/login?next={path}")
    await page.get_by_label("E-mail").fill(user.email)
    await page.get_by_label("Password").fill(PASSWORD)
    await page.get_by_role("button", name="Sign in").click()
    await page.wait_for_url(f"{server.url}{path}")
    # The page renews its session on load; wait for that before the test reloads or leaves it.
    await page.locator("#user-email", has_text=user.email).wait_for()


async def send_text_frames(port: int, frames: list[str]) -> list[str]:
    """Send seed-000 text frames to the device port over one connection; answer the server's replies."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    replies = []
    try:
        for frame in frames:
            writer.write(frame.encode())
            await writer.drain()
            await asyncio.wait_for(reader.readuntil(b"~"), 10)  # the reply's opening tilde
            replies.append("~" + (await asyncio.wait_for(reader.readuntil(b"~"), 10)).decode())
    finally:
        writer.close()
        await writer.wait_closed()
    return replies


def served_paths(settings: Settings) -> set[str]:
    """Every HTTP and WebSocket path template the app routes (read from the app, not guessed)."""
    from fleet.api.app import create_app

    def walk(routes: list[Any], prefix: str) -> set[str]:
        paths: set[str] = set()
        for route in routes:
            included = getattr(route, "original_router", None)  # FastAPI >= 0.120 keeps routers nested
            if included is not None:
                paths |= walk(included.routes, prefix + route.include_context.prefix)
            elif getattr(route, "path", None):
                paths.add(prefix + route.path)
        return paths

    return walk(create_app(settings).routes, "")


def require_paths(settings: Settings, *needs: tuple[str, str]) -> None:
    """Skip the test unless the server has each (path, piece of work that brings it)."""
    paths = served_paths(settings)
    missing = [f"{path} (from {piece})" for path, piece in needs if path not in paths]
    if missing:
        pytest.skip("waits for " + "; ".join(missing))
