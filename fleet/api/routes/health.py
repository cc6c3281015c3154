"""Liveness and readiness: `/health` answers from the database, `/ready` is 503 while a dependency is down.

`/ready` also reports the background jobs of this process and the last successful backup. A job failing for
longer than its tolerance is named in `failing_jobs` and turns `status` into `degraded`, but keeps the answer
200: the API can still serve, and taking it out of a load balancer because, say, an off-site upload fails
would turn a backup problem into an outage. Alert on `failing_jobs` / `fleet_job_failing` instead.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

import fleet

router = APIRouter(tags=["health"])


async def _health(request: Request) -> JSONResponse:
    runtime = request.app.state.runtime
    db_ok = await runtime.db.ping()
    body: dict[str, Any] = {
        "status": "ok" if db_ok else "degraded",
        "database": "ok" if db_ok else "unavailable",
        "version": fleet.__version__,
        "time": datetime.now(UTC).isoformat(),
        "roles": runtime.roles,
    }
    return JSONResponse(body, status_code=200 if db_ok else 503)


@router.get("/health", summary="Server health, answered from the database")
async def health(request: Request) -> JSONResponse:
    return await _health(request)


@router.get("/ready", summary="Readiness: 503 while the database (or Redis, when configured) is down")
async def ready(request: Request) -> JSONResponse:
    runtime = request.app.state.runtime
    checks = {"database": await runtime.db.ping()}
    redis_check = runtime.extras.get("redis_ping")
    if redis_check is not None:
        checks["redis"] = await redis_check()
    ok = all(checks.values())
    now = time.time()
    failing = [job.name for job in runtime.jobs.overdue(now)]
    body: dict[str, Any] = {
        "status": "not_ready" if not ok else "degraded" if failing else "ready",
        "checks": {k: "ok" if v else "down" for k, v in checks.items()},
        "failing_jobs": failing,
        "jobs": {job.name: job.status.as_dict(now) for job in runtime.jobs},
    }
    if runtime.backup_monitor is not None:
        body["backup"] = runtime.backup_monitor.snapshot(runtime.settings, now)
    return JSONResponse(body, status_code=200 if ok else 503)
