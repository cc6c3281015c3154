"""The page shells as HTML, without a browser: what depends on settings and on the reader's language."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from types import SimpleNamespace

import httpx
import pytest
from fastapi import FastAPI

from fleet.config import Settings
from fleet.web import pages


def shell_app(**settings: object) -> FastAPI:
    app = FastAPI()
    pages.install(app)
    app.state.api = SimpleNamespace(settings=Settings(**settings))  # only what the shells read
    return app


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    app = shell_app(google_client_id="client-1", grafana_url="https://grafana.example.com/")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://ui.test") as http:
        yield http


def page_config(html: str) -> dict[str, object]:
    match = re.search(r'<script type="application/json" id="page-config">(.*?)</script>', html, re.S)
    assert match is not None
    config: dict[str, object] = json.loads(match.group(1))
    return config


async def test_google_button_and_grafana_iframe_follow_the_settings(client: httpx.AsyncClient) -> None:
    login = await client.get("/ui/login")
    assert login.status_code == 200 and 'href="/auth/google"' in login.text
    vehicle = await client.get("/ui/vehicles/7")
    assert (
        'src="https://grafana.example.com/d/fleet-vehicle/vehicle-telemetry?var-vehicle_id=7&amp;kiosk"'
        in vehicle.text
    )
    assert page_config(vehicle.text)["vehicle_id"] == 7

    bare = shell_app()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(bare), base_url="http://ui.test") as http:
        assert "/auth/google" not in (await http.get("/ui/login")).text
        assert "<iframe" not in (await http.get("/ui/vehicles/7")).text


async def test_language_cookie_header_and_catalog(client: httpx.AsyncClient) -> None:
    uk = await client.get("/ui/", headers={"Accept-Language": "uk-UA,uk;q=0.9"})
    assert '<html lang="uk">' in uk.text and "Автопарк" in uk.text
    assert page_config(uk.text)["messages"]["nav.fleet"] == "Автопарк"  # type: ignore[index]
    client.cookies.set("fleet_lang", "ru")  # the remembered choice wins over the browser's preference
    ru = await client.get("/ui/", headers={"Accept-Language": "uk"})
    assert '<html lang="ru">' in ru.text
    assert "Cookie" in ru.headers["vary"]
    map_settings = page_config(ru.text)["map"]
    assert map_settings == {
        "tile_url": "https://tile.openstreetmap.org/{z}/{x}/{y}.png",
        "attribution": "© OpenStreetMap contributors",
        "max_zoom": 19,
    }


async def test_unknown_pages_and_ids(client: httpx.AsyncClient) -> None:
    missing = await client.get("/ui/nowhere")
    assert missing.status_code == 404 and missing.headers["content-type"].startswith("text/html")
    assert (await client.get("/ui/vehicles/0")).status_code == 422
    assert (await client.get("/ui", follow_redirects=False)).headers["location"] == "/ui/"
    static = await client.get("/ui/static/js/core.js")
    assert static.status_code == 200 and "javascript" in static.headers["content-type"]
