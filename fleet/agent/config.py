"""Settings of the reference vehicle agent (environment prefix ``AGENT_``)."""

from __future__ import annotations

from enum import StrEnum
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from pydantic import AliasChoices, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# The Outbound API version this agent implements; see docs/DATA_CONTRACT.md for how it evolves.
CONTRACT_VERSION = "1.0"


def _package_version() -> str:
    try:
        return version("fleet-server")
    except PackageNotFoundError:
        return "0.0.0+unknown"


class FaultMode(StrEnum):
    """Misbehaviour the agent can be told to show, for testing the server's sync service."""

    NONE = "none"
    ERROR = "error"  # answer with ``fault_status`` and the error shape, code ``fault_injected``
    SLOW = "slow"  # wait ``fault_delay_seconds`` before answering normally
    TRUNCATE = "truncate"  # cut /data pages at ``fault_row_limit`` rows (``truncated: true``)


class FaultEndpoint(StrEnum):
    """Endpoints a fault can apply to."""

    STATUS = "status"
    CHANNELS = "channels"
    DATA = "data"
    DATA_LATEST = "data_latest"
    ALARMS = "alarms"


class AgentConfig(BaseSettings):
    """Everything the agent needs; read from ``AGENT_*`` variables, overridable by keyword arguments."""

    model_config = SettingsConfigDict(env_prefix="AGENT_", extra="forbid", populate_by_name=True)

    # Where the Outbound API listens. In a vehicle, bind the WireGuard address (10.0.0.x), never 0.0.0.0
    # on a router that also has a public interface.
    host: str = "127.0.0.1"
    port: int = Field(8001, ge=0, le=65535)
    # The shared secret every request must carry in ``X-API-Key``. The seed calls it OUTBOUND_API_KEY.
    api_key: SecretStr | None = Field(
        None, validation_alias=AliasChoices("AGENT_API_KEY", "OUTBOUND_API_KEY")
    )
    # The SQLite ring buffer (WAL mode needs a real file; its directory is created on start).
    db_path: Path = Path("./var/agent.db")
    # Reported in /status so the server can tell its vehicles apart in logs; optional.
    vehicle_id: str | None = None
    vehicle_name: str | None = None
    software_version: str = Field(default_factory=_package_version)

    # Built-in simulator: how many channels, how often, and from which random seed (None: from the clock).
    simulate: bool = True
    channels: int = Field(25, ge=1, le=200)
    rate_hz: float = Field(1.0, gt=0, le=50)
    seed: int | None = None
    # History written before the API starts listening, in seconds before now.
    backfill_seconds: int = Field(0, ge=0, le=31 * 86_400)

    # Limits of the read API (also reported in /status under "limits").
    row_limit: int = Field(50_000, ge=1, le=1_000_000)
    alarm_limit: int = Field(10_000, ge=1, le=1_000_000)
    max_window_hours: float = Field(168.0, gt=0)
    # A window's end is held back this far behind the agent's clock, so a row that is still being written
    # (a simulator tick, an ingest batch in flight) can never fall behind a window the server already pulled.
    settle_seconds: float = Field(2.0, ge=0, le=3600)

    # Ring buffer: samples older than retention_hours, or beyond the newest retention_rows, are deleted.
    retention_hours: float = Field(72.0, gt=0)
    retention_rows: int = Field(10_000_000, ge=1)
    prune_interval_seconds: float = Field(60.0, gt=0)

    # Caps on POST /ingest.
    ingest_max_bytes: int = Field(8 * 1024 * 1024, ge=1024)
    ingest_max_rows: int = Field(50_000, ge=1)
    ingest_max_alarms: int = Field(1_000, ge=1)

    # Fault injection for tests of the sync service; "none" in any real deployment.
    fault_mode: FaultMode = FaultMode.NONE
    fault_endpoints: frozenset[FaultEndpoint] = frozenset({FaultEndpoint.DATA})
    fault_delay_seconds: float = Field(5.0, ge=0)
    fault_status: int = Field(500, ge=400, le=599)
    fault_row_limit: int = Field(100, ge=1)

    @model_validator(mode="after")
    def _check_key(self) -> AgentConfig:
        if self.api_key is not None and not self.api_key.get_secret_value().strip():
            raise ValueError("api_key must not be blank")
        return self

    @property
    def max_window_ms(self) -> int:
        """Widest /data or /alarms window the agent answers, in milliseconds."""
        return int(self.max_window_hours * 3_600_000)
