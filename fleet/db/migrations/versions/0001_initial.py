"""Initial schema: every table of DESIGN.md §4, monthly partitions, row-level security, runtime roles.

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

from __future__ import annotations

from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

# Time-series parents and the column they are partitioned on.
PARTITIONED = {
    "measurements": "time",
    "positions": "device_time",
    "raw_frames": "received_at",
    "can_data": "time",
}

# Tables scoped by a vehicle: visible to a superuser, or to an owner with access to that vehicle.
VEHICLE_SCOPED = [
    "devices",
    "channel_config",
    "measurements",
    "positions",
    "raw_frames",
    "can_data",
    "events",
    "alarms_log",
    "sync_journal",
]
# Tables scoped by a user: visible to a superuser, or to the user they belong to.
USER_SCOPED = ["oauth_accounts", "refresh_tokens", "api_keys"]
# Tables only a superuser context (admins, background services) may read.
SUPERUSER_ONLY = ["revoked_tokens", "mail_outbox"]

ALL_TABLES = [
    "users",
    "vehicles",
    "vehicle_access",
    *VEHICLE_SCOPED,
    *USER_SCOPED,
    *SUPERUSER_ONLY,
    "admin_audit_log",
]
GRAFANA_TABLES = [
    "vehicles",
    "vehicle_access",
    "devices",
    "channel_config",
    "measurements",
    "positions",
    "can_data",
    "events",
    "alarms_log",
    "sync_journal",
]

IS_SUPERUSER = "fleet_role() = 'superuser'"
SEES_VEHICLE = (
    "(fleet_role() = 'superuser' OR (fleet_role() = 'owner' AND {col} IN "
    "(SELECT va.vehicle_id FROM vehicle_access va WHERE va.user_id = fleet_user_id())))"
)
OWNS_ROW = "(fleet_role() = 'superuser' OR (fleet_role() = 'owner' AND {col} = fleet_user_id()))"

SCHEMA = r"""
CREATE FUNCTION fleet_role() RETURNS text LANGUAGE sql STABLE PARALLEL SAFE AS
$$ SELECT nullif(current_setting('app.user_role', true), '') $$;

CREATE FUNCTION fleet_user_id() RETURNS bigint LANGUAGE sql STABLE PARALLEL SAFE AS
$$ SELECT nullif(current_setting('app.user_id', true), '')::bigint $$;

CREATE TABLE users (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    email           text NOT NULL CHECK (position('@' in email) > 1 AND length(email) <= 320),
    name            text,
    password_hash   text,
    role            text NOT NULL DEFAULT 'owner' CHECK (role IN ('superuser', 'owner')),
    status          text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'active', 'blocked')),
    token_version   integer NOT NULL DEFAULT 0,
    created_at      timestamptz NOT NULL DEFAULT now(),
    approved_at     timestamptz,
    approved_by     bigint REFERENCES users (id) ON DELETE SET NULL,
    last_login_at   timestamptz
);
CREATE UNIQUE INDEX users_email_key ON users (lower(email));
CREATE INDEX users_pending_idx ON users (created_at) WHERE status = 'pending';

-- RLS lets users update their own row (name, password); role, status, email and token version are
-- changed only in a superuser context, whatever an endpoint does.
CREATE FUNCTION fleet_users_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF fleet_role() IS DISTINCT FROM 'superuser' AND (
        NEW.role IS DISTINCT FROM OLD.role OR NEW.status IS DISTINCT FROM OLD.status
        OR lower(NEW.email) IS DISTINCT FROM lower(OLD.email) OR NEW.token_version < OLD.token_version
        OR NEW.approved_by IS DISTINCT FROM OLD.approved_by) THEN
        RAISE EXCEPTION 'only a superuser context may change role, status or email'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER users_guard BEFORE UPDATE ON users FOR EACH ROW EXECUTE FUNCTION fleet_users_guard();

