"""Headless Chromium for the web UI's tests and benchmark: Debian's browser, driven by Playwright.

Playwright's own browser downloads are never used (`executable_path`); only the server under test is
reachable from the page, so map tiles and anything else from outside fail at once, as without internet.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from typing import Any

CHROMIUM = os.environ.get("FLEET_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


def only_server(base_url: str) -> Callable[[Any], Awaitable[None]]:
    """A Playwright route handler letting requests to `base_url` through and refusing every other."""

    async def route(request_route: Any) -> None:
        if request_route.request.url.startswith(base_url):
            await request_route.continue_()
        else:
            await request_route.abort("internetdisconnected")

    return route
