"""A real Prometheus (Debian's package) scrapes a running API and evaluates the real rule files on real samples.

The API serves on an ephemeral TCP port; a second app instance whose database was never opened answers
`/health` with 503, so the API's own metrics carry genuine 5xx answers. Prometheus runs on port 0 with a
temporary storage directory, scrapes every second, and we read back a recording rule and the alerts it
raised.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from fleet.api.app import create_app
from fleet.config import Settings
from fleet.db import Database
from fleet.runtime import Runtime

from .conftest import REPO

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
RULES = REPO / "deploy" / "prometheus" / "rules"
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not Path(PROMETHEUS).exists(), reason="prometheus is not installed (make system-deps)"
    ),
]


class TcpServer:
    """uvicorn on 127.0.0.1:0 (the kernel picks the port), inside the test's event loop."""

    def __init__(self, app: Any) -> None:
        config = uvicorn.Config(app, host="127.0.0.1", port=0, log_config=None, access_log=False, ws="none")
        self.server = uvicorn.Server(config)
        self.task: asyncio.Task[None] | None = None
        self.port = 0

    async def start(self) -> TcpServer:
        self.task = asyncio.create_task(self.server.serve())
        while not self.server.started:
            if self.task.done():
                await self.task
            await asyncio.sleep(0.02)
        self.port = self.server.servers[0].sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        self.server.should_exit = True
        if self.task is not None:
            await self.task


class Prometheus:
    def __init__(self, target_port: int) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="fleet-prom-"))
        config = self.dir / "prometheus.yml"
        rule_files = "\n".join(f"  - {path}" for path in sorted(RULES.glob("*.yml")))
        config.write_text(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
            f"rule_files:\n{rule_files}\n"
            "scrape_configs:\n  - job_name: fleet\n    static_configs:\n"
            f"      - targets: ['127.0.0.1:{target_port}']\n"
        )
        self.log = self.dir / "prometheus.log"
        self._log_file = self.log.open("wb")
        self.proc = subprocess.Popen(
            [
                PROMETHEUS,
                f"--config.file={config}",
                f"--storage.tsdb.path={self.dir / 'data'}",
                "--web.listen-address=127.0.0.1:0",
            ],
            stdout=subprocess.DEVNULL,
            stderr=self._log_file,
        )
        self.url = ""

    def wait_listening(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = re.search(r'msg="Listening on" address=(127\.0\.0\.1:\d+)', self.log.read_text())
            if found:
                self.url = f"http://{found.group(1)}"
                return
            assert self.proc.poll() is None, self.log.read_text()
            time.sleep(0.05)
        raise AssertionError(f"prometheus did not start: {self.log.read_text()}")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self._log_file.close()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
async def servers(db: Database, test_settings: Settings) -> AsyncIterator[tuple[TcpServer, TcpServer]]:
    healthy = await TcpServer(create_app(test_settings, Runtime(test_settings, db, ["api"]))).start()
    # A database object that was never started: every request that needs it fails with 503.
    broken_runtime = Runtime(test_settings, Database(test_settings), ["api"])
    broken = await TcpServer(create_app(test_settings, broken_runtime)).start()
    try:
        yield healthy, broken
    finally:
        await broken.stop()
        await healthy.stop()


@pytest.fixture
def prometheus_for() -> Iterator[Any]:
    started: list[Prometheus] = []

    def start(port: int) -> Prometheus:
        prom = Prometheus(port)
        started.append(prom)
        prom.wait_listening()
        return prom

    yield start
    for prom in started:
        prom.stop()


async def _query(client: httpx.AsyncClient, expr: str) -> list[dict[str, Any]]:
    response = await client.get("/api/v1/query", params={"query": expr})
    response.raise_for_status()
    result: list[dict[str, Any]] = response.json()["data"]["result"]
    return result


async def test_prometheus_scrapes_the_server_and_evaluates_the_rules(
    servers: tuple[TcpServer, TcpServer], prometheus_for: Any
) -> None:
    healthy, broken = servers
    prom = prometheus_for(healthy.port)
    ratio: list[dict[str, Any]] = []
    alerts: dict[str, str] = {}
    async with (
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{healthy.port}") as good,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{broken.port}") as bad,
        httpx.AsyncClient(base_url=prom.url, timeout=5) as api,
    ):
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            # One request in four fails (503 from the server without a database).
            for _ in range(6):
                assert (await good.get("/health")).status_code == 200
            for _ in range(2):
                assert (await bad.get("/health")).status_code == 503
            ratio = await _query(api, "fleet:api_errors:ratio_rate5m")
            listed = (await api.get("/api/v1/alerts")).json()["data"]["alerts"]
            alerts = {alert["labels"]["alertname"]: alert["state"] for alert in listed}
            if ratio and {"FleetApi5xxSpike", "FleetApiErrorsBudgetBurnFast"} <= alerts.keys():
                break
            await asyncio.sleep(0.5)
        # Scraped: the best of the last minute (with a 1 s interval the timeout is 1 s, and one scrape of a loaded
        # machine - the whole suite running - may miss it; the ratio below needs successful scrapes anyway).
        up = await _query(api, 'max_over_time(up{job="fleet"}[1m])')
        worst = await _query(api, 'min_over_time(up{job="fleet"}[1m])')
    assert up and up[0]["value"][1] == "1"
    # /health 200s, /health 503s and Prometheus's own scrapes of /metrics: the ratio is real and between.
    assert ratio, "the recording rule produced no sample"
    value = float(ratio[0]["value"][1])
    assert 0.05 < value < 0.5, value
    # Both alerts evaluated true on these samples; they wait out their `for` in state pending.
    assert alerts.get("FleetApi5xxSpike") in ("pending", "firing"), alerts
    assert alerts.get("FleetApiErrorsBudgetBurnFast") in ("pending", "firing"), alerts
    # The healthy server is not reported down - unless a scrape really missed its 1 s timeout, in which case
    # the rule is right to start waiting out its 2 minutes (pending, never firing within this test).
    scrapes_all_answered = bool(worst) and worst[0]["value"][1] == "1"
    if scrapes_all_answered:
        assert "FleetServerDown" not in alerts, alerts
    else:
        assert alerts.get("FleetServerDown") in (None, "pending"), alerts
