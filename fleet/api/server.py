"""The `api` role: uvicorn serving the app inside the `fleet serve` process."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Generator
from contextlib import asynccontextmanager, contextmanager
from typing import TYPE_CHECKING, Any

import structlog
import uvicorn

from fleet.api.http_protocol import guarded_protocol
from fleet.config import Settings
from fleet.errors import ConfigError

if TYPE_CHECKING:
    from fleet.runtime import Runtime

log = structlog.get_logger(__name__)

# uvicorn's WebSocket settings for the live streams (docs/LIVE.md). No per-message deflate: it would compress
# every message once per viewer (the fan-out sends one text to thousands) and keep ~40 KB of zlib state per
# connection; the messages are small anyway. Client messages are a token or a ping: 16 KiB is plenty.
WS_OPTIONS: dict[str, Any] = {
    "ws": "websockets-sansio",
    "ws_per_message_deflate": False,
    "ws_max_size": 16 * 1024,
    "ws_ping_interval": 20.0,
    "ws_ping_timeout": 20.0,
}


class _RoleServer(uvicorn.Server):
    """uvicorn without its own signal handling: `fleet serve` owns SIGTERM/SIGINT for every role."""

    @contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def server_config(app: Any, settings: Settings, *, host: str, port: int, **extra: Any) -> uvicorn.Config:
    """uvicorn's configuration for the API: its deadlines for slow and idle clients, no header of its own,
    WebSockets for the live streams (`WS_OPTIONS`)."""
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        http=guarded_protocol(settings.api_request_head_timeout_sec, settings.api_request_body_timeout_sec),
        timeout_keep_alive=settings.api_keepalive_timeout_sec,  # type: ignore[arg-type]
        log_config=None,
        access_log=False,
        proxy_headers=False,  # client addresses come from fleet's own trusted-proxy logic
        server_header=False,
        timeout_graceful_shutdown=10,
        **{**WS_OPTIONS, **extra},  # the live streams' WebSocket settings, unless a caller overrides them
    )


@asynccontextmanager
async def api_role(runtime: Runtime) -> AsyncIterator[None]:
    from fleet.api.app import create_app

    settings = runtime.settings
    config = server_config(
        create_app(settings, runtime=runtime), settings, host=settings.api_host, port=settings.api_port
    )
    # Bind here so that a busy port is a clear configuration error rather than uvicorn's sys.exit().
    try:
        sock = config.bind_socket()
    except SystemExit as err:
        raise ConfigError(f"the API cannot listen on {settings.api_host}:{settings.api_port}") from err
    server = _RoleServer(config)
    task = runtime.spawn(server.serve(sockets=[sock]), name="api")
    while not server.started:
        if task.done():
            await asyncio.gather(task, return_exceptions=True)
            raise ConfigError(f"the API could not listen on {settings.api_host}:{settings.api_port}")
        await asyncio.sleep(0.05)
    log.info("api_listening", url=f"http://{settings.api_host}:{settings.api_port}")
    try:
        yield
    finally:
        server.should_exit = True
        await asyncio.gather(task, return_exceptions=True)
