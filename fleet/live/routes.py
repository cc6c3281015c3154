"""HTTP surface of the live view: the two WebSocket streams and the fleet map's bulk positions."""

from __future__ import annotations

from fastapi import APIRouter, Response, WebSocket

from fleet.api.deps import DbConn
from fleet.api.params import VehicleId
from fleet.api.schemas import LatestPositions, errors
from fleet.db.queries.live import latest_positions_json
from fleet.live import session

router = APIRouter()


@router.get(
    "/vehicles/latest-positions",
    tags=["vehicles"],
    responses={200: {"model": LatestPositions}, **errors(401, 403, 429)},
    summary="The last located position of every vehicle the caller may see (the fleet map), in one answer",
    description=(
        "One item per visible vehicle that has a position with coordinates, by vehicle id; names and "
        "statuses come from `GET /vehicles`. Live updates follow on `WS /ws/fleet` (docs/LIVE.md)."
    ),
)
async def latest_positions(conn: DbConn) -> Response:
    return Response(content=await latest_positions_json(conn), media_type="application/json")


@router.websocket("/ws/fleet")
async def fleet_stream(websocket: WebSocket) -> None:
    """Positions (at most one per vehicle per second) and statuses of every vehicle the account may see."""
    state = websocket.app.state.api
    await session.serve_fleet(websocket, state, state.live)


@router.websocket("/ws/vehicles/{vehicle_id}/live")
async def vehicle_stream(websocket: WebSocket, vehicle_id: VehicleId) -> None:
    """One vehicle's positions, values, status, alarms, events and command answers."""
    state = websocket.app.state.api
    await session.serve_vehicle(websocket, state, state.live, vehicle_id)
