"""Run the shipped nginx configs with Debian's nginx on loopback ports (paths and ports rewritten only)."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import re
import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import uvicorn
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
STREAM_MODULE = Path("/usr/lib/nginx/modules/ngx_stream_module.so")


def nginx_available() -> bool:
    return Path(NGINX).exists()


def self_signed(directory: Path, host: str = "fleet.example.com") -> None:
    """fullchain.pem + privkey.pem where Let's Encrypt would put them."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(host)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "fullchain.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (directory / "privkey.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )


def localize(text: str, root: Path, ports: dict[int, int]) -> str:
    """Point absolute install paths into `root` and public listen ports at loopback test ports."""
    text = text.replace("/etc/nginx/fleet/", f"{root}/fleet/")
    text = text.replace("/etc/letsencrypt/live/fleet.example.com/", f"{root}/certs/")
    text = text.replace("/var/www/letsencrypt", f"{root}/www")
    text = re.sub(r"^\s*listen \[::\]:\d+[^;]*;\n", "", text, flags=re.M)
    for public, local in ports.items():
        text = re.sub(rf"listen {public}\b", f"listen 127.0.0.1:{local}", text)
    return text


def main_conf(root: Path, http_include: str | None = None, stream_include: str | None = None) -> Path:
    """A minimal nginx.conf around the site (what Debian's /etc/nginx/nginx.conf provides)."""
    temp = root / "tmp"
    temp.mkdir(parents=True, exist_ok=True)
    lines = []
    if stream_include:
        lines.append(f"load_module {STREAM_MODULE};")
    if os.geteuid() == 0:
        lines.append("user root;")
    lines += [
        "daemon off;",
        "worker_processes 1;",
        f"pid {root}/nginx.pid;",
        f"error_log {root}/error.log warn;",
        "events { worker_connections 256; }",
    ]
    if http_include:
        lines += [
            "http {",
            "  access_log off;",
            *(
                f"  {kind}_temp_path {temp}/{kind};"
                for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
            ),
            f"  include {http_include};",
            "}",
        ]
    if stream_include:
        lines.append(f"include {stream_include};")
    path = root / "nginx.conf"
    path.write_text("\n".join(lines) + "\n")
    return path


def nginx_test(conf: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [NGINX, "-t", "-e", "stderr", "-p", str(conf.parent), "-c", str(conf)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


@contextlib.asynccontextmanager
async def running_nginx(conf: Path) -> AsyncIterator[None]:
    proc = await asyncio.create_subprocess_exec(
        NGINX, "-e", "stderr", "-p", str(conf.parent), "-c", str(conf), stderr=asyncio.subprocess.PIPE
    )
    try:
        for _ in range(100):
            if (conf.parent / "nginx.pid").exists():
                break
            if proc.returncode is not None:
                raise AssertionError((await proc.stderr.read()).decode() if proc.stderr else "nginx exited")
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.1)
        yield
    finally:
        proc.terminate()
        await asyncio.wait_for(proc.wait(), 10)


def echo_app(label: str = "app") -> Starlette:
    """A stand-in for the Fleet API: answers with what it received (and which instance it is)."""

    async def echo(request: Request) -> JSONResponse:
        body = await request.body()
        return JSONResponse(
            {"app": label, "path": request.url.path, "headers": dict(request.headers), "body_len": len(body)},
            # The real app sends these on every answer (fleet/api/security_headers.py); nginx must not
            # answer with two values of each.
            headers={
                "X-Frame-Options": "DENY",
                "X-Content-Type-Options": "nosniff",
                "Referrer-Policy": "no-referrer",
            },
        )

    async def ws_echo(ws: WebSocket) -> None:
        await ws.accept()
        async for message in ws.iter_text():
            await ws.send_text(f"{label}:{message}")

    return Starlette(
        routes=[
            WebSocketRoute("/ws/echo", ws_echo),
            Route("/{path:path}", echo, methods=["GET", "POST"]),
        ]
    )


class Backend:
    def __init__(self, app: Any, port: int) -> None:
        config = uvicorn.Config(
            app, host="127.0.0.1", port=port, log_config=None, access_log=False, lifespan="off"
        )
        self.server = uvicorn.Server(config)
        self.task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Backend:
        self.task = asyncio.create_task(self.server.serve())
        for _ in range(200):
            if self.server.started:
                return self
            await asyncio.sleep(0.02)
        raise AssertionError("backend did not start")

    async def __aexit__(self, *exc: object) -> None:
        self.server.should_exit = True
        if self.task is not None:
            await self.task
