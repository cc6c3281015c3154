"""The health probe shared by `fleet check` and the systemd watchdog: GET /health of the running API."""

from __future__ import annotations

import httpx

from fleet.config import Settings


def api_base_url(settings: Settings) -> str:
    """Where the local API answers (a wildcard bind address is reached through the loopback)."""
    host = settings.api_host
    if host in ("0.0.0.0", ""):
        host = "127.0.0.1"
    elif host == "::":
        host = "[::1]"
    elif ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{settings.api_port}"


async def probe(base_url: str, within: float = 5.0) -> str | None:
    """None when `/health` answers 200, else why not (one line)."""
    try:
        async with httpx.AsyncClient(timeout=within) as client:
            response = await client.get(f"{base_url.rstrip('/')}/health")
    except httpx.HTTPError as err:
        return f"server not reachable at {base_url}: {type(err).__name__}: {err}"
    if response.status_code != 200:
        return f"server unhealthy at {base_url}: HTTP {response.status_code} {response.text[:200]}"
    return None
