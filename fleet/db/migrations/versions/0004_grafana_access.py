"""Grafana reads tenant data only through functions that check access for the signed-in Grafana user.

Before this revision `fleet_grafana` could SELECT tenant tables under row-level security, relying on a
session context (`app.user_role`) that any client of that role may set for itself with `set_config()`. A
dashboard query is text a Grafana user can change (a URL variable, or a raw `/api/ds/query` call), so that
was no isolation at all. Now:

* `fleet_grafana` has no privilege on any table, view or sequence; it can only execute the functions of
  schema `grafana`, and its sessions are read-only with a statement timeout.
* Every function takes the Grafana login (`${__user.login}`, set by the auth proxy from `GET /auth/grafana`)
  and returns only rows of vehicles that login may see: a superuser every vehicle, an owner the vehicles in
  `vehicle_access`, a pending/blocked/unknown login nothing.
* The login is not the e-mail: it is an opaque, random value per user (`grafana_logins`), minted by
  `fleet_grafana_login(user_id)` (callable by `fleet_app` only). Someone who crafts a raw query with another
  person's e-mail gets nothing; they would need that person's random login, which Grafana never shows to
  Viewers.
* Inside a function the RLS context is set to the login's own user (`app.user_id`/`app.user_role`, scoped to
  the function by its SET clauses), so row-level security filters again when the schema owner is not a
  superuser - two independent checks.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-04
"""

from __future__ import annotations

from typing import Literal, NamedTuple

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

# The tables fleet_grafana could read before this revision (restored by the downgrade).
FORMER_GRAFANA_TABLES = (
    "vehicles, vehicle_access, devices, channel_config, measurements, positions, can_data, events, "
    "alarms_log, sync_journal"
)

# Attributes shared by every function below: run as the schema owner, with a pinned search path and an RLS
# context that exists only while the function runs (restored on exit, so nothing leaks into the session).
DEFINER = "SECURITY DEFINER SET search_path = public, pg_temp SET app.user_id = '' SET app.user_role = ''"

SCHEMA = f"""
CREATE TABLE grafana_logins (
    user_id     bigint PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    login       text NOT NULL UNIQUE CHECK (login ~ '^[a-z0-9-]{{8,64}}$'),
    created_at  timestamptz NOT NULL DEFAULT now()
);
ALTER TABLE grafana_logins ENABLE ROW LEVEL SECURITY;
ALTER TABLE grafana_logins FORCE ROW LEVEL SECURITY;
CREATE POLICY grafana_logins_admin ON grafana_logins FOR ALL
    USING (fleet_role() = 'superuser') WITH CHECK (fleet_role() = 'superuser');

-- The Grafana login of a user: created on first use, replaced when `rotate` (after a leak).
CREATE FUNCTION fleet_grafana_login(p_user_id bigint, p_rotate boolean DEFAULT false) RETURNS text
LANGUAGE plpgsql {DEFINER} AS $$
DECLARE
    result text;
BEGIN
    PERFORM set_config('app.user_role', 'superuser', true);
    IF NOT p_rotate THEN
        SELECT login INTO result FROM grafana_logins WHERE user_id = p_user_id;
        IF result IS NOT NULL THEN
            RETURN result;
        END IF;
    END IF;
    result := 'u' || p_user_id || '-' || replace(gen_random_uuid()::text, '-', '');
    INSERT INTO grafana_logins (user_id, login) VALUES (p_user_id, result)
        ON CONFLICT (user_id) DO UPDATE SET login = EXCLUDED.login, created_at = now();
    RETURN result;
END
$$;

CREATE SCHEMA grafana;

-- Resolve a login into the RLS context of its (active) user; false for anything else. Every public
-- function of the schema starts here.
CREATE FUNCTION grafana.enter(p_login text) RETURNS boolean
LANGUAGE plpgsql SET search_path = public, pg_temp AS $$
DECLARE
    who record;
BEGIN
    PERFORM set_config('app.user_role', 'superuser', true);
    SELECT u.id, u.role INTO who
    FROM grafana_logins l JOIN users u ON u.id = l.user_id
    WHERE l.login = p_login AND u.status = 'active';
    IF NOT FOUND THEN
        PERFORM set_config('app.user_role', '', true);
        RETURN false;
    END IF;
    PERFORM set_config('app.user_id', who.id::text, true), set_config('app.user_role', who.role, true);
    RETURN true;
END
$$;

-- Ids of the vehicles the current context's user may see (explicitly, not only through RLS).
CREATE FUNCTION grafana.visible_ids() RETURNS SETOF bigint
LANGUAGE sql STABLE SET search_path = public, pg_temp AS $$
    SELECT v.id FROM vehicles v
    WHERE fleet_role() = 'superuser'
       OR (fleet_role() = 'owner' AND EXISTS (
            SELECT 1 FROM vehicle_access a WHERE a.user_id = fleet_user_id() AND a.vehicle_id = v.id))
$$;

CREATE FUNCTION grafana.may_see(p_login text, p_vehicle bigint) RETURNS boolean
LANGUAGE plpgsql SET search_path = public, pg_temp AS $$
BEGIN
    RETURN grafana.enter(p_login) AND p_vehicle IN (SELECT grafana.visible_ids());
END
$$;

-- Bucket width for time series: Grafana's $__interval_ms, never below one second.
CREATE FUNCTION grafana.bucket(p_ms bigint) RETURNS interval
LANGUAGE sql IMMUTABLE AS $$ SELECT make_interval(secs => greatest(coalesce(p_ms, 1000), 1000) / 1000.0) $$;
"""