CREATE TABLE oauth_accounts (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id     bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    provider    text NOT NULL,
    subject     text NOT NULL,
    email       text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (provider, subject)
);
CREATE INDEX oauth_accounts_user_idx ON oauth_accounts (user_id);

CREATE TABLE revoked_tokens (
    jti         text PRIMARY KEY,
    user_id     bigint REFERENCES users (id) ON DELETE CASCADE,
    expires_at  timestamptz NOT NULL,
    revoked_at  timestamptz NOT NULL DEFAULT now(),
    reason      text
);
CREATE INDEX revoked_tokens_expires_idx ON revoked_tokens (expires_at);

-- Refresh tokens are stored (hashed) so that rotation can detect reuse and revoke the whole family.
CREATE TABLE refresh_tokens (
    id           text PRIMARY KEY,
    user_id      bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    family_id    text NOT NULL,
    token_hash   text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz NOT NULL,
    used_at      timestamptz,
    revoked_at   timestamptz,
    client_addr  inet
);
CREATE INDEX refresh_tokens_user_idx ON refresh_tokens (user_id);
CREATE INDEX refresh_tokens_family_idx ON refresh_tokens (family_id);
CREATE INDEX refresh_tokens_expires_idx ON refresh_tokens (expires_at);

CREATE TABLE api_keys (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id       bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name          text NOT NULL,
    prefix        text NOT NULL UNIQUE,
    key_hash      text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    last_used_at  timestamptz,
    revoked_at    timestamptz
);
CREATE INDEX api_keys_user_idx ON api_keys (user_id);

CREATE TABLE vehicles (
    id                bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name              text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    vpn_ip            inet,
    api_port          integer NOT NULL DEFAULT 8001 CHECK (api_port BETWEEN 1 AND 65535),
    api_key           text,
    last_seen_at      timestamptz,
    last_sync_at      timestamptz,
    sync_status       text NOT NULL DEFAULT 'unknown',
    software_version  text,
    created_at        timestamptz NOT NULL DEFAULT now(),
    -- Sync bookkeeping: a lease so that two sync workers never pull the same vehicle at once,
    -- and a backoff for vehicles that keep failing.
    sync_lease_owner  text,
    sync_lease_until  timestamptz,
    sync_failures     integer NOT NULL DEFAULT 0,
    sync_next_at      timestamptz
);
CREATE INDEX vehicles_vpn_ip_idx ON vehicles (vpn_ip);

CREATE TABLE vehicle_access (
    user_id     bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    vehicle_id  bigint NOT NULL REFERENCES vehicles (id) ON DELETE CASCADE,
    granted_at  timestamptz NOT NULL DEFAULT now(),
    granted_by  bigint REFERENCES users (id) ON DELETE SET NULL,
    PRIMARY KEY (user_id, vehicle_id)
);
CREATE INDEX vehicle_access_vehicle_idx ON vehicle_access (vehicle_id);

CREATE TABLE devices (
    id                      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    imei                    text NOT NULL UNIQUE CHECK (imei ~ '^[0-9A-Za-z_-]{1,32}$'),
    protocol                text NOT NULL DEFAULT 'navtelecom',
    vehicle_id              bigint REFERENCES vehicles (id) ON DELETE SET NULL,
    name                    text,
    flex_protocol_version   smallint,
    flex_struct_version     smallint,
    flex_mask               bytea,
    firmware                text,
    created_at              timestamptz NOT NULL DEFAULT now(),
    last_connected_at       timestamptz,
    last_seen_at            timestamptz,
    last_peer               text
);
CREATE INDEX devices_vehicle_idx ON devices (vehicle_id);

CREATE TABLE channel_config (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    vehicle_id  bigint NOT NULL REFERENCES vehicles (id) ON DELETE CASCADE,
    channel_id  integer NOT NULL,
    name        text NOT NULL,
    unit        text,
    min_value   double precision,
    max_value   double precision,
    synced_at   timestamptz NOT NULL DEFAULT now(),
    UNIQUE (vehicle_id, channel_id)
);

