"""Accounts: approve, reject, block, unblock, and passwords (reset by an administrator, changed by their owner).

Status changes need a superuser context (the `users_guard` trigger refuses them elsewhere). Blocking is for
good as far as credentials go: every session and every API key of the user is revoked, and unblocking gives
the account back but none of them: the user signs in again and creates new keys.
"""

from __future__ import annotations

import asyncpg

from fleet.config import Settings
from fleet.db.queries import accounts
from fleet.db.queries import auth as auth_q
from fleet.db.queries.users import create_user, get_user, get_user_by_email
from fleet.errors import Conflict, InvalidInput, NotFound
from fleet.mail import messages
from fleet.manage.actor import Actor
from fleet.passwords import check_and_hash, verify_password


async def require_user(conn: asyncpg.Connection, ref: int | str) -> asyncpg.Record:
    """A user by id or e-mail, or NotFound."""
    user = await (get_user(conn, ref) if isinstance(ref, int) else get_user_by_email(conn, ref))
    if user is None:
        raise NotFound(f"no user {ref}")
    return user


def _target(user: asyncpg.Record) -> str:
    return f"user:{user['id']}"


async def register_owner(
    conn: asyncpg.Connection,
    settings: Settings,
    *,
    email: str,
    password_hash: str | None,
    name: str | None,
    method: str,
    client_addr: str | None,
) -> asyncpg.Record:
    """Self-registration: a `pending` owner; superusers are told, so is a password registrant; audited as them.

    A duplicate e-mail raises Conflict (the caller answers as for any existing address).
    """
    user = await create_user(
        conn, email=email, password_hash=password_hash, role="owner", status="pending", name=name
    )
    await messages.notify_new_registration(conn, settings, email=user["email"], method=method)
    if method == "password":
        await messages.notify_registration_received(conn, settings, email=user["email"])
    actor = Actor(user_id=user["id"], email=user["email"], role="owner", client_addr=client_addr)
    await actor.audit(conn, "auth.register", _target(user), method=method)
    return user


async def registration_attempt(
    conn: asyncpg.Connection, settings: Settings, user: asyncpg.Record, *, client_addr: str | None
) -> None:
    """Someone registered an address that has an account: tell its owner (at most hourly), change nothing."""
    await messages.notify_already_registered(conn, settings, email=user["email"])
    actor = Actor(user_id=user["id"], email=user["email"], role=user["role"], client_addr=client_addr)
    await actor.audit(conn, "auth.register_existing", _target(user))


async def create_active_user(
    conn: asyncpg.Connection, actor: Actor, *, email: str, password: str, role: str
) -> asyncpg.Record:
    """Create an active account with a password (the policy applies): an operator's way to add users."""
    hashed = await check_and_hash(password, email=email)
    row = await create_user(conn, email=email, password_hash=hashed, role=role, status="active")
    await actor.audit(conn, "user.create", _target(row), email=row["email"], role=row["role"])
    return row


async def approve(
    conn: asyncpg.Connection, actor: Actor, settings: Settings, ref: int | str
) -> asyncpg.Record:
    """Activate a pending account; its owner gets an 'account activated' e-mail."""
    user = await require_user(conn, ref)
    if user["status"] == "active":
        raise Conflict(f"user {user['id']} is already active")
    updated = await accounts.set_status(
        conn, user["id"], "active", actor_id=actor.user_id, bump_version=False
    )
    await messages.notify_activated(conn, settings, email=user["email"])
    await actor.audit(conn, "user.approve", _target(user), email=user["email"], previous=user["status"])
    assert updated is not None  # the row was read in this transaction
    return updated


async def reject(
    conn: asyncpg.Connection, actor: Actor, settings: Settings, ref: int | str
) -> asyncpg.Record:
    """Decline a pending registration: the account is kept, blocked, so the e-mail cannot register again."""
    user = await require_user(conn, ref)
    if user["status"] != "pending":
        raise Conflict(f"user {user['id']} is not pending (status {user['status']})")
    updated, _, _ = await _block(conn, user, actor)
    await messages.notify_rejected(conn, settings, email=user["email"])
    await actor.audit(conn, "user.reject", _target(user), email=user["email"])
    return updated


