"""Request bodies and documented answers (OpenAPI). Large lists are built in SQL; these models describe them."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, EmailStr, Field, model_validator

T = TypeVar("T")


class ErrorDetail(BaseModel):
    code: str = Field(examples=["pending_approval"])
    message: str = Field(examples=["your account is awaiting approval by an administrator"])


class ErrorResponse(BaseModel):
    error: ErrorDetail


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` entries for the given error statuses, all with the one error shape."""
    text = {
        400: "Invalid input",
        401: "Not signed in, or the token expired or was revoked",
        403: "Not allowed (pending approval, blocked, or not a superuser)",
        404: "Not found, or not visible to the caller",
        409: "Conflict with the current state",
        413: "Request body too large",
        429: "Rate limited (see Retry-After)",
    }
    return {code: {"model": ErrorResponse, "description": text.get(code, "Error")} for code in codes}


class Page(BaseModel, Generic[T]):
    items: list[T]
    total: int = Field(description="rows matching the query")
    limit: int
    offset: int
    has_more: bool = Field(description="true when another page follows")


# --- auth ---------------------------------------------------------------------------------------------------
class RegisterRequest(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"email": "owner@example.com", "password": "correct horse battery"}]}
    )
    email: EmailStr
    password: str = Field(min_length=1, max_length=1024, description="see the password policy")
    name: str | None = Field(None, max_length=200)


class LoginRequest(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"email": "owner@example.com", "password": "correct horse battery"}]}
    )
    email: str = Field(min_length=3, max_length=320)
    password: str = Field(min_length=1, max_length=1024)


class UserOut(BaseModel):
    id: int = Field(examples=[42])
    email: str = Field(examples=["owner@example.com"])
    name: str | None = None
    role: Literal["superuser", "owner"]
    status: Literal["pending", "active", "blocked"]
    created_at: datetime
    approved_at: datetime | None = None
    last_login_at: datetime | None = None


class TokenResponse(BaseModel):
    access_token: str = Field(description="JWT for `Authorization: Bearer`; the refresh token is in a cookie")
    token_type: Literal["bearer"] = "bearer"
    expires_in: int = Field(examples=[900], description="seconds")
    user: UserOut
    message: str | None = Field(None, examples=["your account is awaiting approval"])


class RegisterResponse(BaseModel):
    message: str = Field(description="the same whether or not the address already had an account")


class MeResponse(BaseModel):
    user_id: int | None
    email: str | None
    role: Literal["superuser", "owner"]
    status: str
    auth: Literal["jwt", "api_key", "static_key"]


class ApiKeyCreate(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"name": "grafana"}]})
    name: str = Field(min_length=1, max_length=100)


class ApiKeyOut(BaseModel):
    id: int
    name: str
    prefix: str = Field(examples=["3f9a1c0b2d4e"])
    created_at: datetime
    last_used_at: datetime | None = None
    revoked_at: datetime | None = None


class ApiKeyCreated(ApiKeyOut):
    key: str = Field(
        description="the key itself; shown once, store it now", examples=["flt_3f9a1c0b2d4e_..."]
    )


# --- admin ----------------------------------------------------------------------------------------------------
class AssignRequest(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"email": "owner@example.com"}, {"user_id": 42}]}
    )
    user_id: int | None = Field(None, ge=1, le=2**63 - 1)
    email: str | None = Field(None, min_length=3, max_length=320)

    @model_validator(mode="after")
    def _one_of(self) -> AssignRequest:
        if (self.user_id is None) == (self.email is None):
            raise ValueError("give exactly one of user_id or email")
        return self


class AssignResponse(BaseModel):
    vehicle_id: int
    user_id: int
    email: str
    granted: bool = Field(description="false when the user already had access")


class AuditEntry(BaseModel):
    id: int
    time: datetime
    actor_id: int | None
    actor_email: str | None
    action: str = Field(examples=["user.approve"])
    target: str | None = Field(None, examples=["user:42"])
    details: dict[str, Any]
    client_addr: str | None = Field(None, examples=["203.0.113.7"])


# --- vehicles and history ------------------------------------------------------------------------------------
class DeviceRef(BaseModel):
    id: int
    imei: str


class Vehicle(BaseModel):
    id: int
    name: str
    status: Literal["online", "offline", "unknown"]
    last_seen_at: str | None = Field(None, description="last time the sync service reached the vehicle")
    last_sync_at: str | None = None
    last_device_seen_at: str | None = Field(None, description="last data from one of its trackers")
    last_activity_at: str | None = None
    sync_status: str
    software_version: str | None = None
    devices: list[DeviceRef]


class VehiclePage(Page[Vehicle]):
    online_window_sec: float


class Position(BaseModel):
    time: str = Field(examples=["2026-11-25T12:00:00Z"])
    latitude: float | None
    longitude: float | None
    speed: float | None = Field(None, description="km/h")
    course: float | None = None
    altitude: float | None = None
    satellites: int | None = None
    hdop: float | None = None
    valid: bool | None = None
    device_id: int | None = None
    max_speed: float | None = Field(None, description="with ?bucket= only")
    points: int | None = Field(None, description="positions averaged into the bucket (with ?bucket= only)")


