"""`/docs` and `/redoc` render in a real browser with no network but this server (issue 15: they loaded their
JavaScript from a CDN and fonts from Google, so an offline server showed blank pages)."""

from __future__ import annotations

import shutil
from urllib.parse import urlsplit

import httpx
import pytest

from .conftest import LiveServer

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


async def test_docs_pages_reference_only_local_assets(http: httpx.AsyncClient) -> None:
    for page in ("/docs", "/redoc"):
        html = (await http.get(page)).text
        assert "http://" not in html and "https://" not in html, page
        assert "<script>" not in html  # no inline script: the page's CSP allows 'self' only
    for asset in (
        "swagger-ui-bundle.js",
        "swagger-ui.css",
        "redoc.standalone.js",
        "swagger-init.js",
        "favicon.png",
    ):
        answer = await http.get(f"/docs/assets/{asset}")
        assert answer.status_code == 200 and len(answer.content) > 100, asset
    assert (await http.get("/docs/assets/..%2Fdocs.py")).status_code == 404
    assert (await http.get("/docs/assets/missing.js")).status_code == 404


@pytest.mark.browser
async def test_docs_render_offline_in_chromium(live_api: LiveServer) -> None:
    playwright_api = pytest.importorskip("playwright.async_api")
    if not shutil.which(CHROMIUM):
        pytest.skip("chromium is not installed (tools/system-deps.sh installs it)")
    foreign: list[str] = []
    problems: list[str] = []
    async with playwright_api.async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = await browser.new_page()

            async def only_this_server(route: object) -> None:
                url = route.request.url  # type: ignore[attr-defined]
                parts = urlsplit(url)
                if parts.scheme in ("data", "blob") or parts.port == live_api.port:
                    await route.continue_()  # type: ignore[attr-defined]
                else:
                    foreign.append(url)
                    await route.abort()  # type: ignore[attr-defined]

            await page.route("**/*", only_this_server)
            page.on("console", lambda m: problems.append(m.text) if m.type in ("error", "warning") else None)
            page.on("pageerror", lambda e: problems.append(str(e)))

            await page.goto(f"{live_api.url}/docs")
            await page.wait_for_selector(".opblock-summary-path", timeout=30_000)
            paths = await page.locator(".opblock-summary-path").all_inner_texts()
            assert any(p.strip().startswith("/vehicles") for p in paths)
            assert "/admin/devices" in " ".join(paths)

            await page.goto(f"{live_api.url}/redoc")
            await page.wait_for_selector("h1", timeout=30_000)
            assert "Fleet Server API" in await page.locator("h1").first.inner_text()
            # An operation summary in ReDoc's menu: the spec was fetched and rendered.
            await page.wait_for_function(
                "document.body.innerText.includes('Pre-register a tracker')", timeout=30_000
            )
        finally:
            await browser.close()
    assert foreign == []
    # ReDoc's menu footer always references Redocly's logo on their CDN; the page's policy blocks it before
    # any request is made (the footer keeps its text). Nothing else may be refused.
    blocked = [p for p in problems if "Content Security Policy" in p or "Refused to" in p]
    assert all("cdn.redoc.ly/redoc/logo-mini.svg" in p for p in blocked), blocked
