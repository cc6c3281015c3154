"""`fleet user ...`: accounts at the command line (create, list, approve, block, unblock, set-password)."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

import typer

from fleet.manage.cli_common import (
    check_password_or_exit,
    cli_actor,
    cli_settings,
    out,
    password_from,
    run_in_transaction,
    table,
    user_ref,
)


def user_create(
    email: Annotated[str, typer.Option(help="login e-mail")],
    password: Annotated[
        str | None, typer.Option(help="password (prompted when omitted; generated with --generate)")
    ] = None,
    role: Annotated[str, typer.Option(help="superuser or owner")] = "owner",
    generate: Annotated[bool, typer.Option("--generate", help="generate a password and print it")] = False,
) -> None:
    """Create an active user."""
    from fleet.cli import fail
    from fleet.manage import users

    if role not in ("superuser", "owner"):
        raise fail(f"unknown role {role!r}: use superuser or owner", 2)
    secret = password_from(password, generate)
    check_password_or_exit(secret, email)
    actor = cli_actor()

    async def action(conn: Any) -> Any:
        return await users.create_active_user(conn, actor, email=email, password=secret, role=role)

    row = run_in_transaction(action)
    out(f"created {row['role']} {row['email']} (id {row['id']})")
    if generate:
        out(f"password: {secret}")


def user_list(
    status: Annotated[str | None, typer.Option(help="pending, active or blocked")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines instead of a table")] = False,
) -> None:
    """List users."""
    from fleet.db.queries.accounts import list_users

    async def action(conn: Any) -> list[dict[str, Any]]:
        rows, _ = await list_users(conn, status=status, limit=100_000, offset=0)
        return [dict(r) for r in rows]

    rows = run_in_transaction(action)
    if as_json:
        for row in rows:
            out(json.dumps(row, default=str))
    else:
        table(rows, ["id", "email", "role", "status", "created_at", "last_login_at"])


def _status_command(use_case: str, verb: str, doc: str) -> Callable[..., None]:
    """A command running `fleet.manage.users.<use_case>(conn, actor[, settings], user)`."""

    def command(user: Annotated[str, typer.Argument(help="user id or e-mail")]) -> None:
        from fleet.manage import users

        actor, settings = cli_actor(), cli_settings()

        async def action(conn: Any) -> Any:
            if use_case == "approve":
                return await users.approve(conn, actor, settings, user_ref(user))
            run: Callable[..., Awaitable[Any]] = getattr(users, use_case)
            return await run(conn, actor, user_ref(user))

        row = run_in_transaction(action)
        out(f"{row['email']} (id {row['id']}) {verb}: status {row['status']}")

    command.__doc__ = doc
    return command


def user_set_password(
    user: Annotated[str, typer.Argument(help="user id or e-mail")],
    password: Annotated[str | None, typer.Option(help="new password (prompted when omitted)")] = None,
    generate: Annotated[bool, typer.Option("--generate", help="generate a password and print it")] = False,
) -> None:
    """Set a user's password (the policy applies); their sessions end and they get an e-mail."""
    from fleet.manage import users

    secret = password_from(password, generate)
    actor, settings = cli_actor(), cli_settings()

    async def action(conn: Any) -> Any:
        return await users.reset_password(conn, actor, settings, user_ref(user), secret)

    row = run_in_transaction(action)
    out(f"password of {row['email']} (id {row['id']}) set; their sessions were ended")
    if generate:
        out(f"password: {secret}")


def register_user_commands(user_app: typer.Typer) -> None:
    user_app.command("create")(user_create)
    user_app.command("list")(user_list)
    for name, verb, doc in (
        ("approve", "approved", "Activate a pending account (the owner gets an e-mail)."),
        ("block", "blocked", "Block an account: its sessions and API keys are revoked for good."),
        ("unblock", "unblocked", "Give a blocked account back; its old sessions and API keys stay revoked."),
    ):
        user_app.command(name)(_status_command(name, verb, doc))
    user_app.command("set-password")(user_set_password)
