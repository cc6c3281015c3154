"""First-run help: in development, a fresh database gets an administrator so `make run` can be used at once."""

from __future__ import annotations

import secrets

from fleet.config import Settings
from fleet.db import Database
from fleet.db.queries.users import create_user
from fleet.passwords import hash_password

DEV_ADMIN_EMAIL = "admin@fleet.local"
# Key of the transaction-level advisory lock that serialises the check below between processes: several
# `fleet serve` processes started at once on a fresh database (`--workers`, one per role) would otherwise
# all see no superuser and all but one fail on the duplicate e-mail.
_ADMIN_LOCK_KEY = 0x666C6565_61646D  # "flee" "adm"


async def ensure_development_admin(db: Database, settings: Settings) -> str:
    """Return a line telling how to log in; create a development superuser when there is none."""
    if settings.production:
        return (
            "  Log in:          create an administrator with `fleet user create --role superuser --email ...`"
        )
    credentials = settings.data_dir / "initial_admin.txt"
    async with db.system() as conn:
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _ADMIN_LOCK_KEY)
        has_admin = await conn.fetchval("SELECT EXISTS (SELECT 1 FROM users WHERE role = 'superuser')")
        if not has_admin:
            password = secrets.token_urlsafe(12)
            await create_user(
                conn,
                email=DEV_ADMIN_EMAIL,
                password_hash=await hash_password(password),
                role="superuser",
                status="active",
            )
            credentials.write_text(f"{DEV_ADMIN_EMAIL}\n{password}\n", encoding="utf-8")
            credentials.chmod(0o600)
    if credentials.exists():
        email, password = credentials.read_text(encoding="utf-8").split()[:2]
        return f"  Log in:          {email} / {password}  (development account, kept in {credentials})"
    return "  Log in:          with an existing superuser (`fleet user create` adds one)"