class VehicleStatus(BaseModel):
    vehicle: Vehicle
    status: Literal["online", "offline", "unknown"]
    online_window_sec: float
    last_position: Position | None


class PositionPage(Page[Position]):
    vehicle_id: int
    from_: str = Field(alias="from")
    to: str
    bucket_sec: float | None = None


class Channel(BaseModel):
    channel_id: int
    name: str
    unit: str | None
    min_value: float | None
    max_value: float | None


class Measurement(BaseModel):
    channel_id: int
    time: str
    value: float | None = Field(description="the value, or the bucket average")
    min: float | None = None
    max: float | None = None
    points: int | None = None


class MeasurementPage(Page[Measurement]):
    vehicle_id: int
    channels: list[Channel]
    from_: str = Field(alias="from")
    to: str
    bucket_sec: float | None = None


class Alarm(BaseModel):
    source: Literal["vehicle", "tracker"] = Field(
        description="vehicle: pulled from the Outbound API; tracker: an out-of-turn alarm record of a tracker"
    )
    id: int = Field(description="row id in its source's table (alarms_log or events)")
    alarm_id: int | None = Field(description="the vehicle's own alarm id (source vehicle)")
    device_id: int | None = Field(description="the tracker (source tracker)")
    channel_id: int | None
    code: int | None = Field(description="the tracker's event code (source tracker)")
    level: str | None
    message: str | None
    raised_at: str
    resolved_at: str | None
    active: bool
    synced_at: str = Field(description="when the server stored it")
    latitude: float | None = Field(None, description="the alarm's fix (source tracker)")
    longitude: float | None = None


class AlarmPage(Page[Alarm]):
    vehicle_id: int
    active_only: bool
    tracker_alarm_active_sec: float


class Event(BaseModel):
    id: int
    device_id: int
    vehicle_id: int | None
    time: str
    kind: str = Field(examples=["alarm", "extra", "text"])
    code: int = Field(description="the tracker's event code")
    description: str | None
    record_index: int = Field(description="black-box index (-1: none)")
    latitude: float | None
    longitude: float | None
    speed: float | None = Field(None, description="km/h")
    details: dict[str, Any] = Field(description="everything else the tracker reported with the event")
    received_at: str


class EventPage(Page[Event]):
    vehicle_id: int | None = None
    device_id: int | None = None
    from_: str = Field(alias="from")
    to: str


class LatestPosition(BaseModel):
    vehicle_id: int
    time: str
    latitude: float
    longitude: float
    speed: float | None = Field(None, description="km/h")
    course: float | None = None


class LatestPositions(BaseModel):
    items: list[LatestPosition]
    total: int


# --- device API (seed 000) ---------------------------------------------------------------------------------
class Device(BaseModel):
    id: int
    imei: str = Field(examples=["123456789012345"])
    name: str | None
    protocol: str
    vehicle_id: int | None
    firmware: str | None
    status: Literal["online", "offline", "unknown"]
    created_at: str
    last_connected_at: str | None
    last_seen_at: str | None
    protocol_state: dict[str, Any] | None = Field(
        None, description="what the protocol keeps per device, e.g. the negotiated FLEX versions and mask"
    )
    flex_protocol_version: int | None = Field(None, description="deprecated: protocol_state.protocol_version")
    flex_struct_version: int | None = Field(None, description="deprecated: protocol_state.struct_version")


class Telemetry(BaseModel):
    id: int
    time: str
    fix_time: str | None
    received_at: str
    valid: bool
    latitude: float | None
    longitude: float | None
    altitude: float | None
    speed: float | None
    course: float | None
    satellites: int | None
    hdop: float | None
    record_index: int
    event_code: int | None
    attributes: dict[str, Any]


class TelemetryPage(Page[Telemetry]):
    device_id: int


class CanValue(BaseModel):
    id: int
    time: str
    name: str = Field(examples=["engine_speed"])
    value: float | None
    value_text: str | None
    unit: str | None
    source: str = Field(examples=["j1939:61444"])
    position_id: int | None


class CanPage(Page[CanValue]):
    device_id: int


class RawFrame(BaseModel):
    id: int
    device_id: int | None
    received_at: str
    protocol: str
    frame_type: str | None
    peer: str | None
    outcome: Literal["ok", "rejected", "error", "ignored"]
    error: str | None
    size: int
    data_hex: str
    excerpt: bool = Field(
        False, description="true when data_hex is only the start of the frame (unidentified or failing peers)"
    )
    frame_length: int | None = Field(None, description="length of the whole frame in bytes")
    frame_sha256: str | None = Field(
        None, description="SHA-256 of the whole frame (hex) when only an excerpt is kept"
    )


class LatestCan(BaseModel):
    name: str
    value: float | None
    value_text: str | None
    unit: str | None
    source: str
    time: str


class DeviceLast(BaseModel):
    device: DeviceRef
    position: dict[str, Any] | None
    can: list[LatestCan]


class Stats(BaseModel):
    vehicles: int
    devices: int
    devices_online: int
    positions_24h: int
    can_data_24h: int
    events_24h: int
    raw_frames_24h: int
    raw_frame_errors_24h: int
    ingest: dict[str, Any] | None = Field(
        None, description="server-wide live counters of the ingest role, when it runs here (superusers only)"
    )
