"""DATABASE_READ_URL: history reads go to a streaming replica, writes stay on the primary, RLS holds there.

The test builds a real primary/standby pair: `initdb` a fresh primary (wal_level=replica) on a free port,
migrate it, `pg_basebackup -R` a standby from it and start that on another port, then runs the API with
DATABASE_URL on the primary and DATABASE_READ_URL on the standby (as `fleet_app`). Pausing WAL replay on
the standby shows which server answered: rows written on the primary meanwhile are invisible to history
reads until replay resumes, while writes and reads of what a request just wrote go on working.
"""

from __future__ import annotations

import asyncio
import os
import pwd
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import httpx
import pytest
from prometheus_client import REGISTRY

from fleet.api.app import create_app
from fleet.config import Settings
from fleet.db import Database
from tests.api.conftest import LiveServer, add_positions, free_port, make_account, make_fleet

pytestmark = pytest.mark.slow


def _bin_dir() -> Path:
    """PostgreSQL binaries: the embedded server's (a dependency), else the machine's."""
    import pgserver

    for candidate in (
        Path(pgserver.__file__).parent / "pginstall" / "bin",
        Path("/usr/lib/postgresql/15/bin"),
    ):
        if (candidate / "pg_basebackup").exists():
            return candidate
    pytest.skip("no PostgreSQL binaries with pg_basebackup")


def _run_as() -> str | None:
    """PostgreSQL refuses to run as root: use the unprivileged user pgserver created, or `postgres`."""
    if os.geteuid() != 0:
        return None
    for name in ("pgserver", "postgres"):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    pytest.skip("running as root without an unprivileged PostgreSQL user")


@dataclass
class Cluster:
    """A primary and its streaming standby, both on 127.0.0.1."""

    bin: Path
    user: str | None
    root: Path
    primary_port: int
    standby_port: int

    def run(self, *args: str) -> None:
        subprocess.run(args, check=True, capture_output=True, user=self.user, timeout=60)

    def dsn(self, port: int, user: str = "postgres", database: str = "fleet") -> str:
        return f"postgresql://{user}@127.0.0.1:{port}/{database}"

    def start(self, name: str, port: int) -> None:
        self.run(
            str(self.bin / "pg_ctl"),
            "-D",
            str(self.root / name),
            "-l",
            str(self.root / f"{name}.log"),
            "-w",
            "-o",
            f"-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={self.root}"
            " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
            " -c wal_level=replica -c max_wal_senders=4 -c hot_standby=on",
            "start",
        )

    def stop(self, name: str) -> None:
        if (self.root / name / "postmaster.pid").exists():
            subprocess.run(
                [str(self.bin / "pg_ctl"), "-D", str(self.root / name), "-m", "immediate", "-w", "stop"],
                capture_output=True,
                user=self.user,
                timeout=60,
            )


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    bin_dir, user = _bin_dir(), _run_as()
    root = Path(tempfile.mkdtemp(prefix="fleet-replica-"))
    if user is not None:
        shutil.chown(root, user)
        root.chmod(0o755)
    pair = Cluster(bin_dir, user, root, free_port(), free_port())
    try:
        pair.run(str(bin_dir / "initdb"), "-D", str(root / "primary"), "-U", "postgres", "--auth=trust", "-N")
        pair.start("primary", pair.primary_port)
        yield pair
    finally:
        pair.stop("standby")
        pair.stop("primary")
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
async def replica_setup(cluster: Cluster) -> AsyncIterator[tuple[Settings, Database]]:
    """Migrate the primary, clone the standby from it; yield the API's settings and a primary pool."""
    conn = await asyncpg.connect(cluster.dsn(cluster.primary_port, database="postgres"))
    try:
        await conn.execute("CREATE DATABASE fleet")
    finally:
        await conn.close()
    settings = Settings(
        env="test",
        data_dir=Path(tempfile.mkdtemp(prefix="fleet-replica-data-")),
        database_url=cluster.dsn(cluster.primary_port),
        database_read_url=cluster.dsn(cluster.standby_port, user="fleet_app"),
        secret_key=secrets.token_urlsafe(32),
        api_key=secrets.token_urlsafe(32),
        db_app_password=secrets.token_urlsafe(24),
        redis_url=None,
        nats_url=None,
        rate_limit_api_per_minute=100_000,
    )
    primary = Database(settings.model_copy(update={"database_read_url": None}))
    await primary.start(migrate_schema=True)
    try:
        await asyncio.to_thread(
            cluster.run,
            str(cluster.bin / "pg_basebackup"),
            "-h",
            "127.0.0.1",
            "-p",
            str(cluster.primary_port),
            "-U",
            "postgres",
            "-D",
            str(cluster.root / "standby"),
            "-R",
            "-X",
            "stream",
            "-c",
            "fast",
        )
        await asyncio.to_thread(cluster.start, "standby", cluster.standby_port)
        yield settings, primary
    finally:
        await primary.close()
        shutil.rmtree(settings.data_dir, ignore_errors=True)


async def _standby(cluster: Cluster) -> asyncpg.Connection:
    return await asyncpg.connect(cluster.dsn(cluster.standby_port))


async def _wait_replayed(cluster: Cluster, primary_dsn: str) -> None:
    """Until the standby has replayed everything the primary wrote so far."""
    primary = await asyncpg.connect(primary_dsn)
    standby = await _standby(cluster)
    try:
        target = await primary.fetchval("SELECT pg_current_wal_lsn()")
        for _ in range(200):
            if await standby.fetchval("SELECT pg_last_wal_replay_lsn() >= $1::pg_lsn", target):
                return
            await asyncio.sleep(0.05)
        raise AssertionError("the standby did not catch up")
    finally:
        await primary.close()
        await standby.close()


