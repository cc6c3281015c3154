"""One WebSocket connection from accept to close: authentication, access, the first message, the client's messages.

The token comes in the query (`?token=`) or, for clients that must not put tokens in URLs, as the first
message `{"type": "auth", "token": "..."}` within `LIVE_AUTH_TIMEOUT_SEC`. Refusals are told in an `error`
message, then the socket closes: 4401 bad/expired/missing token, 4403 not allowed (another owner's vehicle —
an owner is never told whether it exists —, a pending or blocked account), 4404 no such vehicle (superusers),
1008 too many connections or a bad message. While connected the client may send `{"type": "ping"}` (answered
`pong`) and `{"type": "auth", "token": ...}` with a fresh token of the same account (answered `auth_ok`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

import asyncpg
import orjson
import structlog
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from fleet.api.deps import resolve_client_address
from fleet.db.queries.live import VehicleCard, vehicle_card, visible_vehicle_ids
from fleet.errors import DatabaseUnavailable
from fleet.live import messages, metrics
from fleet.live.access import (
    CLOSE_FORBIDDEN,
    CLOSE_NOT_FOUND,
    CLOSE_POLICY,
    CLOSE_UNAUTHORIZED,
    Identity,
    Refusal,
    authenticate,
)
from fleet.live.viewer import Viewer

if TYPE_CHECKING:
    from fleet.api.state import ApiState
    from fleet.live.hub import LiveHub

log = structlog.get_logger(__name__)
T = TypeVar("T")

# Client messages are small (a token, a ping); uvicorn's ws_max_size caps the frame itself.
MAX_CLIENT_MESSAGE_CHARS = 8192
# The database (or Redis, for rate limits) cannot be reached: 1011, the client retries later.
DATABASE_DOWN = (
    DatabaseUnavailable,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    OSError,
    TimeoutError,
)
UNAVAILABLE = Refusal(
    1011, "unavailable", "the server cannot serve live streams right now; retry", "unavailable"
)


async def serve_fleet(websocket: WebSocket, state: ApiState, hub: LiveHub) -> None:
    """`WS /ws/fleet`: positions and statuses of every vehicle the account may see."""

    async def scope(identity: Identity) -> tuple[frozenset[int] | None, int]:
        async with state.db.tenant(identity.principal.tenant) as conn:
            if identity.superuser or identity.user_id is None:
                return None, int(await conn.fetchval("SELECT count(*) FROM vehicles"))
            visible = await visible_vehicle_ids(conn)
        return visible, len(visible)

    admitted = await _admit(websocket, state, hub, scope)
    if admitted is None:
        return
    identity, (visible, count) = admitted
    viewer = _viewer(websocket, state, "fleet", identity)
    viewer.batched = websocket.query_params.get("batch", "").lower() in ("1", "true", "yes")
    hub.add_fleet_viewer(viewer, visible)
    hello = {
        "type": "hello",
        "vehicles": count,
        "heartbeat_sec": state.settings.live_heartbeat_sec,
        "batch_sec": state.settings.live_fleet_batch_sec if viewer.batched else None,
    }
    hub.offer(viewer, messages.dumps(hello), "hello")
    await _run(websocket, state, hub, viewer, pull=False)


async def serve_vehicle(websocket: WebSocket, state: ApiState, hub: LiveHub, vehicle_id: int) -> None:
    """`WS /ws/vehicles/{id}/live`: one vehicle's positions, values, status, alarms, events and commands."""

    async def find(identity: Identity) -> VehicleCard:
        async with state.db.tenant(identity.principal.tenant) as conn:
            card = await vehicle_card(conn, vehicle_id)
        if card is not None:
            return card
        if identity.superuser:
            raise Refusal(CLOSE_NOT_FOUND, "not_found", f"no vehicle {vehicle_id}", "not_found")
        # An owner is not told whether another owner's vehicle exists.
        raise Refusal(
            CLOSE_FORBIDDEN, "forbidden", f"vehicle {vehicle_id} is not yours to watch", "forbidden"
        )

    admitted = await _admit(websocket, state, hub, find)
    if admitted is None:
        return
    identity, card = admitted
    viewer = _viewer(websocket, state, "vehicle", identity, vehicle_id)
    hub.board.load([card.facts], complete=False)
    poller = hub.add_vehicle_viewer(viewer, card.pull)
    current = hub.board.current(vehicle_id)
    assert current is not None, "the board derives a status for every vehicle it loads"
    sources = [name for name, present in (("tracker", card.has_trackers), ("pull", card.pull)) if present]
    hello = {
        "type": "hello",
        "vehicle_id": vehicle_id,
        "name": card.name,
        "sources": sources,
        "status": messages.status(vehicle_id, *current),
        "last_position": _position_fields(card.last_position),
        "values": list(poller.values.values()) if poller is not None else [],
        "heartbeat_sec": state.settings.live_heartbeat_sec,
    }
    hub.offer(viewer, messages.dumps(hello), "hello")
    await _run(websocket, state, hub, viewer, pull=card.pull)


