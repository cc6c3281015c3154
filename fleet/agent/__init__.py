"""The reference vehicle agent: the Outbound API of docs/DATA_CONTRACT.md over a local SQLite ring buffer.

A vehicle computer feeds the buffer through ``POST /ingest`` (or :meth:`AgentStore.append_rows` in-process);
without one, the built-in simulator produces a coherent diesel truck. The server's sync service pulls
``/status``, ``/channels``, ``/data``, ``/data/latest`` and ``/alarms``. Tests start agents with
:mod:`fleet.agent.testing`.
"""

from fleet.agent.app import create_agent_app
from fleet.agent.config import CONTRACT_VERSION, AgentConfig, FaultEndpoint, FaultMode
from fleet.agent.faults import FaultInjector
from fleet.agent.store import AgentStore, Alarm, Sample

__all__ = [
    "CONTRACT_VERSION",
    "AgentConfig",
    "AgentStore",
    "Alarm",
    "FaultEndpoint",
    "FaultInjector",
    "FaultMode",
    "Sample",
    "create_agent_app",
]
