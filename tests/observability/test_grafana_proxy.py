"""The Grafana auth proxy end to end: Debian's nginx with deploy/nginx/grafana.conf, the real API behind
`auth_request`, and a stand-in for Grafana that echoes the headers it receives.

Everything talks over Unix sockets (no TCP port to collide with parallel runs).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from fleet.api.app import create_app
from fleet.config import Settings
from fleet.db import Database
from fleet.passwords import hash_password
from fleet.runtime import Runtime

from .conftest import REPO, SocketServer, create_user

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
pytestmark = pytest.mark.skipif(not os.path.exists(NGINX), reason="nginx is not installed (make system-deps)")

PASSWORD = "grafana proxy password 1"
TEST_SITE = """
worker_processes 1;
daemon off;
{user}
pid {dir}/nginx.pid;
error_log {dir}/error.log info;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    include {dir}/upstream.conf;
    server {{
        listen unix:{dir}/nginx.sock;
        server_name fleet.test;
        # What the site (deploy/nginx/fleet.conf) does for the API's auth endpoints.
        location /auth/ {{ proxy_pass http://$fleet_backend; proxy_set_header Host $host; }}
        include {dir}/grafana.conf;
    }}
}}
"""


class Nginx:
    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.socket = directory / "nginx.sock"
        self.conf = directory / "nginx.conf"
        # The shipped files with the two addresses pointed at the test's sockets, nothing else changed.
        nginx_dir = REPO / "deploy" / "nginx"
        upstream = (nginx_dir / "upstream.conf").read_text()
        (directory / "upstream.conf").write_text(
            upstream.replace("127.0.0.1:8080", f"unix:{directory}/api.sock").replace(
                "127.0.0.1:3000", f"unix:{directory}/grafana.sock"
            )
        )
        (directory / "grafana.conf").write_text((nginx_dir / "grafana.conf").read_text())
        self.conf.write_text(TEST_SITE.format(dir=directory, user="user root;" if os.geteuid() == 0 else ""))
        self.proc: subprocess.Popen[bytes] | None = None

    def check(self) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [NGINX, "-t", "-p", str(self.dir), "-c", str(self.conf), "-e", str(self.dir / "error.log")],
            capture_output=True,
            text=True,
            timeout=30,
        )

    def _spawn(self) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [NGINX, "-p", str(self.dir), "-c", str(self.conf), "-e", str(self.dir / "error.log")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    async def start(self) -> Nginx:
        checked = await asyncio.to_thread(self.check)
        assert checked.returncode == 0, checked.stderr
        self.proc = await asyncio.to_thread(self._spawn)
        for _ in range(200):
            if self.socket.exists():
                return self
            assert self.proc.poll() is None, (self.dir / "error.log").read_text()
            await asyncio.sleep(0.025)
        raise AssertionError("nginx did not open its socket")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            transport=httpx.AsyncHTTPTransport(uds=str(self.socket)), base_url="http://fleet.test", timeout=10
        )


@pytest.fixture
async def proxy(
    socket_dir: Path, echo_server: SocketServer, db: Database, test_settings: Settings
) -> AsyncIterator[Nginx]:
    settings = test_settings.model_copy(
        update={
            "rate_limit_login_per_minute": 1000,
            "rate_limit_refresh_per_minute": 1000,
            "rate_limit_key_prefix": f"grafana-test:{uuid.uuid4().hex[:8]}",
        }
    )
    runtime = Runtime(settings=settings, db=db, roles=["api"])
    api = await SocketServer(create_app(settings, runtime=runtime), socket_dir / "api.sock").start()
    nginx = await Nginx(socket_dir).start()
    try:
        yield nginx
    finally:
        nginx.stop()
        await api.stop()


@pytest.fixture
async def people(owner_conn: asyncpg.Connection) -> dict[str, dict[str, Any]]:
    hashed = await hash_password(PASSWORD)
    tag = uuid.uuid4().hex[:8]
    found = {}
    for key, status in (("owner", "active"), ("pending", "pending"), ("blocked", "active")):
        email = f"{key}-{tag}@proxy.test"
        found[key] = {"email": email, "id": await create_user(owner_conn, email, hashed, status=status)}
    return found


async def login(client: httpx.AsyncClient, email: str) -> str:
    response = await client.post("/auth/login", json={"email": email, "password": PASSWORD})
    assert response.status_code == 200, response.text
    assert client.cookies.get("fleet_refresh")
    token: str = response.json()["access_token"]
    return token


async def stored_login(owner_conn: asyncpg.Connection, user_id: int) -> str:
    value: str = await owner_conn.fetchval("SELECT login FROM grafana_logins WHERE user_id = $1", user_id)
    return value


HTML = {"Accept": "text/html,application/xhtml+xml"}
JSON = {"Accept": "application/json"}


async def test_browser_signs_in_through_the_refresh_cookie_and_keeps_the_dashboard_url(
    proxy: Nginx, people: dict[str, dict[str, Any]], owner_conn: asyncpg.Connection
) -> None:
    dashboard = "/grafana/d/fleet-vehicle/vehicle-telemetry?orgId=1&var-vehicle_id=7"
    async with proxy.client() as client:
        first = await client.get(dashboard, headers=HTML)
        assert first.status_code == 302
        assert first.headers["location"] == f"/auth/grafana/login?next={dashboard}"
        # Not signed in yet: the login endpoint sends the browser to the web UI's sign-in page.
        to_ui = await client.get(first.headers["location"])
        assert to_ui.status_code == 303 and to_ui.headers["location"].startswith("/ui/login?next=")

        await login(client, people["owner"]["email"])
        back = await client.get(first.headers["location"])
        assert back.status_code == 303, back.text
        assert back.headers["location"] == dashboard
        assert client.cookies.get("fleet_grafana")

        # A forged identity header from the client never reaches Grafana.
        seen = await client.get(
            dashboard, headers={**HTML, "X-WEBAUTH-USER": "u1-forged", "X-WEBAUTH-ROLE": "Admin"}
        )
        assert seen.status_code == 200, seen.text
        echoed = seen.json()
        assert echoed["path"] == "/grafana/d/fleet-vehicle/vehicle-telemetry"
        assert echoed["query"] == "orgId=1&var-vehicle_id=7"
        headers = echoed["headers"]
        assert headers["x-webauth-user"] == [await stored_login(owner_conn, people["owner"]["id"])]
        assert headers["x-webauth-email"] == [people["owner"]["email"]]
        assert headers["x-webauth-role"] == ["Viewer"]
        assert "authorization" not in headers

        # Logging out of Fleet ends Grafana access on the very next request.
        assert (await client.post("/auth/logout")).status_code == 204
        after = await client.get("/grafana/api/search", headers=JSON)
        assert after.status_code == 401


async def test_bearer_token_is_accepted_and_not_forwarded(
    proxy: Nginx, people: dict[str, dict[str, Any]], owner_conn: asyncpg.Connection
) -> None:
    async with proxy.client() as client:
        assert (await client.get("/grafana/api/search", headers=JSON)).status_code == 401
        token = await login(client, people["owner"]["email"])
    async with proxy.client() as bare:  # no cookies at all: only the bearer token
        seen = await bare.get("/grafana/api/search", headers={**JSON, "Authorization": f"Bearer {token}"})
        assert seen.status_code == 200, seen.text
        headers = seen.json()["headers"]
        assert headers["x-webauth-user"] == [await stored_login(owner_conn, people["owner"]["id"])]
        assert "authorization" not in headers
        bad = await bare.get("/grafana/api/search", headers={**JSON, "Authorization": "Bearer nonsense"})
        assert bad.status_code == 401


async def test_pending_and_blocked_accounts_get_403(
    proxy: Nginx, people: dict[str, dict[str, Any]], owner_conn: asyncpg.Connection
) -> None:
    async with proxy.client() as client:
        token = await login(client, people["pending"]["email"])
        pending = await client.get("/grafana/", headers={**JSON, "Authorization": f"Bearer {token}"})
        assert pending.status_code == 403
    async with proxy.client() as client:
        token = await login(client, people["blocked"]["email"])
        async with owner_conn.transaction():
            await owner_conn.execute("SELECT set_config('app.user_role', 'superuser', true)")
            await owner_conn.execute(
                "UPDATE users SET status = 'blocked' WHERE id = $1", people["blocked"]["id"]
            )
        blocked = await client.get("/grafana/", headers={**JSON, "Authorization": f"Bearer {token}"})
        assert blocked.status_code in (401, 403)
        refresh_only = await client.get("/auth/grafana")
        assert refresh_only.status_code == 403


@pytest.mark.parametrize(
    "target", ["https://evil.example/", "//evil.example/x", "/ui/admin", "/grafana/\r\nSet-Cookie:x=1"]
)
async def test_login_redirect_stays_on_grafana(
    proxy: Nginx, people: dict[str, dict[str, Any]], target: str
) -> None:
    async with proxy.client() as client:
        await login(client, people["owner"]["email"])
        response = await client.get("/auth/grafana/login", params={"next": target})
        assert response.status_code == 303
        assert response.headers["location"] == "/grafana/"


def test_the_include_passes_nginx_t_inside_the_shipped_site(tmp_path: Path) -> None:
    """deploy/nginx/fleet.conf (TLS site, rate limits, canary-ready upstream) with this include, as installed."""
    from tests.deploy.nginx_harness import nginx_test
    from tests.deploy.test_nginx import prepare_site

    grafana = (REPO / "deploy" / "nginx" / "grafana.conf").read_text()
    conf = prepare_site(tmp_path, 8443, 8444, 8445, grafana=grafana)  # nginx -t binds nothing
    result = nginx_test(conf)
    assert result.returncode == 0, result.stderr