async def _admit(
    websocket: WebSocket, state: ApiState, hub: LiveHub, scope: Callable[[Identity], Awaitable[T]]
) -> tuple[Identity, T] | None:
    """Accept, authenticate and find what the viewer may see (`scope`); None when refused (and closed)."""
    await websocket.accept()
    try:
        identity = await _identify(websocket, state, hub)
        found = await scope(identity)
        await hub.ensure_started()
    except Refusal as refusal:
        await _refuse(websocket, refusal)
        return None
    except WebSocketDisconnect:
        return None
    except DATABASE_DOWN as err:
        log.warning("live_connect_failed", error=str(err))
        await _refuse(websocket, UNAVAILABLE)
        return None
    return identity, found


def _viewer(
    websocket: WebSocket, state: ApiState, stream: str, identity: Identity, vehicle_id: int | None = None
) -> Viewer:
    return Viewer(
        stream,
        identity,
        websocket.send_text,
        _closer(websocket),
        limit=state.settings.live_queue_max,
        vehicle_id=vehicle_id,
    )


def _position_fields(position: dict[str, Any] | None) -> dict[str, Any] | None:
    if position is None:
        return None
    return {**position, "time": messages.zulu(position.get("time"))}


async def _identify(websocket: WebSocket, state: ApiState, hub: LiveHub) -> Identity:
    token = websocket.query_params.get("token")
    if not token:
        token = await _first_message_token(websocket, state.settings.live_auth_timeout_sec)
    identity = await authenticate(state, token, _address(websocket, state))
    hub.check_capacity(identity)
    return identity


def _address(websocket: WebSocket, state: ApiState) -> str | None:
    """The client's address as the REST API resolves it (X-Forwarded-For from trusted proxies only)."""
    peer = websocket.client.host if websocket.client else None
    return resolve_client_address(peer, websocket.headers.get("x-forwarded-for"), state)


async def _first_message_token(websocket: WebSocket, within: float) -> str:
    try:
        message = await asyncio.wait_for(websocket.receive(), within)
    except TimeoutError:
        raise Refusal(
            CLOSE_UNAUTHORIZED,
            "unauthorized",
            f"send ?token= or an auth message within {within:g} s",
            "auth_timeout",
        ) from None
    if message["type"] == "websocket.disconnect":
        raise WebSocketDisconnect(message.get("code", 1000))
    body = _parse(message)
    token = body.get("token") if body is not None and body.get("type") == "auth" else None
    if not isinstance(token, str) or not token:
        raise Refusal(
            CLOSE_UNAUTHORIZED,
            "unauthorized",
            'sign in: ?token=<token> or a first message {"type":"auth","token":"..."}',
            "unauthorized",
        )
    return token


def _parse(message: Any) -> dict[str, Any] | None:
    text = message.get("text")
    if text is None or len(text) > MAX_CLIENT_MESSAGE_CHARS:
        return None
    try:
        body = orjson.loads(text)
    except orjson.JSONDecodeError:
        return None
    return body if type(body) is dict else None


async def _refuse(websocket: WebSocket, refusal: Refusal) -> None:
    metrics.REJECTED.labels(refusal.reason).inc()
    with contextlib.suppress(Exception):  # the client may be gone already
        if websocket.application_state == WebSocketState.CONNECTED:
            await websocket.send_text(messages.error(refusal.code, refusal.message))
            await websocket.close(refusal.close_code, refusal.code)


def _closer(websocket: WebSocket) -> Any:
    async def close(code: int, reason: str) -> None:
        if websocket.application_state == WebSocketState.CONNECTED:
            await websocket.close(code, reason[:120])

    return close


async def _run(websocket: WebSocket, state: ApiState, hub: LiveHub, viewer: Viewer, *, pull: bool) -> None:
    viewer.start()
    try:
        await _receive(websocket, state, hub, viewer)
    finally:
        await hub.remove(viewer, pull=pull)
        await viewer.stop()


async def _receive(websocket: WebSocket, state: ApiState, hub: LiveHub, viewer: Viewer) -> None:
    """Answer the client's messages until it goes away (or the server closes the socket)."""
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return
        if viewer.close_code is not None:
            continue  # closing: the close handshake will end the loop
        body = _parse(message)
        kind = body.get("type") if body is not None else None
        if kind == "ping":
            hub.offer(viewer, '{"type":"pong"}', "pong")
        elif kind == "auth" and isinstance(body.get("token") if body else None, str):
            await _reauthenticate(websocket, state, hub, viewer, str(body["token"]))  # type: ignore[index]
        else:
            hub.end(
                viewer,
                CLOSE_POLICY,
                "bad_message",
                'expected {"type":"ping"} or {"type":"auth","token":"..."}',
                "bad_message",
            )


async def _reauthenticate(
    websocket: WebSocket, state: ApiState, hub: LiveHub, viewer: Viewer, token: str
) -> None:
    try:
        identity = await authenticate(state, token, _address(websocket, state))
    except Refusal as refusal:
        hub.end(viewer, refusal.close_code, refusal.code, refusal.message, refusal.reason)
        return
    except DATABASE_DOWN as err:  # keep the viewer: its current token still holds until it expires
        log.warning("live_reauth_failed", error=str(err))
        return
    if not identity.same_account(viewer.identity):
        hub.end(viewer, CLOSE_UNAUTHORIZED, "unauthorized", "a token of another account", "unauthorized")
        return
    hub.rebind(viewer, identity)
    expires = identity.expires_at
    hub.offer(
        viewer,
        messages.dumps({"type": "auth_ok", "expires_at": messages.zulu(expires) if expires else None}),
        "auth_ok",
    )
