"""Hot reload of settings: on SIGHUP and when the config file changes, without a restart.

The file (and the environment, which still wins) is read and validated as at start. An invalid file is
refused with the validation message and the running settings stay. Of the changed keys, those in
`HOT_SETTINGS` take effect at once: a new settings object is built from the running one plus those keys and
swapped in with one assignment (`Runtime.apply_settings`), then the subscribers that cache a value (log
level, rate limiter, sync service, ingest listener) are told. Every other changed key is named in the log as
needing a restart and keeps its running value, so what `GET /admin/settings` shows is what runs. Every
applied change is logged and written to the admin audit log. Device connections are never touched: the
ingest listener only reads the new object for new connections and frames.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog
from prometheus_client import Counter
from pydantic import SecretStr

from fleet.config import Settings, config_file_path, read_config_file
from fleet.errors import FleetError
from fleet.logging import set_level
from fleet.ops.jobs import PeriodicJob

if TYPE_CHECKING:
    from fleet.runtime import Runtime

log = structlog.get_logger(__name__)

CONFIG_RELOADS = Counter(
    "fleet_config_reloads_total", "Configuration reloads, by result (applied, unchanged, refused)", ["result"]
)

# Settings whose new value is used without a restart, because every reader takes it from the current
# settings object when it needs it (or a subscriber below re-reads it). Keep this list honest: a key belongs
# here only when the code path that uses it has been checked.
HOT_SETTINGS: frozenset[str] = frozenset(
    {
        "log_level",
        # rate limits (RateLimiter.apply_settings)
        "rate_limit_login_per_minute",
        "rate_limit_register_per_hour",
        "rate_limit_refresh_per_minute",
        "rate_limit_api_per_minute",
        # feature flags
        "text_dialect_enabled",  # new connections
        "unknown_device_policy",  # next handshake of an unknown IMEI
        "ingest_store_raw_frames",  # next frame
        # device-port hardening: read per connection, identification or stored frame
        "unknown_device_policies",
        "ingest_allowed_cidrs",
        "ingest_max_connections_per_address",
        "ingest_max_unidentified_per_address",
        "ingest_takeover_silence_sec",
        "ingest_raw_excerpt_bytes",
        "ingest_stranger_raw_bytes_per_hour",
        # behind a balancer: read for each new connection (Admission.admit, DeviceConnection._proxy_header)
        "ingest_proxy_protocol",
        "ingest_proxy_trusted_cidrs",
        "registration_open",
        "google_sign_in",
        # timeouts
        "ingest_idle_timeout_sec",
        "ingest_handshake_timeout_sec",
        "pull_timeout_sec",  # the per-vehicle deadline (httpx's per-read timeout keeps its start value)
        "access_token_ttl_sec",
        "refresh_token_ttl_days",
        # sync cadence and windows
        "sync_interval_sec",
        "pull_window_sec",
        "sync_backoff_max_sec",
        "sync_max_rows_per_request",
        # retention and backups (read at each maintenance run)
        "position_retention_days",
        "measurement_retention_days",
        "raw_frame_retention_days",
        "audit_log_retention_days",
        "sync_journal_retention_days",
        "mail_retention_days",
        "device_command_retention_days",
        "retention_batch_size",
        "backup_keep",
        "backup_interval_hours",
        "backup_max_age_hours",
        "backup_compress_level",
        # metrics access
        "metrics_allow_public",
        "metrics_api_key",
        "config_watch_interval_sec",
        # live view (LiveHub.apply_settings: intervals at once, limits and queue sizes for new viewers)
        "live_poll_interval_sec",
        "live_heartbeat_sec",
        "live_auth_timeout_sec",
        "live_queue_max",
        "live_fleet_interval_sec",
        "live_fleet_batch_sec",
        "live_access_refresh_sec",
        "live_status_sweep_sec",
        "live_max_viewers",
        "live_max_viewers_per_user",
        "tracker_alarm_active_sec",
    }
)


def public_value(value: Any) -> Any:
    """A setting's value as JSON, secrets masked."""
    if isinstance(value, SecretStr):
        return "***" if value.get_secret_value() else None
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, list | tuple):
        return [public_value(v) for v in value]
    return value


def _comparable(value: Any) -> Any:
    return value.get_secret_value() if isinstance(value, SecretStr) else value


def diff_settings(old: Settings, new: Settings) -> dict[str, tuple[Any, Any]]:
    """Changed fields: name → (old, new)."""
    return {
        name: (getattr(old, name), getattr(new, name))
        for name in Settings.model_fields
        if _comparable(getattr(old, name)) != _comparable(getattr(new, name))
    }


@dataclass
class ReloadOutcome:
    """What one reload did."""

    result: str  # applied | unchanged | refused
    applied: dict[str, tuple[Any, Any]] = field(default_factory=dict)
    needs_restart: list[str] = field(default_factory=list)
    error: str | None = None


@dataclass
class ReloadState:
    """Shown by `GET /admin/settings`."""

    config_file: str | None = None
    last_reload_at: datetime | None = None
    last_result: str | None = None
    last_error: str | None = None
    pending_restart: dict[str, Any] = field(default_factory=dict)  # name → configured value


