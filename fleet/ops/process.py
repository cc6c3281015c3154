"""Process-wide services of `fleet serve`, started after the roles: hot reload and systemd integration.

* SIGHUP and config-file changes reload settings (`fleet.ops.reload`);
* the ingest listener, when this process runs it, follows reloaded flags and timeouts;
* under systemd (`Type=notify`), READY=1 once every role runs, a watchdog ping while the health check passes,
  STOPPING=1 on the way out.
"""

from __future__ import annotations

import signal
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import structlog

from fleet.config import Settings
from fleet.ops import systemd
from fleet.ops.healthcheck import api_base_url, probe
from fleet.ops.reload import SettingsReloader

if TYPE_CHECKING:
    from fleet.runtime import Runtime

log = structlog.get_logger(__name__)


def _follow_in_ingest(runtime: Runtime) -> None:
    """Point the ingest listener at reloaded settings (it reads them per connection, frame and sweep).

    Kept here rather than in `fleet.ingest` so the listener stays unaware of reloading: it already reads
    `service.settings` where it needs a value; the device registry caches the unknown-device policy.
    """
    service = runtime.extras.get("ingest")
    if service is None:
        return

    def apply(settings: Settings) -> None:
        service.settings = settings
        service.registry.set_policies(settings.unknown_device_policy, settings.unknown_device_policies)

    runtime.on_settings_change(apply)


@asynccontextmanager
async def process_services(
    runtime: Runtime, loader: Callable[[], Settings] | None, handles_signals: bool
) -> AsyncIterator[None]:
    """Start reload and systemd notification for a running server; undo on exit."""
    import asyncio

    loop = asyncio.get_running_loop()
    reloader: SettingsReloader | None = None
    if loader is not None:
        reloader = SettingsReloader(runtime, loader)
        runtime.reloader = reloader
        _follow_in_ingest(runtime)
        if handles_signals:
            loop.add_signal_handler(signal.SIGHUP, reloader.request, "sighup")
        if reloader.path is not None:
            runtime.run_job(reloader.watch_job())
        log.info("hot_reload_ready", config_file=reloader.state.config_file, signal="SIGHUP")
    interval = systemd.watchdog_interval()
    if interval is not None:
        runtime.run_job(systemd.watchdog_job(lambda: _healthy(runtime), interval))
    systemd.notify("READY=1\nSTATUS=serving " + ", ".join(runtime.roles))
    try:
        yield
    finally:
        systemd.notify("STOPPING=1")
        if reloader is not None:
            if handles_signals:
                loop.remove_signal_handler(signal.SIGHUP)
            await reloader.close()
            runtime.reloader = None


async def _healthy(runtime: Runtime) -> bool:
    if "api" in runtime.roles:
        problem = await probe(api_base_url(runtime.settings), within=5.0)
        if problem is not None:
            log.warning("watchdog_check_failed", reason=problem)
        return problem is None
    return await runtime.db.ping()
