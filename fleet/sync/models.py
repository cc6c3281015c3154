"""Plain data passed between the puller, the service and the writer."""

from __future__ import annotations

import ipaddress
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple

# One measurement as it is copied into the staging table: (vehicle_id, channel_id, time, value).
Row = tuple[int, int, datetime, float]


@dataclass(frozen=True, slots=True)
class VehicleTarget:
    """A vehicle claimed for one pull: where to reach it and where its last pull ended."""

    id: int
    name: str
    host: str
    port: int
    api_key: str | None = field(repr=False)  # never in logs or tracebacks
    last_sync_at: datetime | None
    alarms_synced_at: datetime | None
    sync_failures: int
    gps_channels: dict[str, Any] | None = None  # explicit position mapping (fleet.sync.gps)

    @property
    def base_url(self) -> str:
        """`http://{vpn_ip}:{api_port}`, with an IPv6 address in brackets."""
        address = ipaddress.ip_address(self.host)
        host = f"[{address.compressed}]" if address.version == 6 else address.compressed
        return f"http://{host}:{self.port}"


@dataclass(frozen=True, slots=True)
class StatusReply:
    """What `/status` said (only the fields the server stores or acts on)."""

    online: bool
    software_version: str | None
    contract_version: str | None
    db_ok: bool | None
    oldest_data: datetime | None = None  # the oldest sample the agent still holds
    row_limit: int | None = None  # the agent's `limits`; None: not reported (use the server's own)
    max_window_seconds: int | None = None


@dataclass(frozen=True, slots=True)
class ChannelInfo:
    """One `/channels` entry mapped onto `channel_config` (phys_min/max → min_value/max_value)."""

    channel_id: int
    name: str
    unit: str | None
    min_value: float | None
    max_value: float | None


class LatestValue(NamedTuple):
    """One channel's newest value from `/data/latest` (the live view's poll)."""

    channel_id: int
    time: datetime
    value: float


@dataclass(frozen=True, slots=True)
class AlarmInfo:
    """One `/alarms` entry."""

    alarm_id: int
    channel_id: int | None
    level: str | None
    message: str | None
    raised_at: datetime
    resolved_at: datetime | None


@dataclass(slots=True)
class DataPage:
    """The accepted rows of one `/data` answer, and where the agent says the answer ends."""

    start: datetime
    end: datetime  # the agent's `to`: at most the requested end (the agent holds back unsettled time)
    rows: list[Row]
    truncated: bool
    next_from: datetime | None
    rejected: Counter[str] = field(default_factory=Counter)


@dataclass(slots=True)
class AlarmPage:
    """The accepted alarms of one `/alarms` answer."""

    start: datetime
    end: datetime
    alarms: list[AlarmInfo]
    truncated: bool
    rejected: Counter[str] = field(default_factory=Counter)
