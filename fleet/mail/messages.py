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


# Mail that anyone can make the server send (by registering an address) goes out at most this often.
UNSOLICITED_MAIL_INTERVAL_SEC = 3600


async def _queue_unsolicited(
    conn: asyncpg.Connection, settings: Settings, email: str, subject: str, body: str
) -> list[int]:
    if await mail.queued_recently(
        conn, recipient=email, subject=subject, within_sec=UNSOLICITED_MAIL_INTERVAL_SEC
    ):
        return []
    return await _queue(conn, settings, [email], subject, body)


async def notify_registration_received(
    conn: asyncpg.Connection, settings: Settings, *, email: str
) -> list[int]:
    """Tell a new registrant that the account awaits approval."""
    body = (
        "Your Fleet Server account was created and is waiting for an administrator's approval.\n"
        "You will get another e-mail when it is activated.\n\n"
        "If you did not register, you can ignore this message.\n"
    )
    return await _queue_unsolicited(conn, settings, email, "Fleet Server: registration received", body)


async def notify_already_registered(conn: asyncpg.Connection, settings: Settings, *, email: str) -> list[int]:
    """Tell the owner of an address that someone tried to register it again (the API answers as for a new one)."""
    body = (
        "Someone asked to register a Fleet Server account with this e-mail address, which already has one,\n"
        "so nothing was changed.\n\n"
        f"If it was you, sign in at {_link(settings, '/ui/')} (with your password or Google).\n"
        "If you forgot your password, ask the fleet administrator to reset it.\n"
        "If it was not you, you can ignore this message.\n"
    )
    return await _queue_unsolicited(conn, settings, email, "Fleet Server: registration attempt", body)


async def notify_password_reset(conn: asyncpg.Connection, settings: Settings, *, email: str) -> list[int]:
    """Tell a user an administrator set a new password for them (their sessions were ended)."""
    body = (
        "An administrator set a new password for your Fleet Server account. You have been signed out\n"
        "everywhere; sign in with the new password, which the administrator gives you.\n\n"
        "If you did not ask for this, contact the fleet administrator.\n"
    )
    return await _queue(conn, settings, [email], "Fleet Server: password reset", body)


async def notify_password_changed(conn: asyncpg.Connection, settings: Settings, *, email: str) -> list[int]:
    """Tell a user their password was changed (from a signed-in session)."""
    body = (
        "The password of your Fleet Server account was changed. Other devices were signed out.\n\n"
        "If you did not do this, contact the fleet administrator at once.\n"
    )
    return await _queue(conn, settings, [email], "Fleet Server: password changed", body)
