"""`/api/v2/devices/{device_id}/commands`: send a command to a tracker, list its commands.

A command is stored (``queued``) and sent by the ingest role at once when the tracker is connected, or
after its next login; its status then moves to ``sent`` and ``answered`` / ``failed`` / ``expired``, each
change published on bus topic ``commands`` (and so to the vehicle's WebSocket viewers). Superusers may
command any tracker; owners only when ``DEVICE_COMMANDS_OWNERS_ALLOWED`` is set, and only the trackers of
their own vehicles (RLS). Every command is audited.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, BackgroundTasks, Query
from pydantic import BaseModel, ConfigDict, Field, model_validator

from fleet.api.deps import ActiveSession, ClientAddr, State
from fleet.api.errors import ApiError
from fleet.api.params import DeviceRefParam, Pagination
from fleet.api.schemas import Page, errors
from fleet.db.queries import device_commands as commands_q
from fleet.db.queries.device_api import resolve_device
from fleet.device_commands import (
    BUS_TOPIC,
    CommandNotAllowed,
    CommandUnsupported,
    bus_payload,
    queue_command,
)
from fleet.manage.actor import Actor
from fleet.protocol.base import (
    Command,
    CustomCommand,
    OutputCommand,
    Reboot,
    RequestPosition,
    ResendArchive,
)

router = APIRouter(prefix="/api/v2/devices", tags=["device api v2"])
MAX_TTL_SEC = 30 * 86400


class _CommandBase(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    expires_in_sec: int | None = Field(
        None, ge=10, le=MAX_TTL_SEC, description="undelivered after this long: expired (default 24 h)"
    )


class CustomIn(_CommandBase):
    """Protocol-native text: Navtelecom `*!…`/`*?…`, Teltonika SMS/GPRS command text."""

    type: Literal["custom"]
    text: str = Field(min_length=1, max_length=512, examples=["*!1Y", "getinfo"])


class OutputIn(_CommandBase):
    """Switch a digital output."""

    type: Literal["output"]
    index: int = Field(ge=1, le=32, description="output number, 1-based")
    on: bool


class RequestPositionIn(_CommandBase):
    type: Literal["request_position"]


class RebootIn(_CommandBase):
    type: Literal["reboot"]


class ResendArchiveIn(_CommandBase):
    """Resend the black box for a period (protocols that support it)."""

    type: Literal["resend_archive"]
    from_: datetime = Field(alias="from")
    to: datetime

    @model_validator(mode="after")
    def _ordered(self) -> ResendArchiveIn:
        if self.to < self.from_:
            raise ValueError("'to' is before 'from'")
        return self


CommandIn = Annotated[
    CustomIn | OutputIn | RequestPositionIn | RebootIn | ResendArchiveIn, Field(discriminator="type")
]


class CommandOut(BaseModel):
    id: int
    device_id: int
    vehicle_id: int | None
    protocol: str
    type: str
    payload: dict[str, Any]
    status: Literal["queued", "sent", "answered", "failed", "expired"]
    answer: str | None
    error: str | None
    requested_by: int | None
    created_at: datetime
    expires_at: datetime
    sent_at: datetime | None
    finished_at: datetime | None


def _command(body: CustomIn | OutputIn | RequestPositionIn | RebootIn | ResendArchiveIn) -> Command:
    if isinstance(body, CustomIn):
        return CustomCommand(body.text)
    if isinstance(body, OutputIn):
        return OutputCommand(body.index, body.on)
    if isinstance(body, ResendArchiveIn):
        return ResendArchive(body.from_, body.to)
    if isinstance(body, RebootIn):
        return Reboot()
    return RequestPosition()


def _out(row: Any) -> dict[str, Any]:
    return dict(row)


@router.post(
    "/{device_id}/commands",
    status_code=201,
    response_model=CommandOut,
    responses=errors(400, 401, 403, 404, 422, 429),
    summary="Send a command to a tracker (queued until it is online)",
)
async def send_command(
    device_id: DeviceRefParam,
    body: CommandIn,
    session: ActiveSession,
    state: State,
    address: ClientAddr,
    background: BackgroundTasks,
) -> dict[str, Any]:
    principal = session.principal
    actor = Actor(
        principal.user_id,
        principal.email or ("api_key" if principal.kind != "jwt" else None),
        principal.role,
        address,
    )
    settings = state.settings
    try:
        row = await queue_command(
            session.conn,
            actor,
            device_id,
            _command(body),
            owners_allowed=settings.device_commands_owners_allowed,
            ttl_sec=body.expires_in_sec or settings.device_command_ttl_sec,
        )
    except CommandNotAllowed as err:
        raise ApiError(403, "forbidden", str(err)) from err
    except CommandUnsupported as err:
        raise ApiError(422, "unsupported_command", str(err)) from err
    bus = state.runtime.extras.get("bus")
    if bus is not None:  # after the commit: the ingest role must find the row (its sweep would, later)
        background.add_task(bus.publish, BUS_TOPIC, bus_payload(row))
    return _out(row)


@router.get(
    "/{device_id}/commands",
    response_model=Page[CommandOut],
    responses=errors(400, 401, 403, 404, 429),
    summary="Commands of a tracker, newest first",
)
async def list_commands(
    device_id: DeviceRefParam,
    session: ActiveSession,
    page: Pagination,
    status: Annotated[
        Literal["queued", "sent", "answered", "failed", "expired"] | None,
        Query(description="only this status"),
    ] = None,
) -> dict[str, Any]:
    device = await resolve_device(session.conn, device_id)
    if device is None:
        raise ApiError(404, "not_found", f"no device {device_id}")
    rows, total = await commands_q.list_commands(
        session.conn, device["id"], status=status, limit=page.limit, offset=page.offset
    )
    return {
        "items": [_out(row) for row in rows],
        "total": total,
        "limit": page.limit,
        "offset": page.offset,
        "has_more": page.offset + len(rows) < total,
    }
