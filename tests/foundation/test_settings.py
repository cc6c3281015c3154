"""Settings: YAML layout of seed 000, environment overrides, production secret checks."""

from __future__ import annotations

import json
import secrets
from pathlib import Path

import pytest

from fleet.config import Settings, finalize_secrets, flatten_yaml, load_settings
from fleet.errors import ConfigError

SEED_YAML = """
server:
  host: "0.0.0.0"
  port: 5221
database:
  host: "db.internal"
  port: 5433
  name: "navtelecom_server"
  user: "navtelecom"
  password: "password"
api:
  host: "127.0.0.1"
  port: 8081
  api_key: "your-secret-api-key"
sync:
  interval_sec: 15
"""

ENV_NAMES = (
    "ENV",
    "CONFIG_FILE",
    "DATABASE_URL",
    "DB_HOST",
    "DB_PORT",
    "DB_NAME",
    "DB_USER",
    "DB_PASSWORD",
    "API_PORT",
    "API_HOST",
    "API_KEY",
    "SECRET_KEY",
    "SERVER_PORT",
    "SYNC_INTERVAL_SEC",
    "DATA_DIR",
    "DB_APP_PASSWORD",
    "TRUSTED_PROXIES",
    "REDIS_URL",
    "NATS_URL",
    "DATABASE_READ_URL",
)


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    for name in ENV_NAMES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_yaml_layout_is_flattened() -> None:
    import yaml

    flat = flatten_yaml(yaml.safe_load(SEED_YAML))
    assert flat["server_port"] == 5221
    assert flat["db_host"] == "db.internal"
    assert flat["db_name"] == "navtelecom_server"
    assert flat["api_key"] == "your-secret-api-key"
    assert flat["api_port"] == 8081
    assert flat["sync_interval_sec"] == 15


