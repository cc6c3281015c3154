"""Against a real `fleet serve` (every role, its own database): the smoke playbook, the `fleet ops` commands,
and the check that every metric the alert rules, dashboards and runbooks use is on `/metrics` after real
traffic (HTTP, a simulated tracker, a sync cycle against a local agent, a decode error, a failing pull).
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg
import pytest

from fleet.config import Settings
from fleet.db import Database
from fleet.observability.scrape import Snapshot

from .metric_names import (
    FAILURE_ONLY,
    PENDING,
    PROMETHEUS_OWN,
    base_name,
    dashboard_exprs,
    promql_names,
    recorded_names,
    rule_exprs,
)
from .runbook_refs import runbook_metric_names

REPO = Path(__file__).resolve().parents[2]
FLEET = str(Path(sys.executable).with_name("fleet"))
ADMIN = "smoke-admin@fleet.test"
PASSWORD = "smoke test password 1"
pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _certificate(path: Path) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fleet.test")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=30))
        .sign(key, hashes.SHA256())
    )
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


@dataclass
class Server:
    url: str
    device_port: int
    env: dict[str, str]
    data_dir: Path
    proc: subprocess.Popen[bytes]

    def fleet(self, *args: str, timeout: float = 120, **extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [FLEET, *args],
            env={**self.env, "COLUMNS": "240", **extra},
            capture_output=True,
            text=True,
            timeout=timeout,
        )


@pytest.fixture(scope="module")
def server(db: Database, test_settings: Settings) -> Iterator[Server]:
    assert db.owner_dsn is not None and test_settings.db_app_password and test_settings.db_grafana_password
    # A database of its own: the sync role pulls every vehicle with an address, and other tests' vehicles
    # carry addresses that must never be contacted.
    name = f"fleet_obs_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(db.owner_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(db.owner_dsn)
    dsn = urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))
    work = Path(tempfile.mkdtemp(prefix="fleet-obs-server-"))
    work.chmod(0o755)
    cert = work / "fullchain.pem"
    _certificate(cert)
    api_port, device_port = free_port(), free_port()
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DB_", "DATABASE_", "API_", "SERVER_", "TEST_"))
    }
    env.pop("REDIS_URL", None)
    env.pop("CONFIG_FILE", None)
    env.update(
        DATABASE_URL=dsn,
        DB_APP_PASSWORD=test_settings.db_app_password.get_secret_value(),
        DB_GRAFANA_PASSWORD=test_settings.db_grafana_password.get_secret_value(),
        DATA_DIR=str(work / "var"),
        ENV="test",
        SECRET_KEY="observability-test-secret-key-0123456789",
        API_KEY="observability-test-api-key-0123456789",
        API_PORT=str(api_port),
        SERVER_HOST="127.0.0.1",
        SERVER_PORT=str(device_port),
        TELTONIKA_PORT="0",  # only the Navtelecom port is used here; 5027 may be another run's
        SYNC_INTERVAL_SEC="1",
        BUSINESS_METRICS_INTERVAL_SEC="1",
        TLS_CERT_FILES=f"{cert},{work / 'missing.pem'}",
        LOG_FORMAT="json",
        INGEST_BATCH_WINDOW_MS="5",
    )
    log = (work / "server.out").open("wb")
    proc = subprocess.Popen([FLEET, "serve"], env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{api_port}"
    running = Server(url, device_port, env, work / "var", proc)
    try:
        deadline = time.monotonic() + 90
        while True:
            assert proc.poll() is None, (work / "server.out").read_text()[-3000:]
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "fleet serve did not become healthy"
            time.sleep(0.2)
        created = running.fleet(
            "user", "create", "--email", ADMIN, "--password", PASSWORD, "--role", "superuser"
        )
        assert created.returncode == 0, created.stderr
        yield running
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
        shutil.rmtree(work, ignore_errors=True)
        with psycopg.connect(db.owner_dsn, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def smoke(server: Server, **extra: str) -> subprocess.CompletedProcess[str]:
    env = {
        **server.env,
        "API_URL": server.url,
        "DEVICE_PORT": str(server.device_port),
        "SMOKE_EMAIL": ADMIN,
        "SMOKE_PASSWORD": PASSWORD,
        "SMOKE_AGENT_PORT": str(free_port()),
        "SMOKE_IMEI": "860000000" + str(uuid.uuid4().int)[:6],
        "FLEET": FLEET,
        "PYTHON": sys.executable,
        **extra,
    }
    return subprocess.run(
        ["bash", str(REPO / "playbooks" / "smoke.sh")], env=env, capture_output=True, text=True, timeout=240
    )


def test_smoke_playbook_passes_against_the_server(server: Server) -> None:
    result = smoke(server)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SMOKE TEST PASSED: 11 steps" in result.stdout
    # A second run reuses the tracker's vehicle instead of adding another one.
    again = smoke(server, SMOKE_IMEI=result.stdout.split("tracker registered (")[1].split(")")[0])
    assert again.returncode == 0, again.stdout + again.stderr
    assert "known" in again.stdout


def test_smoke_playbook_stops_at_the_first_failure_with_a_report(server: Server) -> None:
    result = smoke(server, SMOKE_PASSWORD="not the password")
    assert result.returncode == 3, result.stdout
    assert "SMOKE TEST FAILED at step 3: sign in" in result.stdout
    assert "reason: sign-in of smoke-admin@fleet.test answered HTTP 401" in result.stdout
    assert "tracker session" not in result.stdout  # nothing after the failed step ran


def _extra_traffic(server: Server) -> None:
    """What the smoke run does not produce: an unmatched path, a decode error, a failing vehicle pull."""
    httpx.get(f"{server.url}/no/such/path", timeout=5)
    for _ in range(8):  # past RATE_LIMIT_LOGIN_PER_MINUTE (5): refused with 429 and counted
        httpx.post(
            f"{server.url}/auth/login", json={"email": ADMIN, "password": "wrong password"}, timeout=10
        )
    with socket.create_connection(("127.0.0.1", server.device_port), timeout=5) as sock:
        sock.sendall(b"GET / HTTP/1.0\r\n\r\n" + bytes(range(256)))
        sock.settimeout(5)
        try:
            while sock.recv(4096):
                pass
        except OSError:
            pass
    added = server.fleet(
        "vehicle", "add", "--name", "unreachable", "--vpn-ip", "127.0.0.1", "--api-port", "9"
    )
    assert added.returncode == 0, added.stderr


def test_every_metric_used_by_rules_dashboards_and_runbooks_exists(server: Server) -> None:
    _extra_traffic(server)
    time.sleep(3)  # a few sync cycles (1 s) and business-gauge refreshes (1 s)
    snapshot = Snapshot.parse(httpx.get(f"{server.url}/metrics", timeout=10).text)
    with_samples = set(snapshot.samples)
    declared = snapshot.declared | {base_name(name) for name in with_samples}

    used: dict[str, set[str]] = {}
    sources = [*rule_exprs(), *dashboard_exprs(), *((f"runbook {n}", n) for n in runbook_metric_names())]
    for where, expr in sources:
        for name in promql_names(expr):
            used.setdefault(name, set()).add(where)
    recorded = recorded_names()
    missing, unsampled = [], []
    for name, where in sorted(used.items()):
        if name in recorded or name in PROMETHEUS_OWN or name in PENDING:
            continue
        if name in with_samples or any(name + suffix in with_samples for suffix in ("_bucket", "_total")):
            continue
        if base_name(name) in declared and (name in FAILURE_ONLY or base_name(name) in FAILURE_ONLY):
            continue
        if base_name(name) in declared or name in declared:
            unsampled.append(f"{name} (used by {sorted(where)[0]})")
        else:
            missing.append(f"{name} (used by {', '.join(sorted(where)[:3])})")
    assert not missing, "metrics used but not exported:\n" + "\n".join(missing)
    assert not unsampled, "metrics declared but without a sample after real traffic:\n" + "\n".join(unsampled)
    landed = sorted(name for name in PENDING if base_name(name) in declared or name in with_samples)
    assert not landed, f"these pending names exist now: remove them from PENDING: {landed}"
    # No per-device or per-user labels anywhere.
    labels = {key for series in snapshot.samples.values() for found, _ in series for key in found}
    assert not labels & {
        "imei",
        "device",
        "device_id",
        "vehicle",
        "vehicle_id",
        "user",
        "user_id",
        "email",
        "path",
    }


def test_ops_commands_against_the_server(server: Server, tmp_path: Path) -> None:
    url = ["--url", server.url]
    health = server.fleet("ops", "health", *url)
    assert health.returncode == 0, health.stdout + health.stderr
    assert "/ready" in health.stdout and "Ingest" in health.stdout and "frames/s" in health.stdout

    monitor = server.fleet("ops", "monitor", *url, "--once", "--interval", "0.5")
    assert monitor.returncode == 0, monitor.stderr
    for section in ("Ingest", "API", "Database", "Sync", "Fleet", "Host"):
        assert section in monitor.stdout
    assert "fullchain.pem" in monitor.stdout  # the certificate's days left

    perf = server.fleet("ops", "perf", *url, "--window", "1")
    assert perf.returncode == 0, perf.stderr
    assert "http_request_duration_seconds" in perf.stdout and "/health" in perf.stdout

    daily = server.fleet("ops", "daily", *url)
    # No backup exists in this fresh data directory: the daily check must say so and fail.
    assert daily.returncode == 1, daily.stdout + daily.stderr
    assert "no successful backup recorded" in daily.stdout and "missing.pem cannot be read" in daily.stdout
    assert "positions in 24 h" in daily.stdout

    security = server.fleet("ops", "security", "--audit-dry-run", timeout=300)
    assert "enabled and forced on all" in security.stdout, security.stdout + security.stderr
    assert "fleet_grafana: no superuser" in security.stdout
    assert "ENV=test" in security.stdout
    assert "pip-audit (dry run)" in security.stdout

    activity = server.fleet("ops", "db-activity")
    assert activity.returncode == 0, activity.stderr
    assert "tables" in activity.stdout and "positions" in activity.stdout

    logs = server.fleet("ops", "logs", "--lines", "5", "--level", "info")
    assert logs.returncode == 0 and logs.stdout.strip(), logs.stderr

    maintenance = server.fleet("ops", "maintenance")
    assert maintenance.returncode == 0, maintenance.stderr
    assert "statistics refreshed" in maintenance.stdout

    login = server.fleet("ops", "grafana-login", "--user", ADMIN)
    assert login.returncode == 0 and login.stdout.strip().splitlines()[-1].startswith("u"), login.stderr

    archive_dir = tmp_path / "emergency"
    emergency = server.fleet("ops", "emergency-logs", *url, "--out", str(archive_dir))
    assert emergency.returncode == 0, emergency.stderr
    (archive,) = archive_dir.glob("fleet-emergency-*.tar.gz")
    with tarfile.open(archive) as tar:
        names = {Path(member.name).name for member in tar.getmembers()}
        settings = tar.extractfile(next(m for m in tar.getmembers() if m.name.endswith("settings.json")))
        assert settings is not None
        settings_text = settings.read().decode()
    assert names >= {
        "server.log.tail",
        "errors-24h.jsonl",
        "health.json",
        "ready.json",
        "metrics.txt",
        "database.json",
        "settings.json",
        "system.txt",
    }
    assert "observability-test-secret-key" not in settings_text and '"secret_key": "***"' in settings_text


def test_make_lists_the_operations_and_prints_runbooks() -> None:
    listed = subprocess.run(["make", "-s", "help"], cwd=REPO, capture_output=True, text=True, timeout=30)
    for target in (
        "health-check",
        "smoke-test",
        "runbook-",
        "logs",
        "monitor",
        "emergency-logs",
        "daily-ops",
        "security-check",
        "perf-check",
        "maintenance",
    ):
        assert target in listed.stdout, target
    page = subprocess.run(
        ["make", "-s", "runbook-no-frames"], cwd=REPO, capture_output=True, text=True, timeout=30
    )
    assert page.returncode == 0 and page.stdout.startswith("# 01 — No frames from devices")
    unknown = subprocess.run(
        ["make", "-s", "runbook-nonsense"], cwd=REPO, capture_output=True, text=True, timeout=30
    )
    assert unknown.returncode != 0 and "no runbook 'nonsense'" in unknown.stderr
