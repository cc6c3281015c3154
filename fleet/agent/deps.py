"""Request dependencies of the Outbound API: the runtime, API-key auth and fault injection."""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Request

from fleet.agent.config import FaultEndpoint, FaultMode
from fleet.agent.errors import ApiError
from fleet.agent.faults import FaultSettings
from fleet.agent.runtime import AgentRuntime

API_KEY_HEADER = "X-API-Key"


def get_runtime(request: Request) -> AgentRuntime:
    """Return the runtime the app's lifespan started."""
    runtime: AgentRuntime = request.app.state.runtime
    return runtime


Runtime = Annotated[AgentRuntime, Depends(get_runtime)]


def require_api_key(request: Request, runtime: Runtime) -> None:
    """Refuse a request whose ``X-API-Key`` header is missing or wrong (HTTP 401)."""
    provided = request.headers.get(API_KEY_HEADER)
    expected = runtime.config.api_key
    if provided is None or expected is None:
        raise ApiError(401, "unauthorized", f"missing {API_KEY_HEADER} header")
    # Bytes, because compare_digest only takes ASCII str; constant time either way.
    if not hmac.compare_digest(provided.encode(), expected.get_secret_value().encode()):
        raise ApiError(401, "unauthorized", f"wrong {API_KEY_HEADER}")


def fault_gate(endpoint: FaultEndpoint) -> Callable[[AgentRuntime], Awaitable[FaultSettings | None]]:
    """Build a dependency that applies the injected fault to ``endpoint`` and returns it (None: no fault).

    SLOW and ERROR happen here; TRUNCATE is left to the handler, which alone knows its page size.
    """

    async def gate(runtime: Runtime) -> FaultSettings | None:
        fault = runtime.faults.take(endpoint)
        if fault is None:
            return None
        if fault.mode is FaultMode.SLOW:
            await asyncio.sleep(fault.delay_seconds)
        elif fault.mode is FaultMode.ERROR:
            raise ApiError(fault.status, "fault_injected", f"fault injected on {endpoint.value}")
        return fault

    return gate
