"""`/auth/api-keys`: personal API keys. A key acts as its owner, through the same tenant context."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Response

from fleet.api.deps import ActiveSession, ClientAddr
from fleet.api.errors import ApiError
from fleet.api.params import BIGINT_MAX, Pagination, StrictId
from fleet.api.schemas import ApiKeyCreate, ApiKeyCreated, ApiKeyOut, Page, errors
from fleet.auth import tokens
from fleet.db.queries import audit
from fleet.db.queries import auth as auth_q

router = APIRouter(prefix="/auth/api-keys", tags=["api keys"])


def _owner_id(session: Any) -> int:
    if session.principal.user_id is None:
        raise ApiError(400, "invalid_input", "API keys belong to a user: sign in as one to manage them")
    return int(session.principal.user_id)


@router.post(
    "",
    status_code=201,
    response_model=ApiKeyCreated,
    responses=errors(400, 401, 403, 422, 429),
    summary="Create an API key (the key is shown once)",
)
async def create_key(body: ApiKeyCreate, session: ActiveSession, address: ClientAddr) -> dict[str, Any]:
    user_id = _owner_id(session)
    key = tokens.new_api_key()
    row = await auth_q.create_api_key(
        session.conn,
        user_id=user_id,
        name=body.name.strip() or "key",
        prefix=key.prefix,
        key_hash=key.key_hash,
    )
    await audit.record(
        session.conn,
        action="api_key.create",
        actor_id=user_id,
        actor_email=session.principal.email,
        target=f"api_key:{row['id']}",
        details={"name": row["name"], "prefix": key.prefix},
        client_addr=address,
    )
    return {**dict(row), "key": key.value}


@router.get(
    "",
    response_model=Page[ApiKeyOut],
    responses=errors(400, 401, 403, 429),
    summary="List your API keys (without the secrets)",
)
async def list_keys(session: ActiveSession, page: Pagination) -> dict[str, Any]:
    rows, total = await auth_q.list_api_keys(
        session.conn, _owner_id(session), limit=page.limit, offset=page.offset
    )
    return {
        "items": [dict(row) for row in rows],
        "total": total,
        "limit": page.limit,
        "offset": page.offset,
        "has_more": page.offset + len(rows) < total,
    }


@router.delete(
    "/{key_id}",
    status_code=204,
    responses=errors(400, 401, 403, 404, 429),
    summary="Revoke one of your API keys",
)
async def revoke_key(
    key_id: Annotated[StrictId, Path(ge=1, le=BIGINT_MAX)], session: ActiveSession, address: ClientAddr
) -> Response:
    user_id = _owner_id(session)
    row = await auth_q.revoke_api_key(session.conn, key_id=key_id, user_id=user_id)
    if row is None:
        raise ApiError(404, "not_found", f"no API key {key_id}")
    await audit.record(
        session.conn,
        action="api_key.revoke",
        actor_id=user_id,
        actor_email=session.principal.email,
        target=f"api_key:{key_id}",
        client_addr=address,
    )
    return Response(status_code=204)
