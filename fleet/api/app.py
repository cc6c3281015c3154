"""The FastAPI app factory and its lifespan.

`create_app()` with no runtime builds a self-contained app whose lifespan starts the database (used by
tests and `uvicorn --factory`); `fleet serve` passes its own Runtime, which already owns the pool and the
other roles, so the lifespan only attaches to it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

import fleet
from fleet.api.errors import install_error_handlers
from fleet.api.routes import health
from fleet.config import Settings, load_settings
from fleet.db import Database
from fleet.runtime import Runtime


def create_app(settings: Settings | None = None, runtime: Runtime | None = None) -> FastAPI:
    """Build the API application."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if runtime is not None:
            app.state.runtime = runtime
            yield
            return
        own_settings = settings or load_settings()
        db = Database(own_settings)
        await db.start()
        app.state.runtime = Runtime(settings=own_settings, db=db, roles=["api"])
        try:
            yield
        finally:
            await app.state.runtime.cancel_tasks()
            await db.close()

    app = FastAPI(
        title="Fleet Server API",
        version=fleet.__version__,
        description="Telematics server: devices, vehicles, positions, measurements, alarms.",
        lifespan=lifespan,
    )
    install_error_handlers(app)
    app.include_router(health.router)
    return app
