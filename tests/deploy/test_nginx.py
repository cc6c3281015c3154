"""The nginx site, checked with `nginx -t` and run for real in front of a stand-in app: HTTP→HTTPS, TLS,
forwarded headers, security headers, WebSocket upgrade, body and rate limits."""

from __future__ import annotations

import ssl
from pathlib import Path

import httpx
import pytest
import websockets

from tests.api.conftest import free_port

from .nginx_harness import (
    DEPLOY,
    Backend,
    echo_app,
    localize,
    main_conf,
    nginx_available,
    nginx_test,
    running_nginx,
    self_signed,
)

pytestmark = pytest.mark.skipif(not nginx_available(), reason="nginx is not installed (make system-deps)")


def prepare_site(
    root: Path, http_port: int, https_port: int, backend_port: int, grafana: str | None = None
) -> Path:
    ports = {80: http_port, 443: https_port}
    (root / "fleet").mkdir(parents=True)
    (root / "www").mkdir()
    for name in ("proxy-headers.conf", "security-headers.conf", "upstream.conf"):
        text = (DEPLOY / "nginx" / name).read_text()
        (root / "fleet" / name).write_text(text.replace("127.0.0.1:8080", f"127.0.0.1:{backend_port}"))
    if grafana is not None:
        (root / "fleet" / "grafana.conf").write_text(grafana)
    self_signed(root / "certs")
    site = root / "site.conf"
    site.write_text(localize((DEPLOY / "nginx" / "fleet.conf").read_text(), root, ports))
    return main_conf(root, http_include=str(site))


def test_site_config_passes_nginx_t_with_and_without_the_grafana_include(tmp_path: Path) -> None:
    conf = prepare_site(tmp_path / "a", free_port(), free_port(), free_port())
    result = nginx_test(conf)
    assert result.returncode == 0, result.stderr
    assert "syntax is ok" in result.stderr and "test is successful" in result.stderr
    # The observability include is a server-context file of location blocks.
    grafana = "location /grafana/ {\n  proxy_pass http://127.0.0.1:3000;\n}\n"
    conf = prepare_site(tmp_path / "b", free_port(), free_port(), free_port(), grafana=grafana)
    assert nginx_test(conf).returncode == 0


def test_a_broken_site_config_fails_nginx_t(tmp_path: Path) -> None:
    conf = prepare_site(tmp_path, free_port(), free_port(), free_port())
    site = tmp_path / "site.conf"
    site.write_text(site.read_text().replace("client_max_body_size 1m;", "client_max_body_size;"))
    result = nginx_test(conf)
    assert result.returncode != 0 and "client_max_body_size" in result.stderr


@pytest.mark.slow
async def test_nginx_in_front_of_the_app(tmp_path: Path) -> None:
    http_port, https_port, backend_port = free_port(), free_port(), free_port()
    conf = prepare_site(tmp_path, http_port, https_port, backend_port)
    assert nginx_test(conf).returncode == 0
    async with Backend(echo_app(), backend_port), running_nginx(conf):
        async with httpx.AsyncClient(timeout=10) as plain:
            redirect = await plain.get(
                f"http://127.0.0.1:{http_port}/vehicles?limit=5", headers={"Host": "fleet.example.com"}
            )
            assert redirect.status_code == 301
            assert redirect.headers["location"] == "https://fleet.example.com/vehicles?limit=5"
            (tmp_path / "www" / ".well-known" / "acme-challenge").mkdir(parents=True)
            (tmp_path / "www" / ".well-known" / "acme-challenge" / "token1").write_text("proof")
            acme = await plain.get(f"http://127.0.0.1:{http_port}/.well-known/acme-challenge/token1")
            assert acme.status_code == 200 and acme.text == "proof"

        base = f"https://127.0.0.1:{https_port}"
        headers = {"Host": "fleet.example.com", "X-Forwarded-For": "6.6.6.6", "X-Forwarded-Proto": "http"}
        async with httpx.AsyncClient(base_url=base, verify=False, timeout=10) as client:
            response = await client.get("/vehicles", headers=headers)
            assert response.status_code == 200
            seen = response.json()["headers"]
            assert seen["x-forwarded-for"] == "127.0.0.1"  # set by nginx, the client's value is dropped
            assert seen["x-real-ip"] == "127.0.0.1"
            assert seen["x-forwarded-proto"] == "https" and seen["host"] == "fleet.example.com"
            assert seen["x-forwarded-host"] == "fleet.example.com" and len(seen["x-request-id"]) == 32
            assert response.headers["strict-transport-security"].startswith("max-age=31536000")
            assert response.headers.get_list("x-content-type-options") == ["nosniff"]
            assert response.headers.get_list("x-frame-options") == [
                "SAMEORIGIN"
            ]  # one value, not the app's too
            assert response.headers.get_list("referrer-policy") == ["strict-origin-when-cross-origin"]
            assert "server" not in response.headers or "nginx/" not in response.headers["server"]

            assert (await client.get("/metrics", headers=headers)).status_code == 404
            too_big = await client.post("/auth/register", headers=headers, content=b"x" * (2 * 1024 * 1024))
            assert too_big.status_code == 413
            assert "strict-transport-security" in too_big.headers  # errors get the headers too

            codes = [
                (await client.post("/auth/login", headers=headers, json={})).status_code for _ in range(30)
            ]
            assert codes[:20] == [200] * 20 and 429 in codes  # burst 20, then the 30/minute rate

        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        async with websockets.connect(f"wss://127.0.0.1:{https_port}/ws/echo", ssl=ctx) as ws:
            await ws.send("ping")
            assert await ws.recv() == "app:ping"


def test_compose_default_server_config(tmp_path: Path) -> None:
    """docker-compose's catch-all server (no certificate: it refuses TLS handshakes for unknown names)."""
    http_port, https_port = free_port(), free_port()
    conf = prepare_site(tmp_path, http_port, https_port, free_port())
    default = localize(
        (DEPLOY / "nginx" / "compose" / "default.conf").read_text(),
        tmp_path,
        {80: http_port, 443: https_port},
    )
    (tmp_path / "default.conf").write_text(default)
    site = tmp_path / "site.conf"
    site.write_text(site.read_text() + f"\ninclude {tmp_path}/default.conf;\n")
    result = nginx_test(conf)
    assert result.returncode == 0, result.stderr