def test_env_overrides_yaml(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (clean_env / "config.yaml").write_text(SEED_YAML)
    monkeypatch.setenv("API_PORT", "9090")
    monkeypatch.setenv("DB_NAME", "fleet_prod")
    settings = Settings()
    assert settings.api_port == 9090  # env wins
    assert settings.db_name == "fleet_prod"
    assert settings.db_host == "db.internal"  # from YAML
    assert settings.sync_interval_sec == 15
    assert settings.owner_dsn() == "postgresql://navtelecom:password@db.internal:5433/fleet_prod"
    assert not settings.uses_embedded_db


def test_config_file_variable_and_unknown_keys(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    other = clean_env / "other.yaml"
    other.write_text("api:\n  port: 7000\nserver:\n  colour: blue\n")
    monkeypatch.setenv("CONFIG_FILE", str(other))
    with pytest.raises(ConfigError, match="server_colour"):
        load_settings()
    monkeypatch.setenv("CONFIG_FILE", str(clean_env / "missing.yaml"))
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings()


def test_defaults_follow_design(clean_env: Path) -> None:
    settings = Settings()
    assert (settings.server_host, settings.server_port) == ("0.0.0.0", 5221)
    assert (settings.api_host, settings.api_port) == ("127.0.0.1", 8080)
    assert (settings.sync_interval_sec, settings.pull_timeout_sec, settings.pull_window_sec) == (30, 10, 60)
    assert settings.rate_limit_login_per_minute == 5
    assert settings.uses_embedded_db
    assert settings.audit_log_retention_days == 90 and settings.sync_journal_retention_days == 30


def test_production_refuses_placeholder_secrets(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENV", "production")
    with pytest.raises(ConfigError, match="SECRET_KEY"):
        load_settings()
    monkeypatch.setenv("SECRET_KEY", "change-me")
    monkeypatch.setenv("API_KEY", "your-secret-api-key")
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert "SECRET_KEY" in str(info.value) and "API_KEY" in str(info.value)
    assert "change-me" not in str(info.value)  # the message names the variable, never the value
    monkeypatch.setenv("SECRET_KEY", secrets.token_urlsafe(32))
    monkeypatch.setenv("API_KEY", secrets.token_urlsafe(32))
    settings = load_settings()
    assert settings.production
    assert not (clean_env / "var" / "secrets.json").exists()  # production never writes generated secrets


def test_production_with_external_db_needs_app_password(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ENV", "production")
    monkeypatch.setenv("SECRET_KEY", secrets.token_urlsafe(32))
    monkeypatch.setenv("API_KEY", secrets.token_urlsafe(32))
    monkeypatch.setenv("DATABASE_URL", "postgresql://owner:pw@db:5432/fleet")
    with pytest.raises(ConfigError, match="DB_APP_PASSWORD"):
        load_settings()
    monkeypatch.setenv("DB_APP_PASSWORD", "p" * 24)  # a repeated character is no password
    with pytest.raises(ConfigError, match="DB_APP_PASSWORD"):
        load_settings()
    monkeypatch.setenv("DB_APP_PASSWORD", secrets.token_urlsafe(18))
    assert load_settings().db_app_password is not None


def test_development_secrets_are_generated_once_and_kept(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATA_DIR", str(clean_env / "data"))
    first = load_settings()
    second = load_settings()
    assert first.secret_key is not None and second.secret_key is not None
    assert first.secret_key.get_secret_value() == second.secret_key.get_secret_value()
    stored = clean_env / "data" / "secrets.json"
    assert stored.stat().st_mode & 0o077 == 0
    assert set(json.loads(stored.read_text())) >= {"secret_key", "api_key"}
    # An explicit value wins over the stored one.
    monkeypatch.setenv("SECRET_KEY", "explicit-secret-value-123456")
    assert load_settings().secret_key.get_secret_value() == "explicit-secret-value-123456"  # type: ignore[union-attr]


def test_secrets_are_not_in_repr(clean_env: Path) -> None:
    settings = finalize_secrets(Settings(secret_key="super-secret-value-0001", data_dir=clean_env))
    assert "super-secret-value-0001" not in repr(settings)


def test_invalid_values_give_clear_errors(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SERVER_PORT", "70000")
    with pytest.raises(ConfigError, match="SERVER_PORT"):
        load_settings()


def test_trusted_proxies_from_env(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRUSTED_PROXIES", "10.0.0.1, 10.0.0.2")
    assert Settings().trusted_proxies == ["10.0.0.1", "10.0.0.2"]


def test_example_config_loads(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    example = Path(__file__).resolve().parents[2] / "config.example.yaml"
    monkeypatch.setenv("CONFIG_FILE", str(example))
    settings = load_settings(data_dir=clean_env / "var")
    assert settings.server_port == 5221 and settings.api_host == "127.0.0.1"
    assert settings.sync_concurrency == 50 and settings.raw_frame_retention_days == 30


@pytest.mark.parametrize(
    ("secret_key", "api_key", "named"),
    [
        ("same-" + "Zq8vR2mKx7LpW4tN9bYc", "same-" + "Zq8vR2mKx7LpW4tN9bYc", "API_KEY equals SECRET_KEY"),
        ("passwordpassword12", "Zq8vR2mKx7LpW4tN9bYcXj3", "SECRET_KEY"),  # long enough, guessable
        ("Zq8vR2mKx7LpW4tN9bYcXj3", "abcabcabcabcabcabcabc", "API_KEY"),  # a repeated pattern
        ("Zq8vR2mKx7LpW4tN9bYcXj3", "1234567890123456789", "API_KEY"),  # a sequence
    ],
)
def test_production_refuses_equal_or_low_entropy_secrets(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch, secret_key: str, api_key: str, named: str
) -> None:
    monkeypatch.setenv("ENV", "production")
    monkeypatch.setenv("SECRET_KEY", secret_key)
    monkeypatch.setenv("API_KEY", api_key)
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert named in str(info.value)
    assert secret_key not in str(info.value) and api_key not in str(info.value)
    assert "secrets.token_urlsafe" in str(info.value)  # says how to make a good one


def test_production_accepts_generated_secrets_of_every_usual_form(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ENV", "production")
    for make in (
        lambda: secrets.token_urlsafe(32),
        lambda: secrets.token_hex(16),
        lambda: secrets.token_hex(32),
    ):
        monkeypatch.setenv("SECRET_KEY", make())
        monkeypatch.setenv("API_KEY", make())
        assert load_settings().production


def test_api_hardening_defaults(clean_env: Path) -> None:
    settings = Settings()
    assert settings.trusted_proxies == []  # no X-Forwarded-* is honoured until an operator names the proxy
    assert settings.map_tile_url == "https://tile.openstreetmap.org/{z}/{x}/{y}.png"
    assert settings.grafana_url is None


def test_scale_out_settings(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """NATS_URL and DATABASE_READ_URL are off by default; config.yaml names the replica `database.read_url`."""
    import yaml

    from fleet.ops.bus import NatsBus, PostgresBus, RedisBus, create_bus

    settings = Settings()
    assert settings.nats_url is None and settings.database_read_url is None
    flat = flatten_yaml(yaml.safe_load("database:\n  read_url: postgresql://fleet_app@replica/fleet\n"))
    assert flat == {"database_read_url": "postgresql://fleet_app@replica/fleet"}
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:6379/0")
    assert isinstance(create_bus(Settings(), None), RedisBus)
    monkeypatch.setenv("NATS_URL", "nats://127.0.0.1:4222")
    assert isinstance(create_bus(Settings(), None), NatsBus)  # NATS wins: the bus a deployment chose
    assert isinstance(create_bus(Settings(nats_url=None, redis_url=None), object()), PostgresBus)  # type: ignore[arg-type]