CREATE TABLE measurements (
    vehicle_id  bigint NOT NULL,
    channel_id  integer NOT NULL,
    time        timestamptz NOT NULL,
    value       double precision,
    UNIQUE (vehicle_id, channel_id, time)
) PARTITION BY RANGE (time);

CREATE TABLE positions (
    id            bigint GENERATED ALWAYS AS IDENTITY,
    device_id     bigint NOT NULL,
    vehicle_id    bigint,
    record_index  bigint NOT NULL,
    event_code    integer,
    device_time   timestamptz NOT NULL,
    fix_time      timestamptz,
    received_at   timestamptz NOT NULL DEFAULT now(),
    valid         boolean NOT NULL DEFAULT false,
    latitude      double precision CHECK (latitude BETWEEN -90 AND 90),
    longitude     double precision CHECK (longitude BETWEEN -180 AND 180),
    altitude      double precision,
    speed         real,
    course        real,
    satellites    smallint,
    hdop          real,
    attributes    jsonb NOT NULL DEFAULT '{}'::jsonb,
    PRIMARY KEY (id, device_time),
    -- A retransmitted record (same device, black-box index and time) is stored once. Time before index:
    -- the same index serves a device's history and its latest position (a backward scan), so the
    -- ingest hot path maintains one index fewer.
    UNIQUE (device_id, device_time, record_index)
) PARTITION BY RANGE (device_time);
CREATE INDEX positions_vehicle_time_idx ON positions (vehicle_id, device_time DESC);

CREATE TABLE raw_frames (
    id           bigint GENERATED ALWAYS AS IDENTITY,
    device_id    bigint,
    vehicle_id   bigint,
    received_at  timestamptz NOT NULL DEFAULT now(),
    protocol     text NOT NULL DEFAULT 'navtelecom',
    frame_type   text,
    peer         text,
    data         bytea NOT NULL,
    outcome      text NOT NULL CHECK (outcome IN ('ok', 'rejected', 'error', 'ignored')),
    error        text,
    PRIMARY KEY (id, received_at)
) PARTITION BY RANGE (received_at);
CREATE INDEX raw_frames_device_time_idx ON raw_frames (device_id, received_at DESC);
CREATE INDEX raw_frames_time_idx ON raw_frames (received_at DESC);

CREATE TABLE can_data (
    id           bigint GENERATED ALWAYS AS IDENTITY,
    device_id    bigint NOT NULL,
    vehicle_id   bigint,
    position_id  bigint,
    time         timestamptz NOT NULL,
    name         text NOT NULL,
    value        double precision,
    value_text   text,
    unit         text,
    source       text NOT NULL,
    PRIMARY KEY (id, time),
    UNIQUE (device_id, time, source, name)
) PARTITION BY RANGE (time);
CREATE INDEX can_data_vehicle_name_time_idx ON can_data (vehicle_id, name, time DESC);
CREATE INDEX can_data_device_time_idx ON can_data (device_id, time DESC);

CREATE TABLE events (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    device_id     bigint NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
    vehicle_id    bigint,
    time          timestamptz NOT NULL,
    event_code    integer NOT NULL,
    event_type    text,
    description   text,
    record_index  bigint NOT NULL DEFAULT -1,
    attributes    jsonb NOT NULL DEFAULT '{}'::jsonb,
    received_at   timestamptz NOT NULL DEFAULT now(),
    UNIQUE (device_id, time, event_code, record_index)
);
CREATE INDEX events_vehicle_time_idx ON events (vehicle_id, time DESC);