async def block(conn: asyncpg.Connection, actor: Actor, ref: int | str) -> asyncpg.Record:
    """Block an account: every access token, refresh token and API key it holds stops working at once."""
    user = await require_user(conn, ref)
    if actor.user_id is not None and user["id"] == actor.user_id:
        raise Conflict("you cannot block your own account")
    updated, sessions, keys = await _block(conn, user, actor)
    await actor.audit(
        conn,
        "user.block",
        _target(user),
        email=user["email"],
        previous=user["status"],
        sessions_revoked=sessions,
        api_keys_revoked=keys,
    )
    return updated


async def _block(
    conn: asyncpg.Connection, user: asyncpg.Record, actor: Actor
) -> tuple[asyncpg.Record, int, int]:
    """Status blocked, token version bumped, every session and API key revoked: (user, sessions, keys)."""
    sessions = await auth_q.revoke_user_sessions(conn, user["id"])
    keys = await auth_q.revoke_user_api_keys(conn, user["id"])
    updated = await accounts.set_status(
        conn, user["id"], "blocked", actor_id=actor.user_id, bump_version=True
    )
    assert updated is not None  # the row was read in this transaction
    return updated, sessions, keys


async def unblock(conn: asyncpg.Connection, actor: Actor, ref: int | str) -> asyncpg.Record:
    """Give a blocked account back (status active). Its revoked sessions and API keys stay revoked."""
    user = await require_user(conn, ref)
    if user["status"] != "blocked":
        raise Conflict(f"user {user['id']} is not blocked (status {user['status']})")
    updated = await accounts.set_status(
        conn, user["id"], "active", actor_id=actor.user_id, bump_version=False
    )
    await actor.audit(conn, "user.unblock", _target(user), email=user["email"])
    assert updated is not None
    return updated


async def reset_password(
    conn: asyncpg.Connection, actor: Actor, settings: Settings, ref: int | str, password: str
) -> asyncpg.Record:
    """Set another user's password (policy applies); every session of theirs ends, they are told by e-mail."""
    user = await require_user(conn, ref)
    hashed = await check_and_hash(password, email=user["email"])
    await accounts.set_password_hash(conn, user["id"], hashed)
    sessions = await auth_q.revoke_user_sessions(conn, user["id"])
    await messages.notify_password_reset(conn, settings, email=user["email"])
    await actor.audit(
        conn, "user.password_reset", _target(user), email=user["email"], sessions_revoked=sessions
    )
    return user


async def change_own_password(
    conn: asyncpg.Connection,
    actor: Actor,
    settings: Settings,
    *,
    current_password: str,
    new_password: str,
    keep_session: str | None,
) -> int:
    """Change the actor's own password after checking the current one; other sessions end. Returns their count.

    An account without a password (Google sign-in only) has no current password to prove: it gets one from
    an administrator (`reset_password`), not from whoever holds one of its access tokens.
    """
    if actor.user_id is None:
        raise InvalidInput("only a user account has a password")
    row = await accounts.user_with_hash(conn, actor.user_id)
    if row is None:
        raise NotFound(f"no user {actor.user_id}")
    if row["password_hash"] is None:
        raise Conflict(
            "this account signs in with Google and has no password; an administrator can set one",
            code="no_password",
        )
    if not await verify_password(current_password, row["password_hash"]):
        raise InvalidInput("the current password is wrong", code="wrong_password")
    if current_password == new_password:
        raise InvalidInput("the new password is the current one", code="weak_password")
    hashed = await check_and_hash(new_password, email=row["email"])
    await accounts.set_password_hash(conn, row["id"], hashed)
    ended = await auth_q.revoke_other_sessions(conn, row["id"], keep_session)
    await messages.notify_password_changed(conn, settings, email=row["email"])
    await actor.audit(conn, "user.password_change", _target(row), sessions_revoked=ended)
    return ended
