"""Users: creation, lookup and vehicle access."""

from __future__ import annotations

import asyncpg

from fleet.errors import Conflict, InvalidInput, NotFound

USER_COLUMNS = "id, email, name, role, status, token_version, created_at, approved_at, last_login_at"


def normalise_email(email: str) -> str:
    email = email.strip()
    local, sep, domain = email.rpartition("@")
    if not sep or not local or "." not in domain or len(email) > 320 or any(c.isspace() for c in email):
        raise InvalidInput(f"not a valid e-mail address: {email!r}")
    return f"{local}@{domain.lower()}"


async def create_user(
    conn: asyncpg.Connection,
    *,
    email: str,
    password_hash: str | None,
    role: str = "owner",
    status: str = "pending",
    name: str | None = None,
) -> asyncpg.Record:
    """Insert a user; a duplicate e-mail (case-insensitive) raises Conflict."""
    if role not in ("superuser", "owner"):
        raise InvalidInput(f"unknown role {role!r} (superuser or owner)")
    try:
        row: asyncpg.Record = await conn.fetchrow(
            f"""INSERT INTO users (email, password_hash, role, status, name, approved_at)
                VALUES ($1, $2, $3, $4, $5, CASE WHEN $4 = 'active' THEN now() END)
                RETURNING {USER_COLUMNS}""",
            normalise_email(email),
            password_hash,
            role,
            status,
            name,
        )
    except asyncpg.UniqueViolationError as err:
        raise Conflict(f"a user with e-mail {email} already exists") from err
    return row


async def get_user_by_email(conn: asyncpg.Connection, email: str) -> asyncpg.Record | None:
    row: asyncpg.Record | None = await conn.fetchrow(
        f"SELECT {USER_COLUMNS}, password_hash FROM users WHERE lower(email) = lower($1)", email.strip()
    )
    return row


async def get_user(conn: asyncpg.Connection, user_id: int) -> asyncpg.Record | None:
    row: asyncpg.Record | None = await conn.fetchrow(
        f"SELECT {USER_COLUMNS} FROM users WHERE id = $1", user_id
    )
    return row


async def grant_vehicle(
    conn: asyncpg.Connection, *, user_id: int, vehicle_id: int, granted_by: int | None = None
) -> bool:
    """Give a user access to a vehicle; False when it was already granted."""
    try:
        status = await conn.execute(
            """INSERT INTO vehicle_access (user_id, vehicle_id, granted_by) VALUES ($1, $2, $3)
               ON CONFLICT DO NOTHING""",
            user_id,
            vehicle_id,
            granted_by,
        )
    except asyncpg.ForeignKeyViolationError as err:
        raise NotFound(f"no vehicle {vehicle_id} or user {user_id}") from err
    return bool(status.endswith(" 1"))
