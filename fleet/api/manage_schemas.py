"""Request bodies and answers of the management API (vehicles, trackers, keys, passwords, sync state)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from fleet.api.schemas import Page
from fleet.protocol.registry import protocols

BIGINT_MAX = 2**63 - 1


def _known_protocol(name: str) -> str:
    if name not in protocols():
        raise ValueError(f"unknown protocol (one of: {', '.join(protocols())})")
    return name


# A device protocol of the registry (fleet/protocol/registry.py), listed as an enum in the OpenAPI schema.
ProtocolName = Annotated[
    str, AfterValidator(_known_protocol), Field(json_schema_extra={"enum": list(protocols())})
]


class VehicleCreate(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"name": "Truck 7", "vpn_ip": "10.0.0.7", "owner_ids": [42]}]},
    )
    name: str = Field(min_length=1, max_length=200)
    vpn_ip: str | None = Field(None, max_length=64, description="address of its Outbound API (over the VPN)")
    api_port: int = Field(8001, ge=1, le=65535)
    api_key: str | None = Field(
        None, min_length=1, max_length=256, description="its Outbound API key (else VEHICLE_DEFAULT_API_KEY)"
    )
    owner_ids: list[int] = Field(default_factory=list, max_length=100, description="users given access")


class VehicleEdit(BaseModel):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"vpn_ip": "10.0.0.8"}, {"vpn_ip": None}]}
    )
    name: str | None = Field(None, min_length=1, max_length=200)
    vpn_ip: str | None = Field(None, max_length=64, description="null clears it: the vehicle is not pulled")
    api_port: int | None = Field(None, ge=1, le=65535)


class VehicleRename(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"name": "Truck 7 (blue)"}]})
    name: str = Field(min_length=1, max_length=200)


class VehicleKeyRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{}, {"api_key": "the-key-on-the-vehicle"}]}
    )
    api_key: str | None = Field(None, min_length=1, max_length=256, description="omit to generate one")
    use_default: bool = Field(False, description="clear the vehicle's key: VEHICLE_DEFAULT_API_KEY applies")


class VehicleKeyAnswer(BaseModel):
    vehicle_id: int
    api_key: str | None = Field(description="the generated key, shown once; null when given or cleared")
    source: Literal["generated", "set", "default"]


class DeviceCreate(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"imei": "352093081234567", "protocol": "teltonika", "vehicle_id": 7}]
        },
    )
    imei: str = Field(min_length=1, max_length=32, description="15 digits for Navtelecom and Teltonika")
    protocol: ProtocolName = "navtelecom"
    vehicle_id: int | None = Field(None, ge=1, le=BIGINT_MAX)


class DeviceLink(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"vehicle_id": 7}]})
    vehicle_id: int = Field(ge=1, le=BIGINT_MAX)
    move: bool = Field(False, description="take the tracker from the vehicle it is on (else 409)")


class DeviceOut(BaseModel):
    id: int
    imei: str
    protocol: str
    vehicle_id: int | None
    name: str | None
    created_at: datetime
    last_connected_at: datetime | None
    last_seen_at: datetime | None
    allowed_networks: list[str] | None = Field(
        None, description="networks the tracker may connect from (null: any address)"
    )


class DeviceNetworks(BaseModel):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"networks": ["10.0.0.0/24", "198.51.100.7/32"]}]}
    )
    networks: list[str] | None = Field(
        max_length=64, description="CIDR networks the tracker may connect from; null or [] for any address"
    )


class AdminDevice(BaseModel):
    id: int
    imei: str
    protocol: str
    name: str | None
    vehicle_id: int | None
    vehicle_name: str | None
    status: Literal["online", "offline", "unknown"]
    created_at: str
    last_connected_at: str | None
    last_seen_at: str | None
    last_peer: str | None = Field(description="address of its last connection")
    firmware: str | None
    allowed_networks: list[str] | None = Field(
        None, description="networks the tracker may connect from (null: any address)"
    )


class AdminDevicePage(Page[AdminDevice]):
    pass


class PasswordReset(BaseModel):
    model_config = ConfigDict(extra="forbid")
    password: str = Field(min_length=1, max_length=1024)


class PasswordChange(BaseModel):
    model_config = ConfigDict(extra="forbid")
    current_password: str = Field(min_length=1, max_length=1024)
    new_password: str = Field(min_length=1, max_length=1024)


class PasswordChanged(BaseModel):
    message: str
    other_sessions_ended: int


class JournalItem(BaseModel):
    started_at: str
    finished_at: str
    status: Literal["ok", "timeout", "error"]
    rows_written: int
    duration_ms: int
    window_from: str | None
    window_to: str | None
    error: str | None


class SyncState(BaseModel):
    vehicle_id: int
    status: Literal["online", "offline", "unknown"] = Field(description="as in GET /vehicles/{id}")
    reason: str | None = Field(description="why the vehicle is not online (or its last pull failed)")
    sync_status: str = Field(description="the sync service's view: online, offline, error, unknown")
    last_sync_at: str | None
    last_seen_at: str | None
    next_attempt_at: str | None
    failing_cycles: int
    pulled: bool = Field(description="false without a vpn_ip: the sync service does not contact it")
    api_key: Literal["vehicle", "default", "none"] = Field(description="which Outbound API key is used")
    journal: list[JournalItem] = Field(description="latest cycles, newest first")
