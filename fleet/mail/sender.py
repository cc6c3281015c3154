"""Deliver the outbox over SMTP (aiosmtplib).

One message per transaction: the row is locked with SKIP LOCKED while it is sent, so several API
processes can run senders side by side without sending twice. Failures are retried with exponential
backoff (see `fleet.db.queries.mail`). `SMTP_URL` looks like `smtp://user:pass@host:587?starttls=1`
or `smtps://host:465`; without it no sender runs and mail stays queued.
"""

from __future__ import annotations

from dataclasses import dataclass
from email.message import EmailMessage
from urllib.parse import parse_qs, unquote, urlsplit

import aiosmtplib
import structlog
from prometheus_client import Counter, Gauge

from fleet.config import Settings
from fleet.db import Database
from fleet.db.queries import mail
from fleet.errors import ConfigError
from fleet.ops.jobs import PeriodicJob

log = structlog.get_logger(__name__)

MAIL_SENT = Counter("fleet_mail_sent_total", "Outbox messages handed to SMTP, by result", ["result"])
MAIL_PENDING = Gauge("fleet_mail_outbox_pending", "Messages in the outbox not sent yet")

POLL_INTERVAL_SEC = 15.0  # other processes may queue mail; they cannot wake this one
SMTP_TIMEOUT_SEC = 15.0


@dataclass(frozen=True)
class SmtpTarget:
    hostname: str
    port: int
    username: str | None
    password: str | None
    use_tls: bool
    start_tls: bool | None  # None: upgrade when the server offers STARTTLS


def parse_smtp_url(url: str) -> SmtpTarget:
    parts = urlsplit(url)
    if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
        raise ConfigError(f"SMTP_URL must look like smtp://host:port or smtps://host:port, not {url!r}")
    query = parse_qs(parts.query)
    start_tls: bool | None = None
    if "starttls" in query:
        start_tls = query["starttls"][0].lower() in ("1", "true", "yes")
    use_tls = parts.scheme == "smtps"
    return SmtpTarget(
        hostname=parts.hostname,
        port=parts.port or (465 if use_tls else 25),
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
        use_tls=use_tls,
        start_tls=False if use_tls else start_tls,
    )


def build_message(sender: str, recipient: str, subject: str, body: str) -> EmailMessage:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = recipient
    message["Subject"] = subject
    message.set_content(body)
    return message


class MailSender:
    """Drains the outbox; `wake()` after queueing to send without waiting for the next poll."""

    def __init__(self, db: Database, settings: Settings) -> None:
        if not settings.smtp_url:
            raise ConfigError("the mail sender needs SMTP_URL")
        self.db = db
        self.settings = settings
        self.target = parse_smtp_url(settings.smtp_url)
        # Per-message SMTP failures are handled (and retried with backoff) inside deliver_due; the job fails
        # only when the outbox itself cannot be reached, and then logs it once, not every poll.
        self.job = PeriodicJob("mail", self.deliver_due, interval=POLL_INTERVAL_SEC, timeout=300)

    def wake(self) -> None:
        self.job.wake()

    async def _send(self, row: object) -> None:
        message = build_message(self.settings.mail_from, row["recipient"], row["subject"], row["body"])  # type: ignore[index]
        target = self.target
        await aiosmtplib.send(
            message,
            hostname=target.hostname,
            port=target.port,
            username=target.username,
            password=target.password,
            use_tls=target.use_tls,
            start_tls=target.start_tls,
            timeout=SMTP_TIMEOUT_SEC,
        )

    async def deliver_due(self) -> int:
        """Send every message that is due; returns how many were sent."""
        sent = 0
        while True:
            async with self.db.system() as conn:
                row = await mail.claim_next(conn)
                if row is None:
                    MAIL_PENDING.set(await mail.pending_count(conn))
                    return sent
                try:
                    await self._send(row)
                except (aiosmtplib.SMTPException, OSError, TimeoutError) as err:
                    await mail.mark_failed(conn, row["id"], f"{type(err).__name__}: {err}")
                    MAIL_SENT.labels("error").inc()
                    log.warning(
                        "mail_send_failed", id=row["id"], attempts=row["attempts"] + 1, error=str(err)
                    )
                    continue
                await mail.mark_sent(conn, row["id"])
            MAIL_SENT.labels("ok").inc()
            log.info("mail_sent", id=row["id"])
            sent += 1

    async def run(self) -> None:
        """Deliver forever: at start, when woken, and every POLL_INTERVAL_SEC (see `self.job`)."""
        log.info("mail_sender_started", host=self.target.hostname, port=self.target.port)
        await self.job.run()
