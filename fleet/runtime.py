"""The process runtime: shared resources and the roles `fleet serve` runs.

A role is a factory `role(runtime) -> AsyncContextManager[None]`: entering it starts the role's listeners
and tasks, leaving it stops them gracefully (stop accepting, finish in-flight work). Roles are entered in
the order of `ROLES` and left in reverse, inside one `AsyncExitStack`, so `fleet serve` has a single
place that owns every resource. A new role plugs in by adding one line to `ROLES`.
"""

from __future__ import annotations

import asyncio
import gc
import importlib
import signal
import threading
from collections.abc import Callable, Coroutine, Iterator
from contextlib import AbstractAsyncContextManager, AsyncExitStack, contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import structlog

from fleet.config import Settings
from fleet.db import Database
from fleet.db.server_record import remove_record, write_record
from fleet.errors import ConfigError
from fleet.ops.jobs import JobRegistry, PeriodicJob

if TYPE_CHECKING:
    from fleet.ops.backup.status import BackupMonitor
    from fleet.ops.reload import SettingsReloader

log = structlog.get_logger(__name__)

RoleFactory = Callable[["Runtime"], AbstractAsyncContextManager[None]]
SettingsListener = Callable[[Settings], None]

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
# Cyclic-GC generation-0 threshold while the server runs (CPython's default is 700 allocations). The
# roles allocate heavily but acyclically (rows, frames, request objects freed by reference counting), so
# the default only makes full collections frequent - and a full collection scans every object of every
# open device connection, stalling the event loop (measured: 70-90 ms pauses in socket callbacks under
# ingest load, gone with this threshold).
GC_GEN0_THRESHOLD = 50_000


@contextmanager
def gc_tuned_for_serving() -> Iterator[None]:
    """Freeze the start-up heap out of collections and raise the gen-0 threshold; restore on exit."""
    previous = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(max(previous[0], GC_GEN0_THRESHOLD), *previous[1:])
    try:
        yield
    finally:
        gc.set_threshold(*previous)
        gc.unfreeze()


# Role name → "module:factory". Order matters: storage-side roles start before the API.
ROLES: dict[str, str] = {
    "maintenance": "fleet.ops.maintenance:maintenance_role",
    "ingest": "fleet.ingest.role:ingest_role",
    "sync": "fleet.sync.role:sync_role",
    "api": "fleet.api.server:api_role",
}


def load_role(name: str) -> RoleFactory:
    try:
        target = ROLES[name]
    except KeyError as err:
        raise ConfigError(f"unknown role {name!r}; known roles: all, {', '.join(ROLES)}") from err
    module_name, _, attr = target.partition(":")
    factory: RoleFactory = getattr(importlib.import_module(module_name), attr)
    return factory


def resolve_roles(requested: list[str] | None) -> list[str]:
    """Expand `all` and validate names, keeping the canonical start order."""
    wanted = set(requested or ["all"])
    if "all" in wanted:
        return list(ROLES)
    unknown = sorted(wanted - set(ROLES))
    if unknown:
        raise ConfigError(f"unknown role(s) {', '.join(unknown)}; known roles: all, {', '.join(ROLES)}")
    return [name for name in ROLES if name in wanted]


@dataclass
class Runtime:
    """What every role shares: settings, the database, and the process's background tasks."""

    settings: Settings
    db: Database
    roles: list[str] = field(default_factory=list)
    extras: dict[str, Any] = field(default_factory=dict)
    jobs: JobRegistry = field(default_factory=JobRegistry)
    reloader: SettingsReloader | None = None  # set by `fleet serve` (hot reload of settings)
    backup_monitor: BackupMonitor | None = None  # set by the API (last backup, for /ready and metrics)
    _tasks: set[asyncio.Task[Any]] = field(default_factory=set)
    _settings_listeners: list[SettingsListener] = field(default_factory=list)

    def run_job(self, job: PeriodicJob) -> asyncio.Task[Any]:
        """Register a periodic job (so /ready and metrics see it) and run it as a background task."""
        self.jobs.add(job)
        task = self.spawn(job.run(), name=f"job:{job.name}")
        task.add_done_callback(lambda _: self.jobs.remove(job))
        return task

    def on_settings_change(self, listener: SettingsListener) -> Callable[[], None]:
        """Call `listener(new_settings)` after every hot reload; returns the unsubscribe function."""
        self._settings_listeners.append(listener)
        return lambda: (
            self._settings_listeners.remove(listener) if listener in self._settings_listeners else None
        )

    def apply_settings(self, settings: Settings) -> None:
        """Swap the settings object (one assignment: readers see the old or the new one, never a mix)
        and tell every listener; a failing listener is logged and does not stop the others."""
        self.settings = settings
        for listener in list(self._settings_listeners):
            try:
                listener(settings)
            except Exception:
                log.exception("settings_listener_failed", listener=getattr(listener, "__qualname__", "?"))

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        """Start a background task the runtime keeps a reference to and cancels on shutdown."""
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background_task_failed", task=task.get_name(), exc_info=task.exception())

    async def cancel_tasks(self, grace: float = 5.0) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=grace)


async def serve(
    settings: Settings,
    roles: list[str] | None = None,
    on_ready: Callable[[Runtime], Coroutine[Any, Any, None]] | None = None,
    settings_loader: Callable[[], Settings] | None = None,
) -> None:
    """Run the requested roles until SIGTERM/SIGINT, then shut down in reverse order.

    With `settings_loader`, settings are reloaded by it on SIGHUP and when the config file changes.
    """
    from fleet.ops.process import process_services
    from fleet.supervisor import notify_ready, supervised

    names = resolve_roles(roles)
    factories = [load_role(name) for name in names]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    # Signals reach only the main thread; `serve` run from another thread (tests) is stopped by its caller.
    handles_signals = threading.current_thread() is threading.main_thread()
    if handles_signals:
        for signum in STOP_SIGNALS:
            loop.add_signal_handler(signum, stop.set)
    db = Database(settings)
    runtime = Runtime(settings=settings, db=db, roles=names)
    async with AsyncExitStack() as stack:
        await db.start()
        stack.push_async_callback(db.close)
        # Tells CLI commands in this DATA_DIR which database the server uses (fleet.db.server_record);
        # under `fleet serve --workers` the supervisor keeps that record, not each child.
        if not supervised():
            stack.callback(remove_record, write_record(settings))
        stack.push_async_callback(runtime.cancel_tasks)
        for name, factory in zip(names, factories, strict=True):
            await stack.enter_async_context(factory(runtime))
            log.info("role_started", role=name)
        await stack.enter_async_context(process_services(runtime, settings_loader, handles_signals))
        log.info("server_ready", roles=names)
        stack.enter_context(gc_tuned_for_serving())
        if on_ready is not None:
            await on_ready(runtime)
        notify_ready()
        await stop.wait()
        log.info("shutdown_started")
    if handles_signals:
        for signum in STOP_SIGNALS:
            loop.remove_signal_handler(signum)
    log.info("shutdown_complete")
