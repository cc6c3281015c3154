"""Run the agent as a process: uvicorn in the foreground, stopped by SIGINT or SIGTERM."""

from __future__ import annotations

import uvicorn

from fleet.agent.app import create_agent_app
from fleet.agent.config import AgentConfig


def serve_agent(config: AgentConfig) -> None:
    """Serve the Outbound API on ``config.host:config.port`` until the process is told to stop."""
    app = create_agent_app(config)
    uvicorn.run(
        app,
        host=config.host,
        port=config.port,
        lifespan="on",
        ws="none",
        # The server polls every vehicle every 30 s; an access line per poll is noise on a router's flash.
        access_log=False,
        server_header=False,
        proxy_headers=False,
        log_level="info",
    )