CREATE TABLE alarms_log (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    vehicle_id   bigint NOT NULL REFERENCES vehicles (id) ON DELETE CASCADE,
    alarm_id     bigint NOT NULL,
    channel_id   integer,
    level        text,
    message      text,
    raised_at    timestamptz NOT NULL,
    resolved_at  timestamptz,
    synced_at    timestamptz NOT NULL DEFAULT now(),
    UNIQUE (vehicle_id, alarm_id)
);
CREATE INDEX alarms_log_active_idx ON alarms_log (vehicle_id, raised_at DESC) WHERE resolved_at IS NULL;
CREATE INDEX alarms_log_vehicle_time_idx ON alarms_log (vehicle_id, raised_at DESC);

CREATE TABLE sync_journal (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    vehicle_id    bigint NOT NULL REFERENCES vehicles (id) ON DELETE CASCADE,
    started_at    timestamptz NOT NULL,
    finished_at   timestamptz NOT NULL DEFAULT now(),
    status        text NOT NULL CHECK (status IN ('ok', 'timeout', 'error')),
    rows_written  integer NOT NULL DEFAULT 0,
    duration_ms   integer NOT NULL DEFAULT 0,
    window_from   timestamptz,
    window_to     timestamptz,
    error         text
);
CREATE INDEX sync_journal_vehicle_time_idx ON sync_journal (vehicle_id, started_at DESC);
CREATE INDEX sync_journal_time_idx ON sync_journal (started_at);

CREATE TABLE admin_audit_log (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    time         timestamptz NOT NULL DEFAULT now(),
    actor_id     bigint REFERENCES users (id) ON DELETE SET NULL,
    actor_email  text,
    action       text NOT NULL,
    target       text,
    details      jsonb NOT NULL DEFAULT '{}'::jsonb,
    client_addr  inet
);
CREATE INDEX admin_audit_log_time_idx ON admin_audit_log (time DESC);
CREATE INDEX admin_audit_log_action_idx ON admin_audit_log (action, time DESC);
CREATE INDEX admin_audit_log_actor_idx ON admin_audit_log (actor_id, time DESC);

CREATE TABLE mail_outbox (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    recipient   text NOT NULL,
    subject     text NOT NULL,
    body        text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    sent_at     timestamptz,
    attempts    integer NOT NULL DEFAULT 0,
    last_error  text
);
CREATE INDEX mail_outbox_unsent_idx ON mail_outbox (created_at) WHERE sent_at IS NULL;

-- Partition maintenance runs with the owner's rights (the runtime role cannot create tables), so the
-- functions are SECURITY DEFINER with a pinned search_path, and only fleet_app may call them.
CREATE FUNCTION fleet_partition_column(parent text) RETURNS text LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE parent
        WHEN 'measurements' THEN 'time'
        WHEN 'positions' THEN 'device_time'
        WHEN 'raw_frames' THEN 'received_at'
        WHEN 'can_data' THEN 'time'
    END
$$;

-- Create the monthly partition holding `at` (UTC months). Rows that had landed in the default
-- partition for that month are moved into the new partition in the same transaction, so nothing is
-- lost and the default partition stays small. Returns true when a partition was created.
CREATE FUNCTION fleet_ensure_partition(parent text, at timestamptz) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    col   text := fleet_partition_column(parent);
    utc   timestamp := at AT TIME ZONE 'UTC';
    lo    timestamptz;
    hi    timestamptz;
    part  text;
BEGIN
    IF col IS NULL THEN
        RAISE EXCEPTION 'table % is not a partitioned fleet table', parent;
    END IF;
    lo := make_timestamptz(extract(year FROM utc)::int, extract(month FROM utc)::int, 1, 0, 0, 0, 'UTC');
    hi := make_timestamptz(extract(year FROM utc + interval '1 month')::int,
                           extract(month FROM utc + interval '1 month')::int, 1, 0, 0, 0, 'UTC');
    part := format('%s_p%s', parent, to_char(utc, 'YYYYMM'));
    IF to_regclass(part) IS NOT NULL THEN
        RETURN false;
    END IF;
    PERFORM pg_advisory_xact_lock(hashtext('fleet_partition:' || parent));
    IF to_regclass(part) IS NOT NULL THEN
        RETURN false;
    END IF;
    EXECUTE format('CREATE TABLE %I (LIKE %I INCLUDING DEFAULTS INCLUDING CONSTRAINTS)', part, parent);
    EXECUTE format(
        'WITH moved AS (DELETE FROM %I WHERE %I >= $1 AND %I < $2 RETURNING *) INSERT INTO %I SELECT * FROM moved',
        parent || '_default', col, col, part) USING lo, hi;
    EXECUTE format('ALTER TABLE %I ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)', parent, part, lo, hi);
    RETURN true;
