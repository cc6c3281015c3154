"""Canary: the verdict from real metrics text, promote/rollback rewriting nginx's split, and nginx actually
moving API requests and device connections between stable and canary."""

from __future__ import annotations

import asyncio
import shutil
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server

from fleet.ops.metrics_http import HTTP_REQUESTS, render_metrics
from tests.api.conftest import free_port

from .nginx_harness import (
    DEPLOY,
    NGINX,
    STREAM_MODULE,
    Backend,
    echo_app,
    localize,
    main_conf,
    nginx_available,
    nginx_test,
    running_nginx,
    self_signed,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools"))
import canary


def variant(errors: int, slow: bool, requests: int = 200) -> str:
    """A metrics endpoint with the app's metric names; returns its URL."""
    registry = CollectorRegistry()
    http = Counter("fleet_http_requests_total", "x", ["method", "route", "status"], registry=registry)
    duration = Histogram(
        "fleet_http_request_duration_seconds",
        "x",
        ["method", "route"],
        registry=registry,
        buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
    )
    for i in range(requests):
        http.labels("GET", "/vehicles", "500" if i < errors else "200").inc()
        duration.labels("GET", "/vehicles").observe(0.4 if slow else 0.008)
    port = free_port()
    start_http_server(port, addr="127.0.0.1", registry=registry)
    return f"http://127.0.0.1:{port}/metrics"


@pytest.fixture
def split_dir(tmp_path: Path) -> Path:
    for name in ("canary-split.conf", "canary-stream-split.conf"):
        shutil.copy(DEPLOY / "canary" / name, tmp_path / name)
    return tmp_path


def run(split_dir: Path, stable: str, canary_url: str, *command: str, reload: str = "true") -> int:
    return canary.main(
        [
            "--split-dir",
            str(split_dir),
            "--stable",
            stable,
            "--canary",
            canary_url,
            "--window",
            "0",
            "--reload",
            reload,
            *command,
        ]
    )


def test_parses_the_apps_own_metrics() -> None:
    HTTP_REQUESTS.labels("GET", "/canary-parse-test", "503").inc()
    sample = canary.parse_metrics(render_metrics()[0].decode())
    assert sample.requests >= 1 and sample.errors >= 1


def test_status_and_promote_follow_the_verdict(split_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    stable = variant(errors=1, slow=False)
    healthy = variant(errors=1, slow=False)
    erroring = variant(errors=20, slow=False)
    sluggish = variant(errors=0, slow=True)
    quiet = variant(errors=0, slow=False, requests=10)

    assert run(split_dir, stable, healthy, "status") == 0
    assert "canary is as healthy as stable" in capsys.readouterr().out
    assert run(split_dir, stable, erroring, "status") == 1
    assert "error rate 10.00%" in capsys.readouterr().out
    assert run(split_dir, stable, sluggish, "status") == 1
    assert "p95 latency" in capsys.readouterr().out
    assert run(split_dir, stable, quiet, "status") == 2

    assert run(split_dir, stable, erroring, "promote") == 1
    assert canary.read_weight(split_dir) == 0  # refused: nothing moved
    for expected in (5, 25, 50, 100):
        assert run(split_dir, stable, healthy, "promote") == 0
        assert canary.read_weight(split_dir) == expected
    assert "* fleet_canary;" in (split_dir / "canary-split.conf").read_text()
    assert run(split_dir, stable, healthy, "rollback") == 0
    assert canary.read_weight(split_dir) == 0
    # A reload nginx refuses leaves the previous weight in place.
    with pytest.raises(SystemExit, match="weight stays 0%"):
        run(split_dir, stable, healthy, "set-weight", "50", reload="false")
    assert canary.read_weight(split_dir) == 0
    assert run(split_dir, stable, "http://127.0.0.1:9/metrics", "status") == 3


def test_quantile_interpolates_like_histogram_quantile() -> None:
    sample = canary.Sample(buckets={0.1: 50.0, 0.2: 100.0, float("inf"): 100.0})
    assert sample.quantile(0.5) == pytest.approx(0.1)
    assert sample.quantile(0.75) == pytest.approx(0.15)


def _prepare(root: Path, https_port: int, device_port: int, ports: dict[str, int]) -> Path:
    (root / "fleet").mkdir(parents=True)
    (root / "www").mkdir()
    for name in ("proxy-headers.conf", "security-headers.conf"):
        shutil.copy(DEPLOY / "nginx" / name, root / "fleet" / name)
    upstream = (DEPLOY / "canary" / "upstream.conf").read_text()
    upstream = upstream.replace("127.0.0.1:8080", f"127.0.0.1:{ports['stable']}").replace(
        "127.0.0.1:8081", f"127.0.0.1:{ports['canary']}"
    )
    (root / "fleet" / "upstream.conf").write_text(localize(upstream, root, {}))
    for name in ("canary-split.conf", "canary-stream-split.conf"):
        shutil.copy(DEPLOY / "canary" / name, root / "fleet" / name)
    stream = (DEPLOY / "canary" / "stream.conf").read_text()
    stream = stream.replace("127.0.0.1:15221", f"127.0.0.1:{ports['dev_stable']}").replace(
        "127.0.0.1:25221", f"127.0.0.1:{ports['dev_canary']}"
    )
    (root / "fleet" / "stream.conf").write_text(
        localize(stream, root, {5221: device_port, 5027: free_port()})
    )
    self_signed(root / "certs")
    site = root / "site.conf"
    site.write_text(
        localize((DEPLOY / "nginx" / "fleet.conf").read_text(), root, {80: free_port(), 443: https_port})
    )
    return main_conf(root, http_include=str(site), stream_include=str(root / "fleet" / "stream.conf"))


async def settles(probe: Any, expected: object, within: float = 10.0) -> bool:
    """True once `probe()` answers `expected` (nginx's reload replaces workers asynchronously)."""
    for _ in range(int(within / 0.2)):
        if await probe() == expected:
            return True
        await asyncio.sleep(0.2)
    return False


async def _tcp_label_server(label: bytes, port: int) -> asyncio.Server:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1)
        writer.write(label)
        await writer.drain()
        writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", port)


@pytest.mark.skipif(
    not (nginx_available() and STREAM_MODULE.exists()), reason="nginx with the stream module is not installed"
)
async def test_nginx_moves_requests_and_trackers_when_the_weight_changes(tmp_path: Path) -> None:
    ports = {k: free_port() for k in ("stable", "canary", "dev_stable", "dev_canary")}
    https_port, device_port = free_port(), free_port()
    conf = _prepare(tmp_path, https_port, device_port, ports)
    checked = nginx_test(conf)
    assert checked.returncode == 0, checked.stderr
    reload = (
        f"{NGINX} -t -e stderr -p {tmp_path} -c {conf} && {NGINX} -s reload -e stderr -p {tmp_path} -c {conf}"
    )

    async def who_answers() -> set[str]:
        seen = set()
        async with httpx.AsyncClient(
            base_url=f"https://127.0.0.1:{https_port}", verify=False, timeout=5
        ) as client:
            for i in range(20):
                response = await client.get("/vehicles", headers={"User-Agent": f"client-{i}"})
                seen.add(response.json()["app"])
        return seen

    async def device_lands_on() -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", device_port)
        writer.write(b"x")
        label = await asyncio.wait_for(reader.read(10), 5)
        writer.close()
        return label

    servers = [
        await _tcp_label_server(b"stable", ports["dev_stable"]),
        await _tcp_label_server(b"canary", ports["dev_canary"]),
    ]
    try:
        async with (
            Backend(echo_app("stable"), ports["stable"]),
            Backend(echo_app("canary"), ports["canary"]),
            running_nginx(conf),
        ):
            assert await who_answers() == {"stable"}
            assert await device_lands_on() == b"stable"
            await asyncio.to_thread(canary.apply_weight, tmp_path / "fleet", 100, reload)
            assert await settles(who_answers, {"canary"})  # once the reloaded workers take over
            assert await settles(device_lands_on, b"canary")
            await asyncio.to_thread(canary.apply_weight, tmp_path / "fleet", 50, reload)
            # 20 distinct clients split between both
            assert await settles(who_answers, {"stable", "canary"})
    finally:
        for server in servers:
            server.close()
