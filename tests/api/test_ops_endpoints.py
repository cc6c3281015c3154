"""`/ready` names failing background jobs and shows the last backup; `GET /admin/settings`; live flags."""

from __future__ import annotations

import asyncio

import httpx

from fleet.api.app import create_app
from fleet.config import Settings
from fleet.db import Database
from fleet.ops.jobs import PeriodicJob
from fleet.runtime import Runtime

from .conftest import PASSWORD, LiveServer, make_account, unique_email


async def _broken() -> None:
    raise RuntimeError("disk on fire")


async def test_ready_names_a_job_failing_longer_than_its_tolerance_and_flags_apply_live(
    db: Database, api_settings: Settings
) -> None:
    runtime = Runtime(settings=api_settings, db=db, roles=["api"])
    server = await LiveServer(create_app(api_settings, runtime=runtime)).start()
    admin = await make_account(db, api_settings, role="superuser")
    owner = await make_account(db, api_settings)
    broken = PeriodicJob("t-broken", _broken, interval=0.05, tolerance=1.0)
    task = runtime.run_job(broken)
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
            first = (await client.get("/ready")).json()
            assert first["status"] == "ready" and first["failing_jobs"] == []
            assert first["jobs"]["t-broken"]["state"] == "failing"
            await asyncio.sleep(1.2)
            ready = await client.get("/ready")
            body = ready.json()
            assert ready.status_code == 200 and body["status"] == "degraded"
            assert body["failing_jobs"] == ["t-broken"]
            assert "disk on fire" in body["jobs"]["t-broken"]["error"]
            assert body["jobs"]["backup-status"]["state"] == "ok"
            assert body["backup"]["state"] in ("ok", "stale", "never")
            assert broken.status.runs_failed >= 3  # it kept running

            assert (await client.get("/admin/settings", headers=owner.headers)).status_code == 403
            settings = (await client.get("/admin/settings", headers=admin.headers)).json()
            assert settings["flags"]["registration_open"] is True
            assert settings["settings"]["SECRET_KEY"] == "***" and "LOG_LEVEL" in settings["hot_reloadable"]
            assert settings["reload"] == {"enabled": False}  # no reloader outside `fleet serve`

            # Flags read the settings in effect at each request.
            runtime.apply_settings(
                api_settings.model_copy(update={"registration_open": False, "google_sign_in": False})
            )
            closed = await client.post("/auth/register", json={"email": unique_email(), "password": PASSWORD})
            assert closed.status_code == 403 and closed.json()["error"]["code"] == "registration_closed"
            assert (await client.get("/auth/google", follow_redirects=False)).status_code == 404
            flags = (await client.get("/admin/settings", headers=admin.headers)).json()["flags"]
            assert flags["registration_open"] is False and flags["google_sign_in"] is False
            runtime.apply_settings(api_settings)
            opened = await client.post("/auth/register", json={"email": unique_email(), "password": PASSWORD})
            assert opened.status_code == 202  # the same answer for new and taken addresses
    finally:
        task.cancel()
        await server.stop()
        await runtime.cancel_tasks()