# A NamedTuple, not a dataclass: Alembic loads migrations without registering them in sys.modules.
class GrafanaFunction(NamedTuple):
    """One function the dashboards call: it checks the login (and the vehicle) first, then runs `query`."""

    name: str
    args: str  # always starts with `p_login text`; vehicle functions continue with `p_vehicle bigint`
    returns: str
    scope: Literal["fleet", "vehicle"]
    query: str

    @property
    def signature(self) -> str:
        """`grafana.name(type, ...)`, as GRANT and REVOKE name it."""
        types = [arg.split()[1] for arg in self.args.split(",")]
        return f"grafana.{self.name}({', '.join(types)})"

    def create(self) -> str:
        check = "grafana.may_see(p_login, p_vehicle)" if self.scope == "vehicle" else "grafana.enter(p_login)"
        return f"""
CREATE FUNCTION grafana.{self.name}({self.args})
RETURNS TABLE ({self.returns})
LANGUAGE plpgsql {DEFINER} AS $$
BEGIN
    IF NOT {check} THEN
        RETURN;
    END IF;
    RETURN QUERY {self.query.strip()};
END
$$"""


API_FUNCTIONS: list[GrafanaFunction] = [
    # ---- the fleet ----
    GrafanaFunction(
        "vehicles",
        "p_login text, p_online_window_sec integer DEFAULT 90",
        "id bigint, name text, status text, last_activity_at timestamptz, last_sync_at timestamptz, sync_status text, software_version text, devices bigint",
        "fleet",
        """
    SELECT v.id, v.name,
           CASE WHEN greatest(v.last_seen_at, d.seen) IS NULL THEN 'unknown'
                WHEN greatest(v.last_seen_at, d.seen) >= now() - make_interval(secs => p_online_window_sec)
                    THEN 'online'
                ELSE 'offline' END,
           greatest(v.last_seen_at, d.seen), v.last_sync_at, v.sync_status, v.software_version,
           coalesce(d.n, 0)
    FROM vehicles v
    LEFT JOIN LATERAL (SELECT max(x.last_seen_at) AS seen, count(*) AS n FROM devices x
                       WHERE x.vehicle_id = v.id) d ON true
    WHERE v.id IN (SELECT grafana.visible_ids())
    ORDER BY v.name, v.id
""",
    ),
    GrafanaFunction(
        "fleet_summary",
        "p_login text, p_online_window_sec integer DEFAULT 90",
        "vehicles bigint, online bigint, offline bigint, unknown bigint, active_alarms bigint, trackers bigint",
        "fleet",
        """
    SELECT count(*), count(*) FILTER (WHERE f.status = 'online'), count(*) FILTER (WHERE f.status = 'offline'),
           count(*) FILTER (WHERE f.status = 'unknown'),
           (SELECT count(*) FROM alarms_log a
            WHERE a.resolved_at IS NULL AND a.vehicle_id IN (SELECT grafana.visible_ids())),
           coalesce(sum(f.devices), 0)::bigint
    FROM grafana.vehicles(p_login, p_online_window_sec) f
""",
    ),
    GrafanaFunction(
        "latest_positions",
        "p_login text",
        'vehicle_id bigint, vehicle text, "time" timestamptz, latitude double precision, longitude double precision, speed real, course real',
        "fleet",
        """
    SELECT v.id, v.name, p.device_time, p.latitude, p.longitude, p.speed, p.course
    FROM vehicles v
    CROSS JOIN LATERAL (SELECT x.device_time, x.latitude, x.longitude, x.speed, x.course FROM positions x
                        WHERE x.vehicle_id = v.id AND x.latitude IS NOT NULL
                        ORDER BY x.device_time DESC LIMIT 1) p
    WHERE v.id IN (SELECT grafana.visible_ids())
    ORDER BY v.name, v.id
""",
    ),
    GrafanaFunction(
        "active_alarms",
        "p_login text",
        "raised_at timestamptz, vehicle_id bigint, vehicle text, level text, message text, channel_id integer, alarm_id bigint",
        "fleet",
        """
    SELECT a.raised_at, v.id, v.name, a.level, a.message, a.channel_id, a.alarm_id
    FROM alarms_log a JOIN vehicles v ON v.id = a.vehicle_id
    WHERE a.resolved_at IS NULL AND a.vehicle_id IN (SELECT grafana.visible_ids())
    ORDER BY a.raised_at DESC
    LIMIT 1000
""",
    ),
    # Outcomes of the sync service's pulls of the visible vehicles, per bucket (one series per status).
    GrafanaFunction(
        "sync_outcomes",
        "p_login text, p_from timestamptz, p_to timestamptz, p_interval_ms bigint DEFAULT 60000",
        '"time" timestamptz, metric text, value bigint',
        "fleet",
        """
    SELECT date_bin(grafana.bucket(p_interval_ms), j.started_at, p_from) AS t, j.status, count(*)
    FROM sync_journal j
    WHERE j.started_at >= p_from AND j.started_at < p_to
      AND j.vehicle_id IN (SELECT grafana.visible_ids())
    GROUP BY 1, 2 ORDER BY 1, 2
""",
    ),
    # one vehicle -------------------------------------------------------------------------------------
    # ---- one vehicle ----
    GrafanaFunction(
        "channels",
        "p_login text, p_vehicle bigint",
        "channel_id integer, name text, unit text",
        "vehicle",
        """
    SELECT c.channel_id, c.name, c.unit FROM channel_config c WHERE c.vehicle_id = p_vehicle
    ORDER BY c.name
""",
    ),
    # Channel values averaged per bucket, one series per channel ("name, unit").
    GrafanaFunction(
        "measurements",
        "p_login text, p_vehicle bigint, p_from timestamptz, p_to timestamptz, p_interval_ms bigint DEFAULT 1000",
        '"time" timestamptz, metric text, value double precision',
        "vehicle",
        """
    SELECT date_bin(grafana.bucket(p_interval_ms), m.time, p_from) AS t,
           coalesce(c.name, 'channel ' || m.channel_id) || coalesce(', ' || c.unit, ''),
           avg(m.value)
    FROM measurements m
    LEFT JOIN channel_config c ON c.vehicle_id = m.vehicle_id AND c.channel_id = m.channel_id
    WHERE m.vehicle_id = p_vehicle AND m.time >= p_from AND m.time < p_to
    GROUP BY 1, 2 ORDER BY 1, 2
""",
    ),
    # The newest value of every channel.
    GrafanaFunction(
        "latest_values",
        "p_login text, p_vehicle bigint",
        '"time" timestamptz, channel text, unit text, value double precision',
        "vehicle",
        """
    SELECT m.time, c.name, c.unit, m.value
    FROM channel_config c
    CROSS JOIN LATERAL (SELECT x.time, x.value FROM measurements x
                        WHERE x.vehicle_id = c.vehicle_id AND x.channel_id = c.channel_id
                        ORDER BY x.time DESC LIMIT 1) m
    WHERE c.vehicle_id = p_vehicle
    ORDER BY c.name
""",
    ),
    # Decoded CAN signals of the vehicle's trackers averaged per bucket, one series per signal.
    GrafanaFunction(
        "can_signals",
        "p_login text, p_vehicle bigint, p_from timestamptz, p_to timestamptz, p_interval_ms bigint DEFAULT 1000",
        '"time" timestamptz, metric text, value double precision',
        "vehicle",
        """
    SELECT date_bin(grafana.bucket(p_interval_ms), d.time, p_from) AS t,
           d.name || coalesce(', ' || d.unit, ''), avg(d.value)
    FROM can_data d
    WHERE d.vehicle_id = p_vehicle AND d.time >= p_from AND d.time < p_to AND d.value IS NOT NULL
    GROUP BY 1, 2 ORDER BY 1, 2
""",
    ),
    # Tracker positions, thinned to at most one per bucket (the newest in it).
    GrafanaFunction(
        "positions",
        "p_login text, p_vehicle bigint, p_from timestamptz, p_to timestamptz, p_interval_ms bigint DEFAULT 1000",
        '"time" timestamptz, latitude double precision, longitude double precision, speed real, course real, altitude double precision, satellites smallint, valid boolean',
        "vehicle",
        """
    SELECT DISTINCT ON (date_bin(grafana.bucket(p_interval_ms), p.device_time, p_from))
           p.device_time, p.latitude, p.longitude, p.speed, p.course, p.altitude, p.satellites, p.valid
    FROM positions p
    WHERE p.vehicle_id = p_vehicle AND p.device_time >= p_from AND p.device_time < p_to
    ORDER BY date_bin(grafana.bucket(p_interval_ms), p.device_time, p_from), p.device_time DESC
""",
    ),
    GrafanaFunction(
        "alarms",
        "p_login text, p_vehicle bigint, p_from timestamptz, p_to timestamptz",
        "raised_at timestamptz, resolved_at timestamptz, active boolean, level text, message text, channel_id integer, alarm_id bigint",
        "vehicle",
        """
    SELECT a.raised_at, a.resolved_at, a.resolved_at IS NULL, a.level, a.message, a.channel_id, a.alarm_id
    FROM alarms_log a
    WHERE a.vehicle_id = p_vehicle AND a.raised_at < p_to AND (a.resolved_at IS NULL OR a.resolved_at >= p_from)
    ORDER BY a.raised_at DESC
    LIMIT 1000
""",
    ),
    GrafanaFunction(
        "events",
        "p_login text, p_vehicle bigint, p_from timestamptz, p_to timestamptz",
        '"time" timestamptz, event_code integer, event_type text, description text',
        "vehicle",
        """
    SELECT e.time, e.event_code, e.event_type, e.description
    FROM events e
    WHERE e.vehicle_id = p_vehicle AND e.time >= p_from AND e.time < p_to
    ORDER BY e.time DESC
    LIMIT 1000
""",
    ),
]

