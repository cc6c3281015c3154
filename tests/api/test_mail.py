"""Mail: queued in the outbox with the change it announces, delivered over SMTP, kept when SMTP is absent or down."""

from __future__ import annotations

import httpx
import pytest
import structlog

from fleet.api.app import create_app
from fleet.config import Settings
from fleet.db import Database
from fleet.db.queries import mail as mail_q
from fleet.errors import ConfigError
from fleet.mail.sender import MailSender, parse_smtp_url
from fleet.runtime import Runtime

from .conftest import PASSWORD, Account, MailHandler, free_port, make_account, unique_email


async def outbox_for(db: Database, recipient: str) -> list[dict[str, object]]:
    async with db.system() as conn:
        rows = await conn.fetch(
            "SELECT subject, sent_at, attempts, last_error FROM mail_outbox WHERE recipient = $1 ORDER BY id",
            recipient,
        )
    return [dict(r) for r in rows]


async def user_id_of(db: Database, email: str) -> int:
    async with db.system() as conn:
        user_id: int = await conn.fetchval("SELECT id FROM users WHERE lower(email) = lower($1)", email)
    return user_id


async def test_without_smtp_mail_stays_in_the_outbox_and_is_logged(
    db: Database, api_settings: Settings, admin: Account
) -> None:
    settings = api_settings.model_copy(update={"smtp_url": None})
    app = create_app(settings, runtime=Runtime(settings=settings, db=db, roles=["api"]))
    email = unique_email("nosmtp")
    with structlog.testing.capture_logs() as logs:
        async with app.router.lifespan_context(app):
            assert app.state.api.mail_sender is None
            async with httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://fleet"
            ) as client:
                created = await client.post("/auth/register", json={"email": email, "password": PASSWORD})
                assert created.status_code == 202
                user_id = await user_id_of(db, email)
                await client.post(f"/admin/users/{user_id}/approve", headers=admin.headers)
    activation = await outbox_for(db, email)
    assert [m["subject"] for m in activation] == [
        "Fleet Server: registration received",
        "Fleet Server: account activated",
    ]
    assert activation[-1]["sent_at"] is None and activation[-1]["attempts"] == 0
    assert any(entry["event"] == "mail_kept_in_outbox" for entry in logs)


async def test_sender_delivers_and_retries_later_when_smtp_is_down(
    db: Database, api_settings: Settings, smtp_server: tuple[MailHandler, int], admin: Account
) -> None:
    handler, _port = smtp_server
    email = unique_email("retry")
    async with db.system() as conn:
        [message_id] = await mail_q.enqueue(conn, recipients=[email], subject="hello", body="über body")
    down = MailSender(db, api_settings.model_copy(update={"smtp_url": f"smtp://127.0.0.1:{free_port()}"}))
    await down.deliver_due()
    [failed] = await outbox_for(db, email)
    assert failed["sent_at"] is None and failed["attempts"] == 1 and failed["last_error"]
    # Not due again before its backoff: a second pass leaves it alone.
    await down.deliver_due()
    assert (await outbox_for(db, email))[0]["attempts"] == 1

    async with db.system() as conn:  # pretend the backoff has passed
        await conn.execute(
            "UPDATE mail_outbox SET created_at = now() - interval '1 hour' WHERE id = $1", message_id
        )
    up = MailSender(db, api_settings)
    await up.deliver_due()
    [sent] = await outbox_for(db, email)
    assert sent["sent_at"] is not None and sent["attempts"] == 2
    [received] = handler.to(email)
    assert "Subject: hello" in received.content and "From: fleet@localhost" in received.content


def test_smtp_url_parsing() -> None:
    plain = parse_smtp_url("smtp://127.0.0.1:2525")
    assert (plain.hostname, plain.port, plain.use_tls, plain.start_tls) == ("127.0.0.1", 2525, False, None)
    secure = parse_smtp_url("smtps://mailer%40example.com:p%40ss@mail.example.com")
    assert (secure.port, secure.use_tls, secure.username, secure.password) == (
        465,
        True,
        "mailer@example.com",
        "p@ss",
    )
    assert parse_smtp_url("smtp://mx.example.com:587?starttls=1").start_tls is True
    with pytest.raises(ConfigError):
        parse_smtp_url("http://example.com")


async def test_rejection_and_superuser_notifications(
    http: httpx.AsyncClient, db: Database, api_settings: Settings, admin: Account
) -> None:
    other_admin = await make_account(db, api_settings, role="superuser")
    inactive_admin = await make_account(db, api_settings, role="superuser", status="blocked")
    email = unique_email("reject")
    created = await http.post("/auth/register", json={"email": email, "password": PASSWORD})
    assert created.status_code == 202
    user_id = await user_id_of(db, email)
    for boss in (admin, other_admin):
        assert [m["subject"] for m in await outbox_for(db, boss.email)][-1].endswith("awaiting approval")
    assert await outbox_for(db, inactive_admin.email) == []
    rejected = await http.post(f"/admin/users/{user_id}/reject", headers=admin.headers)
    assert rejected.status_code == 200 and rejected.json()["status"] == "blocked"
    assert (await http.post(f"/admin/users/{user_id}/reject", headers=admin.headers)).status_code == 409
    assert [m["subject"] for m in await outbox_for(db, email)] == [
        "Fleet Server: registration received",
        "Fleet Server: registration not approved",
    ]
    login = await http.post("/auth/login", json={"email": email, "password": PASSWORD})
    assert login.status_code == 403