END
$$;

-- Months ahead: current month and the next `ahead` months for every partitioned table.
CREATE FUNCTION fleet_ensure_partitions_ahead(ahead integer DEFAULT 2) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    parent  text;
    i       integer;
    created integer := 0;
BEGIN
    FOREACH parent IN ARRAY ARRAY['measurements', 'positions', 'raw_frames', 'can_data'] LOOP
        FOR i IN 0..ahead LOOP
            IF fleet_ensure_partition(parent, now() + make_interval(months => i)) THEN
                created := created + 1;
            END IF;
        END LOOP;
    END LOOP;
    RETURN created;
END
$$;

-- Give rows stranded in default partitions (times far in the past or future) partitions of their own.
CREATE FUNCTION fleet_drain_default_partitions() RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    parent  text;
    month   timestamptz;
    created integer := 0;
BEGIN
    FOREACH parent IN ARRAY ARRAY['measurements', 'positions', 'raw_frames', 'can_data'] LOOP
        FOR month IN EXECUTE format(
            'SELECT DISTINCT date_trunc(''month'', %I AT TIME ZONE ''UTC'') AT TIME ZONE ''UTC'' FROM %I',
            fleet_partition_column(parent), parent || '_default')
        LOOP
            IF fleet_ensure_partition(parent, month) THEN
                created := created + 1;
            END IF;
        END LOOP;
    END LOOP;
    RETURN created;
END
$$;

-- Retention: drop whole monthly partitions that end before `cutoff` (no row-by-row DELETE, no bloat).
CREATE FUNCTION fleet_drop_partitions_before(parent text, cutoff timestamptz) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    part     record;
    dropped  integer := 0;
    upper_ts timestamptz;
BEGIN
    IF fleet_partition_column(parent) IS NULL THEN
        RAISE EXCEPTION 'table % is not a partitioned fleet table', parent;
    END IF;
    FOR part IN
        SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) AS bound
        FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent = parent::regclass AND c.relname <> parent || '_default'
    LOOP
        upper_ts := substring(part.bound FROM 'TO \(''([^'']+)''\)')::timestamptz;
        IF upper_ts IS NOT NULL AND upper_ts <= cutoff THEN
            EXECUTE format('DROP TABLE %I', part.relname);
            dropped := dropped + 1;
        END IF;
    END LOOP;
    RETURN dropped;
END
$$;
"""


def _roles_sql() -> str:
    # CREATE ROLE is cluster-wide and may race with another database's migration (parallel test runs).
    return """
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'fleet_app') THEN
        BEGIN
            CREATE ROLE fleet_app LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE NOINHERIT;
        EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
        END;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'fleet_grafana') THEN
        BEGIN
            CREATE ROLE fleet_grafana LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE NOINHERIT;
        EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
        END;
    END IF;
