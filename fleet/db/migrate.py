"""Apply the Alembic migrations (raw SQL) and keep the runtime roles' passwords in step with settings."""

from __future__ import annotations

from pathlib import Path

import structlog
from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine, pool, text
from sqlalchemy.engine import Connection

from fleet.errors import DatabaseUnavailable

log = structlog.get_logger(__name__)

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
# Serialises concurrent `fleet serve` starts on one database (any constant works; this one spells "FLEET").
MIGRATION_LOCK_KEY = 0x464C454554


def sqlalchemy_url(dsn: str) -> str:
    """Turn a libpq DSN (`postgresql://…`) into a SQLAlchemy URL for the psycopg driver."""
    for prefix in ("postgresql+psycopg://", "postgresql://", "postgres://"):
        if dsn.startswith(prefix):
            return "postgresql+psycopg://" + dsn[len(prefix) :]
    raise DatabaseUnavailable("DATABASE_URL must start with postgresql://")


def alembic_config(connection: Connection | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("path_separator", "os")
    cfg.set_main_option("version_locations", str(MIGRATIONS_DIR / "versions"))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def _run(dsn: str, action: str, revision: str, passwords: dict[str, str] | None) -> None:
    # hide_parameters: a failing statement must not echo a password into an exception or a log.
    engine = create_engine(sqlalchemy_url(dsn), poolclass=pool.NullPool, hide_parameters=True)
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT pg_advisory_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
            conn.commit()
            try:
                cfg = alembic_config(conn)
                if action == "upgrade":
                    command.upgrade(cfg, revision)
                else:
                    command.downgrade(cfg, revision)
                conn.commit()
                for role, password in (passwords or {}).items():
                    # format(%L) quotes the literal server-side; the password never appears in a log.
                    stmt = conn.execute(
                        text(
                            "SELECT format('ALTER ROLE %I PASSWORD %L', CAST(:role AS text), CAST(:pw AS text))"
                        ),
                        {"role": role, "pw": password},
                    ).scalar_one()
                    try:
                        conn.execute(text(stmt))
                    except Exception as err:
                        # The statement carries the password: report only the server's primary message.
                        diag = getattr(getattr(err, "orig", None), "diag", None)
                        reason = getattr(diag, "message_primary", None) or type(err).__name__
                        raise DatabaseUnavailable(
                            f"could not set the password of role {role}: {reason}"
                        ) from None
                conn.commit()
            finally:
                conn.rollback()
                conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": MIGRATION_LOCK_KEY})
                conn.commit()
    except DatabaseUnavailable:
        raise
    except Exception as err:
        raise DatabaseUnavailable(f"migration failed: {err}") from err
    finally:
        engine.dispose()


def upgrade(dsn: str, revision: str = "head", passwords: dict[str, str] | None = None) -> None:
    """Apply migrations up to `revision` and set the runtime roles' passwords (blocking; run in a thread)."""
    _run(dsn, "upgrade", revision, passwords)
    log.info("migrations_applied", revision=revision)


def downgrade(dsn: str, revision: str) -> None:
    """Revert migrations down to `revision` (blocking)."""
    _run(dsn, "downgrade", revision, None)
    log.info("migrations_reverted", revision=revision)


def current_revision(dsn: str) -> str | None:
    """The revision the database is at, or None for an empty database."""
    engine = create_engine(sqlalchemy_url(dsn), poolclass=pool.NullPool)
    try:
        with engine.connect() as conn:
            exists = conn.execute(text("SELECT to_regclass('alembic_version') IS NOT NULL")).scalar_one()
            if not exists:
                return None
            return conn.execute(text("SELECT version_num FROM alembic_version")).scalar_one_or_none()
    finally:
        engine.dispose()
