"""`fleet ops security`: the checks seed 001 and the team's standards ask for, on the running installation.

* Bindings: every listening TCP socket of the machine; the database, Redis, Grafana, Prometheus, Alertmanager
  and the API must listen on loopback only (seed 001's table), the device ports and nginx may not.
* Secrets: production mode, no placeholder or short secrets, no public metrics, no leftover first-run
  password file.
* Database: row-level security enabled and forced on every table, the runtime roles neither superuser nor
  BYPASSRLS, `fleet_grafana` without table privileges.
* Dependencies: `pip-audit` against the installed packages.
"""

from __future__ import annotations

import ipaddress
import json
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import asyncpg

from fleet.config import Settings, _weak
from fleet.observability import dbstat

Status = Literal["ok", "warn", "fail"]


def verdict(good: bool, bad: Status = "fail") -> Status:
    return "ok" if good else bad


def grade(value: float, ok_from: float, warn_from: float) -> Status:
    """ok at or above `ok_from`, warn at or above `warn_from`, else fail."""
    return "ok" if value >= ok_from else "warn" if value >= warn_from else "fail"


# Services that must never face the network (seed 001: "everything else only 127.0.0.1").
PRIVATE_PORTS = {5432: "PostgreSQL", 6379: "Redis", 3000: "Grafana", 9090: "Prometheus", 9093: "Alertmanager"}
PUBLIC_OK = {22: "ssh", 80: "nginx (HTTP)", 443: "nginx (HTTPS)"}


@dataclass(frozen=True)
class Finding:
    area: str
    status: Status
    detail: str


def _decode_address(hex_addr: str) -> str:
    raw = bytes.fromhex(hex_addr)
    if len(raw) == 4:
        return socket.inet_ntop(socket.AF_INET, raw[::-1])
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))
    return socket.inet_ntop(socket.AF_INET6, words)


def listening_sockets(proc: Path = Path("/proc/net")) -> list[tuple[str, int]]:
    """(address, port) of every listening TCP socket on the machine (IPv4 and IPv6)."""
    found = set()
    for name in ("tcp", "tcp6"):
        path = proc / name
        if not path.exists():
            continue
        for line in path.read_text().splitlines()[1:]:
            fields = line.split()
            if len(fields) < 4 or fields[3] != "0A":  # 0A = LISTEN
                continue
            address, port = fields[1].rsplit(":", 1)
            found.add((_decode_address(address), int(port, 16)))
    return sorted(found)