# Helpers the API functions call with the owner's rights; nobody else may.
GRAFANA_INTERNAL = (
    "grafana.enter(text)",
    "grafana.visible_ids()",
    "grafana.may_see(text, bigint)",
    "grafana.bucket(bigint)",
)


def upgrade() -> None:
    op.execute(SCHEMA)
    for function in API_FUNCTIONS:  # in order: fleet_summary calls vehicles
        op.execute(function.create())
    op.execute(f"REVOKE ALL ON {FORMER_GRAFANA_TABLES} FROM fleet_grafana")
    op.execute("REVOKE ALL ON SCHEMA grafana FROM PUBLIC")
    op.execute("GRANT USAGE ON SCHEMA grafana TO fleet_grafana")
    api = [function.signature for function in API_FUNCTIONS]
    for fn in (*api, *GRAFANA_INTERNAL):
        op.execute(f"REVOKE ALL ON FUNCTION {fn} FROM PUBLIC")
    for fn in api:
        op.execute(f"GRANT EXECUTE ON FUNCTION {fn} TO fleet_grafana")
    op.execute("REVOKE ALL ON FUNCTION fleet_grafana_login(bigint, boolean) FROM PUBLIC")
    op.execute("GRANT EXECUTE ON FUNCTION fleet_grafana_login(bigint, boolean) TO fleet_app")
    # Dashboards only read; a runaway query is cut off instead of holding a connection.
    op.execute("ALTER ROLE fleet_grafana SET default_transaction_read_only = on")
    op.execute("ALTER ROLE fleet_grafana SET statement_timeout = '30s'")


def downgrade() -> None:
    op.execute("DROP SCHEMA IF EXISTS grafana CASCADE")
    op.execute("DROP FUNCTION IF EXISTS fleet_grafana_login(bigint, boolean)")
    op.execute("DROP TABLE IF EXISTS grafana_logins")
    op.execute(f"GRANT SELECT ON {FORMER_GRAFANA_TABLES} TO fleet_grafana")
    op.execute("ALTER ROLE fleet_grafana RESET default_transaction_read_only")
    op.execute("ALTER ROLE fleet_grafana RESET statement_timeout")