async def test_history_reads_come_from_the_replica_writes_from_the_primary_and_rls_holds(
    cluster: Cluster, replica_setup: tuple[Settings, Database]
) -> None:
    settings, primary = replica_setup
    owner_a = await make_account(primary, settings)
    owner_b = await make_account(primary, settings)
    admin = await make_account(primary, settings, role="superuser")
    fleet_a = await make_fleet(primary, owner_a)
    fleet_b = await make_fleet(primary, owner_b)
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
    await add_positions(primary, fleet_a, start, 10)
    await add_positions(primary, fleet_b, start, 10)
    await _wait_replayed(cluster, cluster.dsn(cluster.primary_port))
    span = {"from": (start - timedelta(minutes=1)).isoformat(), "to": datetime.now(UTC).isoformat()}

    server = await LiveServer(create_app(settings), settings).start()
    standby = await _standby(cluster)
    try:
        assert await standby.fetchval("SELECT pg_is_in_recovery()")
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
            url_a = f"/vehicles/{fleet_a.vehicle_id}/positions"
            answer = await http.get(url_a, params=span, headers=owner_a.headers)
            assert answer.status_code == 200, answer.text
            assert answer.json()["total"] == 10
            # The read pool is connected to the standby, as fleet_app.
            readers = await standby.fetch(
                "SELECT usename FROM pg_stat_activity WHERE application_name = 'fleet-read'"
            )
            assert readers and {r["usename"] for r in readers} == {"fleet_app"}

            # RLS on the replica: owner A cannot read owner B's history (404, as for a missing vehicle).
            for path in (
                f"/vehicles/{fleet_b.vehicle_id}/positions",
                f"/api/v2/devices/{fleet_b.imei}/telemetry",
                f"/api/devices/{fleet_b.imei}/last",
            ):
                denied = await http.get(path, params=span, headers=owner_a.headers)
                assert denied.status_code == 404, (path, denied.text)
            mine = await http.get(f"/api/v2/devices/{fleet_a.imei}/telemetry", headers=owner_a.headers)
            assert mine.status_code == 200 and mine.json()["total"] == 10

            # Freeze the replica: new rows on the primary stay invisible to history reads...
            await standby.execute("SELECT pg_wal_replay_pause()")
            await add_positions(primary, fleet_a, start + timedelta(seconds=30), 5)
            frozen = await http.get(url_a, params=span, headers=owner_a.headers)
            assert frozen.json()["total"] == 10

            # ...while writes succeed (on the primary) and reads of one's own writes see them at once.
            command = await http.post(
                f"/api/v2/devices/{fleet_a.imei}/commands",
                json={"type": "request_position"},
                headers=admin.headers,
            )
            assert command.status_code in (200, 201, 202), command.text
            listed = await http.get(f"/api/v2/devices/{fleet_a.imei}/commands", headers=admin.headers)
            assert listed.status_code == 200 and listed.json()["total"] == 1
            # A logout on the primary ends the session at once, replica lag or not.
            assert (await http.post("/auth/logout", headers=owner_b.headers)).status_code in (200, 204)
            revoked = await http.get(
                f"/vehicles/{fleet_b.vehicle_id}/positions", params=span, headers=owner_b.headers
            )
            assert revoked.status_code == 401

            # Replay resumes: the rows written meanwhile arrive through the replica.
            await standby.execute("SELECT pg_wal_replay_resume()")
            await _wait_replayed(cluster, cluster.dsn(cluster.primary_port))
            caught_up = await http.get(url_a, params=span, headers=owner_a.headers)
            assert caught_up.json()["total"] == 15
    finally:
        await standby.close()
        await server.stop()


async def test_a_read_url_whose_role_bypasses_rls_is_refused(
    cluster: Cluster, replica_setup: tuple[Settings, Database]
) -> None:
    settings, _primary = replica_setup
    from fleet.errors import ConfigError

    replica = Database.replica(settings, cluster.dsn(cluster.standby_port))  # the superuser `postgres`
    with pytest.raises(ConfigError, match="bypasses row-level security"):
        await replica.start()


async def test_history_falls_back_to_the_primary_when_the_replica_is_down(
    cluster: Cluster, replica_setup: tuple[Settings, Database]
) -> None:
    """Runs last (it stops the standby): a replica that goes away must not take history reads down."""
    settings, primary = replica_setup
    owner = await make_account(primary, settings)
    fleet = await make_fleet(primary, owner)
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=10)
    await add_positions(primary, fleet, start, 3)
    span = {"from": (start - timedelta(minutes=1)).isoformat(), "to": datetime.now(UTC).isoformat()}
    server = await LiveServer(create_app(settings), settings).start()
    fallbacks = REGISTRY.get_sample_value("fleet_db_read_replica_fallbacks_total") or 0.0
    try:
        await asyncio.to_thread(cluster.stop, "standby")
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
            for _ in range(2):  # the pool's idle connections die first, then new ones are refused
                answer = await http.get(
                    f"/vehicles/{fleet.vehicle_id}/positions", params=span, headers=owner.headers
                )
                assert answer.status_code == 200, answer.text
                assert answer.json()["total"] == 3
        assert REGISTRY.get_sample_value("fleet_db_read_replica_fallbacks_total") == fallbacks + 2
    finally:
        await server.stop()