def _is_loopback(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


def check_bindings(settings: Settings, sockets: list[tuple[str, int]]) -> list[Finding]:
    private = {**PRIVATE_PORTS, settings.api_port: "the Fleet API"}
    device_ports = {settings.server_port: "device port"}
    teltonika = getattr(settings, "teltonika_port", None)
    if teltonika:
        device_ports[int(teltonika)] = "device port (Teltonika)"
    findings = []
    for address, port in sockets:
        if _is_loopback(address):
            continue
        where = f"{address}:{port}"
        if port in private:
            findings.append(
                Finding("bindings", "fail", f"{private[port]} listens on {where}: bind it to 127.0.0.1")
            )
        elif port in device_ports or port in PUBLIC_OK:
            findings.append(
                Finding("bindings", "ok", f"{where} ({(device_ports | PUBLIC_OK)[port]}) is public by design")
            )
        else:
            findings.append(Finding("bindings", "warn", f"unexpected public listener {where}: is it needed?"))
    if settings.api_host not in ("127.0.0.1", "::1", "localhost"):
        findings.append(
            Finding("bindings", "fail", f"API_HOST={settings.api_host}: the API belongs behind nginx")
        )
    if not findings:
        findings.append(Finding("bindings", "ok", "nothing but loopback listeners"))
    return findings


def check_settings(settings: Settings) -> list[Finding]:
    findings = []
    if not settings.production:
        findings.append(Finding("secrets", "warn", f"ENV={settings.env}: production refuses weak secrets"))
    for name in ("secret_key", "api_key"):
        if _weak(getattr(settings, name)):
            findings.append(
                Finding("secrets", "fail", f"{name.upper()} is missing, a placeholder or too short")
            )
    if not settings.uses_embedded_db:
        for name in ("db_app_password", "db_grafana_password"):
            if settings.database_app_url is None and _weak(getattr(settings, name)):
                findings.append(Finding("secrets", "fail", f"{name.upper()} is missing or weak"))
    if settings.metrics_allow_public:
        findings.append(Finding("secrets", "warn", "METRICS_ALLOW_PUBLIC=1: /metrics answers anyone"))
    first_admin = settings.data_dir / "initial_admin.txt"
    if first_admin.exists():
        findings.append(
            Finding("secrets", "warn", f"{first_admin} still holds the first administrator's password")
        )
    if not findings:
        findings.append(Finding("secrets", "ok", "production mode, strong secrets, private metrics"))
    return findings


async def check_database(conn: asyncpg.Connection) -> list[Finding]:
    findings = []
    tables = await dbstat.rows(conn, dbstat.RLS_SQL)
    weak = [t["table"] for t in tables if not (t["enabled"] and t["forced"])]
    if weak:
        findings.append(
            Finding("rls", "fail", f"row-level security not enabled and forced on: {', '.join(weak)}")
        )
    else:
        findings.append(Finding("rls", "ok", f"enabled and forced on all {len(tables)} tables"))
    partitions = await dbstat.rows(conn, dbstat.OPEN_PARTITIONS_SQL)
    loose = [p["partition"] for p in partitions if p["beyond_insert"] or not p["guarded"]]
    if loose:
        findings.append(
            Finding(
                "rls",
                "fail",
                "partitions fleet_app can read, change or append to outside the system context: "
                + ", ".join(loose),
            )
        )
    else:
        findings.append(
            Finding(
                "rls", "ok", f"{len(partitions)} partitions take guarded appends from fleet_app, nothing more"
            )
        )
    roles = {r["role"]: r for r in await dbstat.rows(conn, dbstat.ROLES_SQL)}
    for role in ("fleet_app", "fleet_grafana"):
        row = roles.get(role)
        if row is None:
            findings.append(Finding("roles", "fail", f"role {role} does not exist (run fleet db upgrade)"))
        elif row["superuser"] or row["bypass_rls"] or row["create_role"]:
            findings.append(Finding("roles", "fail", f"{role} is superuser, BYPASSRLS or CREATEROLE"))
        else:
            findings.append(Finding("roles", "ok", f"{role}: no superuser, no BYPASSRLS"))
    grafana = roles.get("fleet_grafana")
    if grafana is not None and grafana["table_grants"]:
        findings.append(
            Finding("roles", "fail", "fleet_grafana has table privileges (dashboards must use grafana.*)")
        )
    return findings


def pip_audit(dry_run: bool = False, timeout: float = 600) -> list[Finding]:
    """Known vulnerabilities of the installed packages (pip-audit asks PyPI's advisory database)."""
    args = [
        sys.executable,
        "-m",
        "pip_audit",
        "--progress-spinner",
        "off",
        "--format",
        "json",
        "--skip-editable",
    ]
    if dry_run:
        args.append("--dry-run")
    try:
        result = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as err:
        return [Finding("dependencies", "warn", f"pip-audit could not run: {err}")]
    if "No module named pip_audit" in result.stderr:
        return [Finding("dependencies", "warn", "pip-audit is not installed (pip install -e '.[dev]')")]
    if dry_run:
        ok = result.returncode == 0
        note = (result.stderr.strip().splitlines() or ["dry run"])[-1]
        return [Finding("dependencies", "ok" if ok else "warn", f"pip-audit (dry run): {note}")]
    try:
        report = json.loads(result.stdout)
    except json.JSONDecodeError:
        tail = (result.stderr.strip().splitlines() or ["no output"])[-1]
        return [Finding("dependencies", "warn", f"pip-audit gave no report: {tail}")]
    vulnerable = [
        f"{dep['name']} {dep['version']} ({', '.join(v['id'] for v in dep['vulns'])})"
        for dep in report.get("dependencies", [])
        if dep.get("vulns")
    ]
    if vulnerable:
        return [Finding("dependencies", "fail", "known vulnerabilities: " + "; ".join(vulnerable))]
    return [
        Finding(
            "dependencies", "ok", f"{len(report.get('dependencies', []))} packages, no known vulnerability"
        )
    ]
