"""What the database is doing, for operators: sessions, waits, locks, sizes, partitions, RLS and role flags.

Run over the schema owner's connection (DATABASE_URL), which sees every session's query text and the catalog.
Each function returns plain rows (dicts) that the CLI prints as tables or writes into an archive.
"""

from __future__ import annotations

from typing import Any

import asyncpg

ACTIVITY_SQL = """
SELECT pid, usename AS role, application_name AS app, state, wait_event_type AS wait_type, wait_event,
       round(extract(epoch FROM now() - xact_start)::numeric, 1) AS xact_s,
       round(extract(epoch FROM now() - query_start)::numeric, 1) AS query_s,
       left(regexp_replace(query, '\\s+', ' ', 'g'), 200) AS query
FROM pg_stat_activity
WHERE datname = current_database() AND pid <> pg_backend_pid() AND state IS DISTINCT FROM 'idle'
ORDER BY xact_start NULLS LAST
"""

BLOCKED_SQL = """
SELECT blocked.pid AS blocked_pid, left(blocked.query, 120) AS blocked_query,
       blocking.pid AS blocking_pid, left(blocking.query, 120) AS blocking_query,
       round(extract(epoch FROM now() - blocked.query_start)::numeric, 1) AS waiting_s
FROM pg_stat_activity blocked
JOIN LATERAL unnest(pg_blocking_pids(blocked.pid)) AS b(pid) ON true
JOIN pg_stat_activity blocking ON blocking.pid = b.pid
WHERE blocked.datname = current_database()
"""

SIZES_SQL = """
SELECT c.relname AS table, pg_size_pretty(pg_total_relation_size(c.oid)) AS total,
       pg_total_relation_size(c.oid) AS bytes, s.n_live_tup AS live_rows, s.n_dead_tup AS dead_rows,
       s.last_autovacuum, s.last_autoanalyze
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_stat_user_tables s ON s.relid = c.oid
WHERE n.nspname = 'public' AND c.relkind = 'r'
ORDER BY pg_total_relation_size(c.oid) DESC
LIMIT $1
"""

DATABASE_SQL = """
SELECT pg_size_pretty(pg_database_size(current_database())) AS size, numbackends AS connections,
       xact_commit, xact_rollback, deadlocks, temp_bytes,
       round(100.0 * blks_hit / nullif(blks_hit + blks_read, 0), 2) AS cache_hit_pct
FROM pg_stat_database WHERE datname = current_database()
"""

# Rows stranded in default partitions (their month had no partition) and whether next month exists.
PARTITIONS_SQL = """
SELECT p.parent,
       (SELECT count(*) FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
         WHERE i.inhparent = p.parent::regclass) AS partitions,
       to_regclass(p.parent || '_p' || to_char(now() + interval '1 month', 'YYYYMM')) IS NOT NULL AS next_month,
       (SELECT reltuples::bigint FROM pg_class WHERE oid = (p.parent || '_default')::regclass) AS default_rows_est
FROM unnest(ARRAY['measurements', 'positions', 'raw_frames', 'can_data']) AS p(parent)
"""

RLS_SQL = """
SELECT c.relname AS table, c.relrowsecurity AS enabled, c.relforcerowsecurity AS forced
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') AND NOT c.relispartition
  AND c.relname <> 'alembic_version'
ORDER BY 1
"""

# Partitions fleet_app may write to directly (migration 0010: INSERT only, for the ingest writer's COPY), and
# whether each carries the trigger that limits that to the system context.
OPEN_PARTITIONS_SQL = """
SELECT c.relname AS partition,
       has_table_privilege('fleet_app', c.oid, 'SELECT') OR has_table_privilege('fleet_app', c.oid, 'UPDATE')
           OR has_table_privilege('fleet_app', c.oid, 'DELETE') AS beyond_insert,
       EXISTS (SELECT 1 FROM pg_trigger t WHERE t.tgrelid = c.oid AND t.tgname = 'append_guard'
               AND t.tgenabled <> 'D') AS guarded
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = 'public' AND c.relispartition AND has_table_privilege('fleet_app', c.oid, 'INSERT')
ORDER BY 1
"""

ROLES_SQL = """
SELECT rolname AS role, rolsuper AS superuser, rolbypassrls AS bypass_rls, rolcreaterole AS create_role,
       (SELECT count(*) FROM information_schema.role_table_grants g WHERE g.grantee = r.rolname) AS table_grants
FROM pg_roles r WHERE rolname IN ('fleet_app', 'fleet_grafana')
ORDER BY 1
"""


async def rows(conn: asyncpg.Connection, sql: str, *args: Any) -> list[dict[str, Any]]:
    return [dict(row) for row in await conn.fetch(sql, *args)]


async def activity(conn: asyncpg.Connection) -> dict[str, list[dict[str, Any]]]:
    """Sessions at work, who blocks whom, the largest tables and database-wide counters."""
    return {
        "sessions": await rows(conn, ACTIVITY_SQL),
        "blocked": await rows(conn, BLOCKED_SQL),
        "tables": await rows(conn, SIZES_SQL, 15),
        "database": await rows(conn, DATABASE_SQL),
        "partitions": await rows(conn, PARTITIONS_SQL),
    }
