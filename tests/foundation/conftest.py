"""Fixtures of the foundation tests: the `fleet` command line run as a real process."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from fleet.config import Settings


@pytest.fixture
def cli_env(test_settings: Settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DB_", "API_", "SERVER_"))}
    assert test_settings.database_url is not None and test_settings.db_app_password is not None
    env.update(
        DATABASE_URL=test_settings.database_url,
        DB_APP_PASSWORD=test_settings.db_app_password.get_secret_value(),
        DATA_DIR=str(test_settings.data_dir),
        ENV="development",
        LOG_LEVEL="WARNING",
    )
    env.pop("CONFIG_FILE", None)
    return env


def fleet(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fleet", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
