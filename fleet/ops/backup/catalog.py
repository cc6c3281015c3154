"""What a backup needs to know about the database: version, rights, tables and their row counts."""

from __future__ import annotations

import asyncpg

from fleet.ops.backup.errors import BackupError


async def server_major(conn: asyncpg.Connection) -> int:
    return int(await conn.fetchval("SHOW server_version_num")) // 10000


async def require_rights(conn: asyncpg.Connection, *, dump: bool = False, create_db: bool = False) -> None:
    """Refuse early, with the fix, when the connecting role cannot do the job."""
    row = await conn.fetchrow(
        "SELECT current_user AS name, rolsuper, rolbypassrls, rolcreatedb FROM pg_roles WHERE rolname = current_user"
    )
    assert row is not None
    if dump and not (row["rolsuper"] or row["rolbypassrls"]):
        # Every table has FORCE ROW LEVEL SECURITY: without BYPASSRLS pg_dump would see no rows at all.
        raise BackupError(
            f"role {row['name']} cannot read past row-level security, so pg_dump would fail: "
            f"ALTER ROLE {row['name']} BYPASSRLS (as a superuser), or back up with a superuser DATABASE_URL"
        )
    if create_db and not (row["rolsuper"] or row["rolcreatedb"]):
        raise BackupError(
            f"role {row['name']} cannot create the scratch database that verification restores into: "
            f"ALTER ROLE {row['name']} CREATEDB (as a superuser)"
        )


async def user_tables(conn: asyncpg.Connection) -> list[str]:
    """Every table holding rows in the schema (partitions included, partitioned parents not)."""
    rows = await conn.fetch(
        """SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
           WHERE n.nspname = 'public' AND c.relkind = 'r' ORDER BY c.relname"""
    )
    return [row["relname"] for row in rows]


async def table_counts(conn: asyncpg.Connection) -> dict[str, int]:
    """Exact row counts per table (in the connection's current snapshot)."""
    counts: dict[str, int] = {}
    for table in await user_tables(conn):
        quoted = '"' + table.replace('"', '""') + '"'
        counts[table] = int(await conn.fetchval(f"SELECT count(*) FROM public.{quoted}"))
    return counts


async def relation_count(conn: asyncpg.Connection) -> int:
    """Tables, views, sequences ... in the schema: 0 for an empty database."""
    return int(
        await conn.fetchval(
            """SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
               WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')"""
        )
    )


async def alembic_revision(conn: asyncpg.Connection) -> str | None:
    if not await conn.fetchval("SELECT to_regclass('public.alembic_version') IS NOT NULL"):
        return None
    value = await conn.fetchval("SELECT version_num FROM alembic_version")
    return str(value) if value is not None else None