END
$$;
"""


def _policies() -> list[str]:
    stmts: list[str] = []
    for table in ALL_TABLES:
        stmts.append(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
        stmts.append(f"ALTER TABLE {table} FORCE ROW LEVEL SECURITY")

    def policy(table: str, name: str, command: str, using: str | None, check: str | None) -> None:
        clause = f"CREATE POLICY {name} ON {table} FOR {command}"
        if using:
            clause += f" USING ({using})"
        if check:
            clause += f" WITH CHECK ({check})"
        stmts.append(clause)

    def read_and_admin_write(table: str, visible: str) -> None:
        policy(table, f"{table}_read", "SELECT", visible, None)
        policy(table, f"{table}_write", "ALL", IS_SUPERUSER, IS_SUPERUSER)

    read_and_admin_write("vehicles", SEES_VEHICLE.format(col="id"))
    read_and_admin_write("vehicle_access", OWNS_ROW.format(col="user_id"))
    for table in VEHICLE_SCOPED:
        read_and_admin_write(table, SEES_VEHICLE.format(col="vehicle_id"))
    # Users read their own account; changes to role/status go through superuser contexts.
    read_and_admin_write("users", OWNS_ROW.format(col="id"))
    policy("users", "users_self_update", "UPDATE", OWNS_ROW.format(col="id"), OWNS_ROW.format(col="id"))
    for table in USER_SCOPED:
        policy(table, f"{table}_own", "ALL", OWNS_ROW.format(col="user_id"), OWNS_ROW.format(col="user_id"))
    for table in SUPERUSER_ONLY:
        policy(table, f"{table}_admin", "ALL", IS_SUPERUSER, IS_SUPERUSER)
    # The audit log is append-only for every authenticated context, readable by superusers only.
    policy("admin_audit_log", "admin_audit_log_read", "SELECT", IS_SUPERUSER, None)
    policy("admin_audit_log", "admin_audit_log_append", "INSERT", None, "fleet_role() IS NOT NULL")
    policy("admin_audit_log", "admin_audit_log_prune", "DELETE", IS_SUPERUSER, None)
    return stmts


def _grants() -> list[str]:
    tables = ", ".join(ALL_TABLES)
    stmts = [
        "GRANT USAGE ON SCHEMA public TO fleet_app, fleet_grafana",
        f"GRANT SELECT, INSERT, UPDATE, DELETE ON {tables} TO fleet_app",
        "REVOKE UPDATE ON admin_audit_log FROM fleet_app",
        "GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO fleet_app",
        f"GRANT SELECT ON {', '.join(GRAFANA_TABLES)} TO fleet_grafana",
    ]
    for fn in (
        "fleet_ensure_partition(text, timestamptz)",
        "fleet_ensure_partitions_ahead(integer)",
        "fleet_drain_default_partitions()",
        "fleet_drop_partitions_before(text, timestamptz)",
    ):
        stmts.append(f"REVOKE ALL ON FUNCTION {fn} FROM PUBLIC")
        stmts.append(f"GRANT EXECUTE ON FUNCTION {fn} TO fleet_app")
    return stmts


def upgrade() -> None:
    op.execute(_roles_sql())
    op.execute(SCHEMA)
    for parent in PARTITIONED:
        # The default partition catches rows whose month has no partition yet; nothing is rejected.
        op.execute(f"CREATE TABLE {parent}_default PARTITION OF {parent} DEFAULT")
    for stmt in _policies() + _grants():
        op.execute(stmt)
    op.execute("SELECT fleet_ensure_partitions_ahead(2)")


def downgrade() -> None:
    for table in reversed(ALL_TABLES):
        op.execute(f"DROP TABLE IF EXISTS {table} CASCADE")
    for fn in (
        "fleet_drop_partitions_before(text, timestamptz)",
        "fleet_drain_default_partitions()",
        "fleet_ensure_partitions_ahead(integer)",
        "fleet_ensure_partition(text, timestamptz)",
        "fleet_partition_column(text)",
        "fleet_users_guard()",
        "fleet_user_id()",
        "fleet_role()",
    ):
        op.execute(f"DROP FUNCTION IF EXISTS {fn}")
    # Roles are cluster-wide and may serve other databases; revoke what this schema granted only.
    op.execute("REVOKE ALL ON SCHEMA public FROM fleet_app, fleet_grafana")
