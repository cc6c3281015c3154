"""Helpers of the management commands: one system transaction per command, the CLI actor, output on stdout."""

from __future__ import annotations

import secrets
import sys
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import typer
from rich.table import Table

T = TypeVar("T")


def run_in_transaction(action: Callable[[Any], Awaitable[T]]) -> T:
    """Run `action(conn, actor)` in one system transaction against the server's database."""
    from fleet.cli import _with_db, run_async, settings_or_exit

    settings = settings_or_exit()

    async def in_transaction(db: Any) -> T:
        async with db.system() as conn:
            return await action(conn)

    return run_async(lambda: _with_db(settings, in_transaction))


def cli_actor() -> Any:
    from fleet.manage.actor import Actor

    return Actor.cli()


def cli_settings() -> Any:
    from fleet.cli import settings_or_exit

    return settings_or_exit()


def out(text: str) -> None:
    from fleet.cli import console

    console.print(text, highlight=False, soft_wrap=True)


def user_ref(value: str) -> int | str:
    return int(value) if value.isascii() and value.isdigit() else value


def password_from(password: str | None, generate: bool) -> str:
    from fleet.cli import fail

    if password is not None:
        return password
    if generate:
        return secrets.token_urlsafe(12)
    if sys.stdin.isatty():
        return str(typer.prompt("Password", hide_input=True, confirmation_prompt=True))
    raise fail("give --password, or --generate", 2)


def check_password_or_exit(password: str, email: str | None) -> None:
    from fleet.cli import fail
    from fleet.errors import FleetError
    from fleet.passwords import check_password

    try:
        check_password(password, email=email)
    except FleetError as err:
        raise fail(str(err), 2) from None


def table(rows: list[dict[str, Any]], columns: list[str]) -> None:
    from fleet.cli import console

    table = Table(*columns)
    for row in rows:
        table.add_row(*("" if row.get(c) is None else str(row.get(c)) for c in columns))
    console.print(table)