class SettingsReloader:
    """Reload settings for a runtime on request (SIGHUP, file change, or a caller)."""

    def __init__(
        self,
        runtime: Runtime,
        loader: Callable[[], Settings],
        config_path: Path | None = None,
    ) -> None:
        self.runtime = runtime
        self._loader = loader
        self.path = config_path if config_path is not None else config_file_path()
        self.state = ReloadState(config_file=str(self.path) if self.path else None)
        self._lock = asyncio.Lock()
        self._signature = self._stat()
        self._file_values = self._read_file_values()
        self._pending: set[asyncio.Task[Any]] = set()
        runtime.on_settings_change(lambda s: set_level(s.log_level))

    # --- triggers ----------------------------------------------------------------------------------------
    def request(self, source: str) -> None:
        """Schedule a reload (safe to call from a signal handler)."""
        task = asyncio.get_running_loop().create_task(self.reload(source), name=f"reload:{source}")
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    def watch_job(self) -> PeriodicJob:
        """The job that reloads when the config file changes (a stat per interval: works on every filesystem,
        bind mounts and symlink swaps included, where change notifications may not)."""
        return PeriodicJob(
            "config-watch",
            self._check_file,
            interval=lambda: self.runtime.settings.config_watch_interval_sec or 3600.0,
            run_at_start=False,
        )

    def _stat(self) -> tuple[int, int, int] | None:
        if self.path is None:
            return None
        try:
            st = self.path.stat()  # follows symlinks: a swapped target counts as a change
        except FileNotFoundError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    async def _check_file(self) -> None:
        if self.path is None or not self.runtime.settings.config_watch_interval_sec:
            return
        signature = self._stat()
        if signature == self._signature:
            return
        if signature is None:
            log.warning("config_file_missing", path=str(self.path), action="keeping the running settings")
            self._signature = None
            return
        await asyncio.sleep(0.2)  # let an editor finish writing before reading
        if self._stat() != signature:
            return  # still changing: the next check picks it up
        self._signature = signature
        await self.reload("file")

    def _read_file_values(self) -> dict[str, Any]:
        if self.path is None or not self.path.exists():
            return {}
        try:
            return read_config_file(self.path)
        except FleetError:
            return {}

    # --- the reload ------------------------------------------------------------------------------------------
    async def reload(self, source: str) -> ReloadOutcome:
        """Read, validate and apply; never raises (the outcome says what happened)."""
        async with self._lock:
            outcome = self._reload(source)
            self.state.last_reload_at = datetime.now(UTC)
            self.state.last_result = outcome.result
            self.state.last_error = outcome.error
            CONFIG_RELOADS.labels(outcome.result).inc()
            if outcome.applied:
                await self._audit(source, outcome)
            return outcome

    def _reload(self, source: str) -> ReloadOutcome:
        try:
            new = self._loader()
        except FleetError as err:
            log.error(
                "config_reload_refused", source=source, reason=str(err), action="keeping the running settings"
            )
            return ReloadOutcome("refused", error=str(err))
        except Exception as err:  # a loader bug must not take the server down either
            log.error("config_reload_refused", source=source, reason=repr(err), exc_info=err)
            return ReloadOutcome("refused", error=repr(err))
        self._warn_shadowed_by_environment()
        current = self.runtime.settings
        changes = diff_settings(current, new)
        hot = {name: change for name, change in changes.items() if name in HOT_SETTINGS}
        cold = sorted(name for name in changes if name not in HOT_SETTINGS)
        self.state.pending_restart = {name: public_value(changes[name][1]) for name in cold}
        for name in cold:
            log.warning(
                "setting_needs_restart",
                setting=name.upper(),
                running=public_value(changes[name][0]),
                configured=public_value(changes[name][1]),
            )
        if not hot:
            log.info("config_reload_unchanged", source=source, needs_restart=[n.upper() for n in cold])
            return ReloadOutcome("unchanged", needs_restart=cold)
        self.runtime.apply_settings(
            current.model_copy(update={name: new_value for name, (_, new_value) in hot.items()})
        )
        for name, (old_value, new_value) in sorted(hot.items()):
            log.info(
                "setting_changed",
                setting=name.upper(),
                old=public_value(old_value),
                new=public_value(new_value),
            )
        log.info(
            "settings_reloaded",
            source=source,
            changed=sorted(n.upper() for n in hot),
            needs_restart=[n.upper() for n in cold],
        )
        return ReloadOutcome("applied", applied=hot, needs_restart=cold)

    def _warn_shadowed_by_environment(self) -> None:
        values = self._read_file_values()
        for name, value in values.items():
            if self._file_values.get(name) != value and name.upper() in os.environ:
                log.warning(
                    "setting_overridden_by_environment",
                    setting=name.upper(),
                    note="the environment wins over the config file; unset the variable to use the file",
                )
        self._file_values = values

    async def _audit(self, source: str, outcome: ReloadOutcome) -> None:
        from fleet.db.queries import audit

        details = {
            "source": source,
            "changed": {
                name.upper(): {"from": public_value(old), "to": public_value(new)}
                for name, (old, new) in sorted(outcome.applied.items())
            },
            "needs_restart": [name.upper() for name in outcome.needs_restart],
            "process": f"{socket.gethostname()}:{os.getpid()}",
            "config_file": self.state.config_file,
            "config_sha256": self._file_digest(),
        }
        try:
            async with self.runtime.db.system() as conn:
                await audit.record(conn, action="settings.reload", target="config", details=details)
        except Exception as err:  # the change is applied and logged; a database outage must not undo it
            log.warning("settings_reload_audit_failed", error=str(err))

    def _file_digest(self) -> str | None:
        if self.path is None or not self.path.exists():
            return None
        return hashlib.sha256(self.path.read_bytes()).hexdigest()

    async def close(self) -> None:
        for task in list(self._pending):
            task.cancel()
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)
