"""The texts the server sends, and queueing them in the caller's transaction."""

from __future__ import annotations

import asyncpg
import structlog

from fleet.config import Settings
from fleet.db.queries import accounts, mail

log = structlog.get_logger(__name__)


def _link(settings: Settings, path: str) -> str:
    base = (settings.public_url or f"http://{settings.api_host}:{settings.api_port}").rstrip("/")
    return f"{base}{path}"


async def _queue(
    conn: asyncpg.Connection, settings: Settings, recipients: list[str], subject: str, body: str
) -> list[int]:
    if not recipients:
        return []
    ids = await mail.enqueue(conn, recipients=recipients, subject=subject, body=body)
    if not settings.smtp_url:
        # No SMTP configured: the message stays in the outbox; say so once, where operators look.
        log.info("mail_kept_in_outbox", ids=ids, recipients=len(recipients), subject=subject)
    return ids


async def notify_new_registration(
    conn: asyncpg.Connection, settings: Settings, *, email: str, method: str
) -> list[int]:
    """Tell every active superuser that an account awaits approval."""
    recipients = await accounts.active_superuser_emails(conn)
    body = (
        f"A new owner account is waiting for approval.\n\n"
        f"E-mail: {email}\nSigned up with: {method}\n\n"
        f"Approve or reject it in the admin panel: {_link(settings, '/ui/admin')}\n"
        f"or with POST /admin/users/{{id}}/approve (see GET /admin/users/pending).\n"
    )
    return await _queue(conn, settings, recipients, "Fleet Server: new registration awaiting approval", body)


async def notify_activated(conn: asyncpg.Connection, settings: Settings, *, email: str) -> list[int]:
    body = (
        "Your Fleet Server account has been activated.\n\n"
        f"Sign in at {_link(settings, '/ui/')} to see your vehicles.\n"
    )
    return await _queue(conn, settings, [email], "Fleet Server: account activated", body)


async def notify_rejected(conn: asyncpg.Connection, settings: Settings, *, email: str) -> list[int]:
    body = (
        "Your registration on Fleet Server was not approved. Contact the fleet administrator for details.\n"
    )
    return await _queue(conn, settings, [email], "Fleet Server: registration not approved", body)
