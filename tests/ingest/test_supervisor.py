"""`fleet serve --workers N` refuses what it cannot run (the processes themselves: test_shared_port.py)."""

from __future__ import annotations

import pytest

from fleet.config import Settings
from fleet.errors import ConfigError
from fleet.supervisor import Supervisor


async def test_workers_need_the_ingest_role(test_settings: Settings) -> None:
    with pytest.raises(ConfigError, match="must include ingest"):
        Supervisor(test_settings, ["api"], 2)
    with pytest.raises(ConfigError, match="at least 1"):
        Supervisor(test_settings, ["ingest"], 0)


async def test_other_roles_run_in_one_child(test_settings: Settings) -> None:
    supervisor = Supervisor(test_settings, ["maintenance", "ingest", "sync", "api"], 3)
    assert [(c.name, c.roles) for c in supervisor.children] == [
        ("ingest-1", ["ingest"]),
        ("ingest-2", ["ingest"]),
        ("ingest-3", ["ingest"]),
        ("roles", ["maintenance", "sync", "api"]),
    ]
