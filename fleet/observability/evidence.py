"""`fleet ops emergency-logs`: one archive with what an incident review needs, collected in seconds.

The archive (`fleet-emergency-<UTC time>.tar.gz`) holds the tail of the server log, the warnings and errors of
the last 24 hours, `/health`, `/ready` and `/metrics` as the server answers now, the database's sessions, locks,
sizes and partitions, the effective settings with every secret masked, and the machine's disk and versions.
Every part is collected independently: a part that fails is replaced by a note of why, never by silence.
"""

from __future__ import annotations

import io
import json
import platform
import shutil
import subprocess
import tarfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

import fleet
from fleet.config import Settings

LOG_TAIL_BYTES = 5 * 2**20
ERROR_LEVELS = {"warning", "error", "critical", "exception"}


def _log_files(settings: Settings) -> list[Path]:
    folder = settings.log_dir
    return sorted(folder.glob("server.log*"), key=lambda p: p.stat().st_mtime) if folder.is_dir() else []


def log_tail(settings: Settings) -> bytes:
    files = _log_files(settings)
    if not files:
        return f"no log files under {settings.log_dir}\n".encode()
    current = files[-1]
    with current.open("rb") as handle:
        size = current.stat().st_size
        handle.seek(max(size - LOG_TAIL_BYTES, 0))
        return handle.read()


def recent_errors(settings: Settings, since: datetime) -> bytes:
    """JSON log lines at warning level or above since `since`, from every rotated file."""
    out = io.BytesIO()
    for path in _log_files(settings):
        with path.open("rb") as handle:
            for line in handle:
                try:
                    entry = json.loads(line)
                except ValueError:
                    continue
                if str(entry.get("level", "")).lower() not in ERROR_LEVELS:
                    continue
                stamp = entry.get("timestamp")
                try:
                    when = datetime.fromisoformat(str(stamp).replace("Z", "+00:00")) if stamp else None
                except ValueError:
                    when = None
                if when is None or when.astimezone(UTC) >= since:
                    out.write(line if line.endswith(b"\n") else line + b"\n")
    return out.getvalue() or b"no warnings or errors in the last 24 hours\n"


def masked_settings(settings: Settings) -> bytes:
    values = json.loads(settings.model_dump_json())
    for key in list(values):
        if any(word in key for word in ("secret", "password", "key", "token")) and values[key]:
            values[key] = "***"
    for key in ("database_url", "database_app_url", "database_read_url", "redis_url", "smtp_url"):
        if values.get(key):
            values[key] = "***"
    return json.dumps(values, indent=2, default=str).encode()


def http_parts(base: str, headers: dict[str, str]) -> dict[str, bytes]:
    parts = {}
    for name, path, extra in (
        ("health.json", "/health", {}),
        ("ready.json", "/ready", {}),
        ("metrics.txt", "/metrics", headers),
    ):
        try:
            response = httpx.get(f"{base}{path}", headers=extra, timeout=5)
            parts[name] = f"HTTP {response.status_code}\n".encode() + response.content
        except httpx.HTTPError as err:
            parts[name] = f"not reachable at {base}{path}: {err}\n".encode()
    return parts


def system_info(settings: Settings) -> bytes:
    lines = [
        f"fleet {fleet.__version__}, Python {platform.python_version()}, {platform.platform()}",
        f"collected {datetime.now(UTC).isoformat()}",
    ]
    for path in (settings.data_dir, Path("/")):
        try:
            usage = shutil.disk_usage(path)
            lines.append(f"disk {path}: {usage.free / 2**30:,.1f} GiB free of {usage.total / 2**30:,.1f} GiB")
        except OSError as err:
            lines.append(f"disk {path}: {err}")
    journal = shutil.which("journalctl")
    if journal:
        try:
            result = subprocess.run(
                [journal, "-u", "fleet", "-n", "500", "--no-pager"],
                capture_output=True,
                text=True,
                timeout=20,
            )
            lines += ["", "journalctl -u fleet -n 500:", result.stdout or result.stderr]
        except (OSError, subprocess.TimeoutExpired) as err:
            lines.append(f"journalctl: {err}")
    return ("\n".join(lines) + "\n").encode()


def collect(
    settings: Settings,
    base: str,
    headers: dict[str, str],
    out_dir: Path,
    database: dict[str, Any],
) -> Path:
    """Write the archive and return its path."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    parts: dict[str, bytes] = {
        "server.log.tail": log_tail(settings),
        "errors-24h.jsonl": recent_errors(settings, datetime.now(UTC) - timedelta(days=1)),
        "settings.json": masked_settings(settings),
        "system.txt": system_info(settings),
        **http_parts(base, headers),
    }
    parts["database.json"] = json.dumps(database, indent=2, default=str).encode()
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"fleet-emergency-{stamp}.tar.gz"
    with tarfile.open(target, "w:gz") as archive:
        for name, data in parts.items():
            info = tarfile.TarInfo(f"fleet-emergency-{stamp}/{name}")
            info.size = len(data)
            info.mtime = int(time.time())
            archive.addfile(info, io.BytesIO(data))
    target.chmod(0o600)  # logs name users and addresses
    return target
