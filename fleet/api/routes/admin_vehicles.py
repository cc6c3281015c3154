"""Vehicle management: create, edit, delete, the Outbound API key, access grants (superusers); renaming by
owners; and a vehicle's sync state with the reason when it is not online.

Handlers translate HTTP to the use cases of `fleet.manage.vehicles` (which check, change and audit) and
answer the vehicle as `GET /vehicles/{id}` shows it.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Response

from fleet.api.deps import AdminSession, ClientAddr, CurrentUser, DbConn, State, actor_for
from fleet.api.errors import ApiError
from fleet.api.manage_schemas import (
    SyncState,
    VehicleCreate,
    VehicleEdit,
    VehicleKeyAnswer,
    VehicleKeyRequest,
    VehicleRename,
)
from fleet.api.params import UserId, VehicleId
from fleet.api.schemas import AssignRequest, AssignResponse, Vehicle, errors
from fleet.db.queries import vehicle_views
from fleet.manage import vehicles
from fleet.manage.sync_state import describe_sync

router = APIRouter(tags=["admin"])
ERRORS = errors(400, 401, 403, 404, 409, 422, 429)
JSON = "application/json"


async def _vehicle_answer(conn: Any, state: Any, vehicle_id: int, status_code: int = 200) -> Response:
    window = vehicle_views.online_window_sec(state.settings.sync_interval_sec)
    body = await vehicle_views.vehicle_json(conn, vehicle_id, window_sec=window)
    if body is None:
        raise ApiError(404, "not_found", f"no vehicle {vehicle_id}")
    return Response(body, status_code=status_code, media_type=JSON)


@router.post(
    "/admin/vehicles",
    status_code=201,
    responses={201: {"model": Vehicle}, **ERRORS},
    summary="Register a vehicle (optionally with its Outbound API address and key, and its owners)",
)
async def create_vehicle(
    body: VehicleCreate, session: AdminSession, state: State, address: ClientAddr
) -> Response:
    row = await vehicles.create_vehicle(
        session.conn,
        actor_for(session.principal, address),
        name=body.name,
        vpn_ip=body.vpn_ip,
        api_port=body.api_port,
        api_key=body.api_key,
        owner_ids=body.owner_ids,
    )
    return await _vehicle_answer(session.conn, state, row["id"], 201)


@router.patch(
    "/admin/vehicles/{vehicle_id}",
    responses={200: {"model": Vehicle}, **ERRORS},
    summary="Change a vehicle's name, Outbound API address (vpn_ip, null: not pulled) or port",
)
async def edit_vehicle(
    vehicle_id: VehicleId, body: VehicleEdit, session: AdminSession, state: State, address: ClientAddr
) -> Response:
    changes = {key: getattr(body, key) for key in body.model_fields_set}
    for key in ("name", "api_port"):
        if key in changes and changes[key] is None:
            raise ApiError(422, "invalid_input", f"{key}: may be changed, not cleared")
    await vehicles.edit_vehicle(session.conn, actor_for(session.principal, address), vehicle_id, changes)
    return await _vehicle_answer(session.conn, state, vehicle_id)


@router.delete(
    "/admin/vehicles/{vehicle_id}",
    status_code=204,
    responses=ERRORS,
    summary="Delete a vehicle: trackers unlinked; access, channels, alarms and journal removed",
    description="Its time series stay (superusers only) until retention drops them; ids are never reused.",
)
async def delete_vehicle(vehicle_id: VehicleId, session: AdminSession, address: ClientAddr) -> Response:
    await vehicles.delete_vehicle(session.conn, actor_for(session.principal, address), vehicle_id)
    return Response(status_code=204)


@router.post(
    "/admin/vehicles/{vehicle_id}/api-key",
    response_model=VehicleKeyAnswer,
    responses=ERRORS,
    summary="Set, generate (shown once) or clear the key the sync service sends as X-API-Key",
)
async def set_api_key(
    vehicle_id: VehicleId, session: AdminSession, address: ClientAddr, body: VehicleKeyRequest | None = None
) -> dict[str, Any]:
    request = body or VehicleKeyRequest.model_validate({})
    generated = await vehicles.set_api_key(
        session.conn,
        actor_for(session.principal, address),
        vehicle_id,
        request.api_key,
        use_default=request.use_default,
    )
    source = "default" if request.use_default else "generated" if generated else "set"
    return {"vehicle_id": vehicle_id, "api_key": generated, "source": source}


@router.post(
    "/admin/vehicles/{vehicle_id}/assign",
    response_model=AssignResponse,
    responses=ERRORS,
    summary="Give a user access to a vehicle (by user id or e-mail)",
)
async def assign(
    vehicle_id: VehicleId, body: AssignRequest, session: AdminSession, address: ClientAddr
) -> dict[str, Any]:
    user_ref: int | str = body.user_id if body.user_id is not None else str(body.email)
    user, granted = await vehicles.assign(
        session.conn, actor_for(session.principal, address), vehicle_id, user_ref
    )
    return {"vehicle_id": vehicle_id, "user_id": user["id"], "email": user["email"], "granted": granted}


@router.delete(
    "/admin/vehicles/{vehicle_id}/access/{user_id}",
    status_code=204,
    responses=ERRORS,
    summary="Take a vehicle away from a user",
)
async def remove_access(
    vehicle_id: VehicleId, user_id: UserId, session: AdminSession, address: ClientAddr
) -> Response:
    await vehicles.remove_access(session.conn, actor_for(session.principal, address), vehicle_id, user_id)
    return Response(status_code=204)


@router.patch(
    "/vehicles/{vehicle_id}",
    tags=["vehicles"],
    responses={200: {"model": Vehicle}, **ERRORS},
    summary="Rename a vehicle: owners their own vehicles, superusers any",
)
async def rename_vehicle(
    vehicle_id: VehicleId,
    body: VehicleRename,
    user: CurrentUser,
    conn: DbConn,
    state: State,
    address: ClientAddr,
) -> Response:
    # Owners cannot write `vehicles` (RLS): the use case checks their access and renames in a system context.
    async with state.db.system() as system:
        await vehicles.rename_vehicle(system, actor_for(user, address), vehicle_id, body.name)
    return await _vehicle_answer(conn, state, vehicle_id)


@router.get(
    "/vehicles/{vehicle_id}/sync",
    tags=["vehicles"],
    response_model=SyncState,
    responses=errors(401, 403, 404, 422, 429),
    summary="Sync state: status, why it is not online, next attempt, and the latest journal entries",
)
async def sync_state(
    vehicle_id: VehicleId,
    conn: DbConn,
    state: State,
    limit: Annotated[int, Query(ge=1, le=100, description="journal entries")] = 20,
) -> dict[str, Any]:
    return await describe_sync(conn, state.settings, vehicle_id, limit=limit)
