"""`/admin/devices`: every tracker (linked or not), pre-registration, linking, unlinking, deletion. Superusers.

In production unknown trackers are refused by the device port, so a tracker is registered here (or with
`fleet device add`) before it is installed. Moving a tracker from one vehicle to another needs `"move": true`.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Response

from fleet.api.deps import AdminSession, ClientAddr, State, actor_for
from fleet.api.manage_schemas import (
    AdminDevicePage,
    DeviceCreate,
    DeviceLink,
    DeviceNetworks,
    DeviceOut,
    ProtocolName,
)
from fleet.api.params import BIGINT_MAX, DeviceId, Pagination
from fleet.api.schemas import errors
from fleet.db.queries import device_admin, vehicle_views
from fleet.manage import devices

router = APIRouter(prefix="/admin/devices", tags=["admin"])
ERRORS = errors(400, 401, 403, 404, 409, 422, 429)


@router.get(
    "",
    responses={200: {"model": AdminDevicePage}, **ERRORS},
    summary="Every tracker with its vehicle and last connection, newest first",
)
async def list_devices(
    session: AdminSession,
    state: State,
    page: Pagination,
    linked: Annotated[
        bool | None, Query(description="only linked (true) or unlinked (false) trackers")
    ] = None,
    vehicle_id: Annotated[int | None, Query(ge=1, le=BIGINT_MAX)] = None,
    protocol: Annotated[ProtocolName | None, Query()] = None,
    imei: Annotated[str | None, Query(min_length=1, max_length=32, description="part of the IMEI")] = None,
    status: Annotated[Literal["online", "offline", "unknown"] | None, Query()] = None,
) -> Response:
    body = await device_admin.admin_devices_page(
        session.conn,
        window_sec=vehicle_views.online_window_sec(state.settings.sync_interval_sec),
        linked=linked,
        vehicle_id=vehicle_id,
        protocol=protocol,
        imei=imei,
        status=status,
        limit=page.limit,
        offset=page.offset,
    )
    return Response(body, media_type="application/json")


@router.post(
    "",
    status_code=201,
    response_model=DeviceOut,
    responses=ERRORS,
    summary="Pre-register a tracker (IMEI checked per protocol), optionally on a vehicle",
)
async def register_device(body: DeviceCreate, session: AdminSession, address: ClientAddr) -> dict[str, Any]:
    row = await devices.register_device(
        session.conn,
        actor_for(session.principal, address),
        imei=body.imei,
        protocol=body.protocol,
        vehicle_id=body.vehicle_id,
    )
    return dict(row)


@router.delete(
    "/{device_id}",
    status_code=204,
    responses=ERRORS,
    summary="Delete a tracker without stored history (one with history: 409 device_has_history, unlink it)",
)
async def delete_device(device_id: DeviceId, session: AdminSession, address: ClientAddr) -> Response:
    await devices.delete_device(session.conn, actor_for(session.principal, address), device_id)
    return Response(status_code=204)


@router.post(
    "/{device_id}/link",
    response_model=DeviceOut,
    responses=ERRORS,
    summary="Link a tracker to a vehicle; from another vehicle only with move=true (else 409)",
)
async def link_device(
    device_id: DeviceId, body: DeviceLink, session: AdminSession, address: ClientAddr
) -> dict[str, Any]:
    row = await devices.link_device(
        session.conn,
        actor_for(session.principal, address),
        device_id,
        vehicle_id=body.vehicle_id,
        move=body.move,
    )
    return dict(row)


@router.post(
    "/{device_id}/unlink",
    response_model=DeviceOut,
    responses=ERRORS,
    summary="Take a tracker off its vehicle (history stays with the vehicle)",
)
async def unlink_device(device_id: DeviceId, session: AdminSession, address: ClientAddr) -> dict[str, Any]:
    row = await devices.unlink_device(session.conn, actor_for(session.principal, address), device_id)
    return dict(row)


@router.put(
    "/{device_id}/allowed-networks",
    response_model=DeviceOut,
    responses=ERRORS,
    summary="Networks the tracker may connect from (null or []: any address); others are refused and logged",
)
async def set_allowed_networks(
    device_id: DeviceId, body: DeviceNetworks, session: AdminSession, address: ClientAddr
) -> dict[str, Any]:
    row = await devices.set_allowed_networks(
        session.conn, actor_for(session.principal, address), device_id, body.networks
    )
    return dict(row)
