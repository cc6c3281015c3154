"""Migrations on a database of their own: apply to empty, re-apply (no-op), step down and up again."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest

from fleet.db import migrate
from fleet.db.migrations.versions import __path__ as versions_path  # noqa: F401


def _with_db(dsn: str, name: str) -> str:
    parts = urlsplit(dsn)
    return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))


@pytest.fixture
def empty_dsn(pg_server_dsn: str) -> Iterator[str]:
    name = f"fleet_mig_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(pg_server_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield _with_db(pg_server_dsn, name)
    finally:
        with psycopg.connect(pg_server_dsn, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _tables(dsn: str) -> set[str]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND tablename <> 'alembic_version'"
        ).fetchall()
    return {row[0] for row in rows}


def _head() -> str:
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(migrate.alembic_config()).get_current_head()
    assert head is not None
    return head


def test_upgrade_is_idempotent_and_last_step_reverts(empty_dsn: str) -> None:
    assert migrate.current_revision(empty_dsn) is None
    migrate.upgrade(empty_dsn)
    head = _head()
    assert migrate.current_revision(empty_dsn) == head
    tables = _tables(empty_dsn)
    for table in (
        "users",
        "vehicles",
        "devices",
        "positions",
        "measurements",
        "raw_frames",
        "can_data",
        "events",
        "alarms_log",
        "sync_journal",
        "admin_audit_log",
        "vehicle_access",
        "channel_config",
        "oauth_accounts",
        "revoked_tokens",
    ):
        assert table in tables

    migrate.upgrade(empty_dsn)  # second run: nothing to do, nothing breaks
    assert migrate.current_revision(empty_dsn) == head
    assert _tables(empty_dsn) == tables

    migrate.downgrade(empty_dsn, "-1")
    assert migrate.current_revision(empty_dsn) != head
    migrate.upgrade(empty_dsn)
    assert migrate.current_revision(empty_dsn) == head
    assert _tables(empty_dsn) == tables


def test_downgrade_to_base_removes_schema(empty_dsn: str) -> None:
    migrate.upgrade(empty_dsn)
    migrate.downgrade(empty_dsn, "base")
    assert migrate.current_revision(empty_dsn) is None
    assert _tables(empty_dsn) == set()


def test_migration_errors_do_not_leak_passwords(empty_dsn: str) -> None:
    secret = "s3cret-password-never-logged"
    migrate.upgrade(empty_dsn, passwords={"fleet_app": secret})
    with pytest.raises(Exception) as info:
        migrate.upgrade(empty_dsn, passwords={"no_such_role_xyz": secret})
    assert secret not in str(info.value)


def _revision_and_before(name: str) -> tuple[str, str]:
    """The revision whose file name holds `name`, and the one before it."""
    from alembic.script import ScriptDirectory

    scripts = ScriptDirectory.from_config(migrate.alembic_config())
    script = next(s for s in scripts.walk_revisions() if name in s.path)
    before = script.down_revision
    assert isinstance(before, str)
    return script.revision, before


def test_protocol_state_migration_keeps_the_flex_negotiation(empty_dsn: str) -> None:
    """devices.flex_* move into devices.protocol_state and back, nothing lost."""
    revision, before = _revision_and_before("protocols_and_commands")
    migrate.upgrade(empty_dsn, before)
    with psycopg.connect(empty_dsn) as conn:
        conn.execute(
            """INSERT INTO devices (imei, flex_protocol_version, flex_struct_version, flex_mask)
               VALUES ('111111111111111', 20, 20, '\\xfffe300a'::bytea), ('222222222222222', NULL, NULL, NULL)"""
        )
    migrate.upgrade(empty_dsn, revision)
    with psycopg.connect(empty_dsn) as conn:
        rows = dict(conn.execute("SELECT imei, protocol_state FROM devices ORDER BY imei").fetchall())
    assert rows == {
        "111111111111111": {"protocol_version": 20, "struct_version": 20, "mask": "fffe300a"},
        "222222222222222": None,
    }
    migrate.downgrade(empty_dsn, before)
    with psycopg.connect(empty_dsn) as conn:
        row = conn.execute(
            "SELECT flex_protocol_version, flex_struct_version, flex_mask FROM devices WHERE imei = '111111111111111'"
        ).fetchone()
    assert row is not None and (row[0], row[1], bytes(row[2])) == (20, 20, bytes.fromhex("fffe300a"))


def test_compact_can_migration_regroups_signals_into_readings_and_back(empty_dsn: str) -> None:
    """Per-signal can_data rows become one row per reading (a record's, a CAN frame's), and come back."""
    revision, before = _revision_and_before("compact_can")
    migrate.upgrade(empty_dsn, before)
    signals = [
        # name, value, value_text, unit, source, linked to the position
        ("engine_speed", 900.0, None, "rpm", "FLEX:F53", True),
        ("fuel_level", 50.0, None, "%", "FLEX:F54", True),
        ("engine_speed", 621.0, None, "rpm", "J1939:PGN61444:SA0", False),
        ("engine_torque", 12.0, None, "%", "J1939:PGN61444:SA0", False),
        ("raw", None, "0102", None, "CAN:0x123", False),
    ]
    with psycopg.connect(empty_dsn) as conn:
        device_id = conn.execute(
            "INSERT INTO devices (imei) VALUES ('333333333333333') RETURNING id"
        ).fetchone()
        assert device_id is not None
        position = conn.execute(
            """INSERT INTO positions (device_id, record_index, device_time)
               VALUES (%s, 5, date_trunc('second', now())) RETURNING id, device_time""",
            (device_id[0],),
        ).fetchone()
        assert position is not None
        for name, value, text, unit, source, linked in signals:
            conn.execute(
                """INSERT INTO can_data (device_id, position_id, time, name, value, value_text, unit, source)
                   VALUES (%s, %s, %s, %s, %s, %s, %s, %s)""",
                (device_id[0], position[0] if linked else None, position[1], name, value, text, unit, source),
            )
    migrate.upgrade(empty_dsn, revision)
    with psycopg.connect(empty_dsn) as conn:
        readings = {
            (row[0], row[1]): (row[2], row[3])
            for row in conn.execute(
                "SELECT record_index, frame, position_id, signals FROM can_data ORDER BY record_index, frame"
            ).fetchall()
        }
    assert set(readings) == {(5, ""), (-1, "J1939:PGN61444:SA0"), (-1, "CAN:0x123")}
    assert readings[(5, "")] == (
        position[0],
        [
            {"name": "engine_speed", "value": 900.0, "unit": "rpm", "source": "FLEX:F53"},
            {"name": "fuel_level", "value": 50.0, "unit": "%", "source": "FLEX:F54"},
        ],
    )
    assert [s["name"] for s in readings[(-1, "J1939:PGN61444:SA0")][1]] == ["engine_speed", "engine_torque"]
    assert readings[(-1, "CAN:0x123")] == (
        None,
        [{"name": "raw", "value_text": "0102", "source": "CAN:0x123"}],
    )

    migrate.downgrade(empty_dsn, before)
    with psycopg.connect(empty_dsn) as conn:
        rows = conn.execute(
            """SELECT name, value, value_text, unit, source, position_id IS NOT NULL FROM can_data
               ORDER BY source, name"""
        ).fetchall()
    assert sorted(rows, key=lambda r: (r[4], r[0])) == sorted(
        [tuple(s) for s in signals], key=lambda r: (r[4], r[0])
    )
