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


class _RoleServer(uvicorn.Server):
    """uvicorn without its own signal handling: `fleet serve` owns SIGTERM/SIGINT for every role."""

    @contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def server_config(app: Any, settings: Settings, *, host: str, port: int, **extra: Any) -> uvicorn.Config:
    """uvicorn's configuration for the API: its deadlines for slow and idle clients, no header of its own."""
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
        **extra,
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
