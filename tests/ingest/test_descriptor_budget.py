"""The descriptor budget (issue 15): a flood of the device port must not take the API's descriptors.

The finding: with RLIMIT_NOFILE at 300, 400 bare TCP connections to the device port made `/health` fail
until they closed, and nothing was logged. Here `fleet serve --role ingest --role api` runs with the limit
lowered to 300 (soft and hard) while 400 connections are held open.
"""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Callable

import httpx
import pytest

from .conftest import DRIVERS, ServerProcess, free_port, unique_imei

pytestmark = pytest.mark.slow

LIMIT = 300
FLOOD = 400


def test_device_port_flood_leaves_the_api_answering(server_process: Callable[..., ServerProcess]) -> None:
    api_port = free_port()
    server = server_process(
        roles=("ingest", "api"),
        nofile=LIMIT,
        API_HOST="127.0.0.1",
        API_PORT=str(api_port),
        INGEST_FD_RESERVE="120",
        # This test is about the descriptor budget, not the per-address caps (the flood has one address).
        INGEST_MAX_CONNECTIONS_PER_ADDRESS="100000",
        INGEST_MAX_UNIDENTIFIED_PER_ADDRESS="100000",
        INGEST_HANDSHAKE_TIMEOUT_SEC="120",
    )
    server.start()
    flood: list[socket.socket] = []
    try:
        # No keep-alive: every probe is a new connection the API must accept (a descriptor).
        no_reuse = httpx.Limits(max_keepalive_connections=0)
        with httpx.Client(base_url=f"http://127.0.0.1:{api_port}", timeout=10, limits=no_reuse) as http:
            assert _first_answer(http, "/health").status_code == 200
            time.sleep(1.0)  # the start-up work after the API listens (banner, files) is done
            for _ in range(FLOOD):
                sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
                flood.append(sock)
            time.sleep(1.0)  # the server accepts what the kernel queued (and closes those over the cap)
            # While the flood holds its sockets:
            for path in ("/health", "/ready", "/health"):
                answer = http.get(path)
                assert answer.status_code == 200, (path, answer.text)
        # A tracker cannot get in while the cap is taken, but the server said so in its log.
        events = server.log_events()
        (budget,) = [e for e in events if e["event"] == "ingest_descriptor_budget"]
        assert budget["nofile_limit"] == LIMIT and budget["reserved"] == 120
        cap = budget["max_device_connections"]
        assert 0 < cap <= LIMIT - 120 and budget["limited_by"] == "descriptors"
        refusals = [e for e in events if e["event"] == "ingest_connection_refused"]
        assert refusals and refusals[0]["counts"] == {"limit": 1}
        assert len(refusals) <= 2  # once per interval, not once per connection
    finally:
        for sock in flood:
            with contextlib.suppress(OSError):
                sock.close()
    # Once the flood is gone a tracker gets in again.
    driver = DRIVERS["navtelecom"]
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(driver.login_bytes(unique_imei()))
        sock.settimeout(10)
        assert sock.recv(64).endswith(b"*<S")


def _first_answer(http: httpx.Client, path: str, within: float = 30.0) -> httpx.Response:
    """The first answer of the API once it listens (it starts after the device port)."""
    deadline = time.monotonic() + within
    while True:
        try:
            return http.get(path)
        except httpx.ConnectError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def test_budget_arithmetic() -> None:
    from fleet.ingest.descriptors import compute_budget, default_reserve

    assert default_reserve(300) == 256 and default_reserve(1_048_576) == 262_144
    budget = compute_budget(
        20_000, None, limit=1_048_576, hard_limit=1_048_576, raised_from=1024, open_now=40
    )
    assert budget.cap == 20_000 and not budget.lowered
    budget = compute_budget(20_000, None, limit=20_000, hard_limit=20_000, raised_from=1024, open_now=40)
    assert budget.cap == 20_000 - 40 - 5_000 and budget.lowered
    assert compute_budget(100, 500, limit=300, hard_limit=300, raised_from=300, open_now=30).cap == 0
