"""Validated settings: `config.yaml` (seed-000 layout) overridden by environment variables.

Every key is documented once, here. The YAML file is nested by section (`server`, `database`, `api`, ...);
the environment uses the flat names listed in the README (`SERVER_PORT`, `DB_HOST`, `API_KEY`, ...), and the
environment always wins. `load_settings()` is the single entry point; tests build `Settings(...)` directly.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import quote, urlsplit, urlunsplit

import yaml
from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, PydanticBaseSettingsSource, SettingsConfigDict

from fleet.errors import ConfigError

# Values that ship in examples and seeds; a production server must never run with them.
PLACEHOLDER_SECRETS = frozenset(
    {
        "",
        "change-me",
        "changeme",
        "secret",
        "password",
        "your-secret-api-key",
        "your-secret-key",
        "dev",
        "development",
        "test",
    }
)
MIN_SECRET_LENGTH = 16

# YAML section → prefix of the flat field names. Keys not listed use "<section>_<key>".
_SECTION_ALIASES: dict[str, dict[str, str]] = {
    "server": {"host": "server_host", "port": "server_port"},
    "database": {"url": "database_url", "app_url": "database_app_url", "read_url": "database_read_url"},
    "api": {"host": "api_host", "port": "api_port", "api_key": "api_key", "secret_key": "secret_key"},
}
_SECTION_PREFIX = {"database": "db"}
_KNOWN_SECTIONS = {
    "server",
    "database",
    "api",
    "sync",
    "ingest",
    "retention",
    "secrets",
    "rate_limit",
    "flags",
    "backup",
    "wireguard",
    "live",
}
# `flags:` names the switches as an operator thinks of them; each is an ordinary setting underneath.
_FLAG_ALIASES = {
    "text_dialect": "text_dialect_enabled",
    "raw_frame_storage": "ingest_store_raw_frames",
    "registration_open": "registration_open",
    "google_sign_in": "google_sign_in",
    "auto_register_devices": "unknown_device_policy",  # true → register, false → reject
}
_SECTION_ALIASES["flags"] = _FLAG_ALIASES


def flatten_yaml(data: dict[str, Any]) -> dict[str, Any]:
    """Map the nested seed-000 layout onto flat field names (`database.host` → `db_host`)."""
    flat: dict[str, Any] = {}
    for section, value in data.items():
        if value is None and section in _KNOWN_SECTIONS:
            continue  # a section whose keys are all commented out
        if not isinstance(value, dict):
            flat[section.lower()] = value
            continue
        aliases = _SECTION_ALIASES.get(section, {})
        prefix = _SECTION_PREFIX.get(section, section)
        for key, item in value.items():
            key = str(key).lower()
            if key in aliases:
                if key == "auto_register_devices" and isinstance(item, bool):
                    item = "register" if item else "reject"
                flat[aliases[key]] = item
            elif key.startswith(f"{prefix}_") or section in ("retention", "secrets"):
                flat[key] = item
            else:
                flat[f"{prefix}_{key}"] = item
    return flat


class YamlSource(PydanticBaseSettingsSource):
    """Settings source reading `CONFIG_FILE` (default `./config.yaml` when present)."""

    def __init__(self, settings_cls: type[BaseSettings], path: Path | None) -> None:
        super().__init__(settings_cls)
        self.path = path

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        if self.path is None or not self.path.exists():
            return {}
        try:
            data = yaml.safe_load(self.path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as err:
            raise ConfigError(f"{self.path}: invalid YAML: {err}") from err
        if not isinstance(data, dict):
            raise ConfigError(f"{self.path}: expected a mapping at the top level")
        known = set(self.settings_cls.model_fields)
        flat = flatten_yaml(data)
        unknown = sorted(set(flat) - known)
        if unknown:
            raise ConfigError(f"{self.path}: unknown settings {', '.join(unknown)}")
        return flat


def _config_path() -> Path | None:
    explicit = os.environ.get("CONFIG_FILE")
    if explicit:
        path = Path(explicit)
        if not path.exists():
            raise ConfigError(f"CONFIG_FILE={explicit} does not exist")
        return path
    default = Path("config.yaml")
    return default if default.exists() else None


def config_file_path() -> Path | None:
    """The config file in use: CONFIG_FILE, else ./config.yaml when present (None: environment only)."""
    return _config_path()


def read_config_file(path: Path) -> dict[str, Any]:
    """The file's settings as flat field names (raises ConfigError for invalid YAML or unknown keys)."""
    return YamlSource(Settings, path)()


class Settings(BaseSettings):
    """Every setting of the server; env names are the upper-case field names."""

    model_config = SettingsConfigDict(extra="ignore", case_sensitive=False, validate_default=True)

    # --- general -------------------------------------------------------------------------------
    env: Literal["development", "production", "test"] = Field("development", description="ENV")
    data_dir: Path = Field(Path("var"), description="Embedded database, logs, generated secrets, backups")
    log_level: str = "INFO"
    log_format: Literal["auto", "json", "console"] = "auto"

    # --- device TCP port (seed 000 `server:`) ---------------------------------------------------
    server_host: str = "0.0.0.0"  # the one service that faces devices on the network
    server_port: int = Field(5221, ge=0, le=65535)  # Navtelecom NTCB/FLEX; 0 disables its listener

    # --- device protocols and commands (fleet/protocol registry, docs/PROTOCOLS.md) -------------------
    teltonika_port: int = Field(5027, ge=0, le=65535)  # Teltonika Codec 8/8E/16; 0 disables its listener
    ingest_ports: dict[str, Annotated[int, Field(ge=0, le=65535)]] = Field(
        default_factory=dict
    )  # ports of protocol packages without a setting of their own, by name (JSON); 0 disables
    ingest_bind_ephemeral: bool = False  # tests and tools: every enabled listener binds a free port
    device_commands_owners_allowed: bool = False  # owners may command their own vehicles' trackers
    device_command_ttl_sec: float = Field(86400, gt=0)  # a command not delivered by then expires
    device_command_answer_timeout_sec: float | None = Field(None, gt=0)  # None: the protocol's (60 s)

    # --- ingestion (the `ingest` role) ----------------------------------------------------------------
    # IMEIs not in `devices`; default `register`, but `reject` under ENV=production unless set explicitly.
    unknown_device_policy: Literal["register", "reject"] = "register"
    text_dialect_enabled: bool = True  # seed-000 ASCII frames, recognised only when NTCB cannot start
    flex_field100_size: Literal[1, 2] = 2  # 2 bytes per protocol doc v6.x; 1 for pre-6.0 firmware
    ingest_max_connections: int = Field(20000, ge=1)
    ingest_idle_timeout_sec: float = Field(600, gt=0)  # trackers ping (0x7F) well within this
    ingest_handshake_timeout_sec: float = Field(30, gt=0)  # unauthenticated time allowed before *>S
    ingest_batch_window_ms: float = Field(20, gt=0)  # group-commit window
    ingest_batch_max_records: int = Field(5000, ge=1)
    ingest_queue_high_water: int = Field(50000, ge=1)  # records queued → pause reading sockets
    ingest_queue_low_water: int = Field(10000, ge=0)  # resume below this
    ingest_store_raw_frames: bool = True
    # Batches COPYed straight into the month's partitions (docs/INGEST.md); false: always the staging path.
    ingest_direct_copy: bool = True

    # --- database (seed 000 `database:`) ---------------------------------------------------------
    database_url: str | None = None  # migrations/owner connection; unset with no DB_* → embedded
    database_app_url: str | None = None  # runtime pool; default: database_url with user fleet_app
    # A streaming replica for history reads (docs/SCALING.md); must connect as fleet_app (RLS applies).
    database_read_url: str | None = None
    db_host: str | None = None
    db_port: int = 5432
    db_name: str = "fleet"
    db_user: str | None = None
    db_password: SecretStr | None = None
    db_app_password: SecretStr | None = None  # password given to the fleet_app role
    db_grafana_password: SecretStr | None = None  # password given to the fleet_grafana role
    db_pool_min: int = Field(2, ge=1)
    db_pool_max: int = Field(10, ge=1)
    db_migrate_on_start: bool = True

    # --- HTTP API (seed 000 `api:`) --------------------------------------------------------------
    api_host: str = "127.0.0.1"
    api_port: int = Field(8080, ge=0, le=65535)
    api_key: SecretStr | None = None  # static superuser-level key for seed integrations
    secret_key: SecretStr | None = None  # signs JWTs
    public_url: str | None = None
    # Empty: X-Forwarded-For/-Proto are never honoured. Behind nginx on the same host: 127.0.0.1,::1.
    trusted_proxies: Annotated[list[str], NoDecode] = Field(default_factory=list)

    # --- optional services -------------------------------------------------------------------------
    redis_url: str | None = None
    # The live bus over core NATS pub/sub instead of Redis/PostgreSQL (docs/SCALING.md); wins over REDIS_URL.
    nats_url: str | None = None

    # --- sync service (seed 003) ---------------------------------------------------------------------
    sync_interval_sec: float = Field(30, gt=0)
    pull_timeout_sec: float = Field(10, gt=0)
    pull_window_sec: int = Field(60, gt=0)
    vehicle_default_api_key: SecretStr | None = None
    sync_concurrency: int = Field(50, ge=1)  # vehicles pulled at once by one worker
    sync_max_rows_per_request: int = Field(50000, ge=1)
    sync_lease_sec: float = Field(120, gt=0)  # a worker's claim on a vehicle for one cycle
    sync_backoff_max_sec: float = Field(600, gt=0)  # ceiling of the per-vehicle backoff

    # --- live view: WebSocket streams, the fleet map, tracker alarms (docs/LIVE.md) ----------------------------
    live_poll_interval_sec: float = Field(2.0, gt=0)  # GET /data/latest of a watched pull vehicle (seed 001)
    live_heartbeat_sec: float = Field(25.0, gt=0)  # a heartbeat after this much silence on a stream
    live_auth_timeout_sec: float = Field(5.0, gt=0)  # a token in the first message must arrive within this
    live_queue_max: int = Field(1000, ge=10)  # messages waiting per viewer; beyond, the oldest are dropped
    live_fleet_interval_sec: float = Field(1.0, ge=0)  # /ws/fleet: one position per vehicle per interval
    live_fleet_batch_sec: float = Field(0.25, gt=0)  # /ws/fleet?batch=1: positions sent together this often
    live_access_refresh_sec: float = Field(30.0, gt=0)  # re-check each viewer's account and vehicles
    live_status_sweep_sec: float = Field(5.0, gt=0)  # re-derive vehicle statuses (window expiry) for viewers
    live_max_viewers: int = Field(10_000, ge=1)  # WebSocket viewers per API process
    live_max_viewers_per_user: int = Field(100, ge=1)  # per account (or API key) per API process
    tracker_alarm_active_sec: float = Field(3600, gt=0)  # a tracker alarm counts as active this long

    # --- metrics / security ----------------------------------------------------------------------------
    metrics_allow_public: bool = False
    metrics_api_key: SecretStr | None = None
    rate_limit_login_per_minute: int = Field(5, ge=1)
    rate_limit_register_per_hour: int = Field(10, ge=1)
    rate_limit_refresh_per_minute: int = Field(30, ge=1)
    rate_limit_api_per_minute: int = Field(600, ge=1)  # per token / API key
    rate_limit_key_prefix: str = "fleet:rl"  # Redis key prefix of rate-limit counters (tests use one per run)
    access_token_ttl_sec: int = Field(900, ge=30)  # 15 minutes
    refresh_token_ttl_days: int = Field(30, ge=1)

    # --- retention (days) ---------------------------------------------------------------------------------
    position_retention_days: int = Field(365, ge=1)
    measurement_retention_days: int = Field(365, ge=1)
    raw_frame_retention_days: int = Field(30, ge=1)
    audit_log_retention_days: int = Field(90, ge=1)
    sync_journal_retention_days: int = Field(30, ge=1)

    # --- operations: backups, retention batches, flags, hot reload, WireGuard (issue 11) -------------------------
    # Backups (`fleet backup`, and the maintenance role when BACKUP_INTERVAL_HOURS > 0).
    backup_dir: Path | None = None  # default DATA_DIR/backups
    backup_keep: int = Field(7, ge=1)  # newest local backups kept; older ones are deleted after a success
    backup_interval_hours: float = Field(
        0, ge=0
    )  # >0: the maintenance role backs up when the newest is older
    backup_max_age_hours: float = Field(26, gt=0)  # /ready and metrics call the last backup stale past this
    backup_compress_level: int = Field(6, ge=0, le=9)  # pg_dump -Z for the custom format
    backup_verify: bool = True  # scheduled backups restore into a scratch database and compare row counts
    backup_timeout_sec: float = Field(
        6 * 3600, gt=0
    )  # one backup (dump + verify + upload) may take this long
    pg_bin_dir: Path | None = None  # where pg_dump/pg_restore live; default: found to match the server
    # S3-compatible upload (Hetzner Object Storage, MinIO, AWS ...): on when BACKUP_S3_BUCKET is set.
    backup_s3_bucket: str | None = None
    backup_s3_prefix: str = "fleet-backups/"
    backup_s3_endpoint_url: str | None = None  # unset: AWS
    backup_s3_region: str | None = None
    backup_s3_access_key_id: str | None = None  # unset: boto3's own chain (env, profile, instance role)
    backup_s3_secret_access_key: SecretStr | None = None
    # Retention extras (the *_RETENTION_DAYS above): sent mail, and the size of each DELETE batch.
    mail_retention_days: int = Field(30, ge=1)  # sent messages leave the outbox after this
    retention_batch_size: int = Field(5000, ge=100, le=100_000)  # rows per DELETE transaction
    # Feature flags (config.yaml `flags:`; hot-reloadable). The ingest flags are `text_dialect_enabled`,
    # `unknown_device_policy` (flags.auto_register_devices) and `ingest_store_raw_frames` above.
    registration_open: bool = True  # POST /auth/register and first Google sign-in create pending accounts
    google_sign_in: bool = True  # Google sign-in offered (when GOOGLE_CLIENT_ID/SECRET are set)
    # Hot reload: SIGHUP, and the config file is checked for changes this often (0: SIGHUP only).
    config_watch_interval_sec: float = Field(2.0, ge=0)
    # WireGuard (seed 001: server 10.0.0.1, vehicles from 10.0.0.11).
    wireguard_dir: Path | None = None  # default DATA_DIR/wireguard (keys, wg0.conf, vehicle configs)
    wireguard_network: str = "10.0.0.0/24"
    wireguard_first_vehicle_host: int = Field(11, ge=2)  # vehicles get .11, .12, ... of the network
    wireguard_port: int = Field(51820, ge=1, le=65535)  # UDP port of the server
    wireguard_endpoint: str | None = (
        None  # public host name or address vehicles dial (e.g. fleet.example.com)
    )
    wireguard_interface: str = "wg0"

    # --- Google / OIDC ---------------------------------------------------------------------------------------
    google_client_id: str | None = None
    google_client_secret: SecretStr | None = None
    oidc_discovery_url: str = "https://accounts.google.com/.well-known/openid-configuration"

    # --- mail ------------------------------------------------------------------------------------------------
    smtp_url: str | None = None
    mail_from: str = "fleet@localhost"

    # --- web UI (`/ui/`; MAP_TILE_URL is in the API hardening block below, GRAFANA_URL in observability's) ----
    map_tile_attribution: str = "© OpenStreetMap contributors"  # shown on every map, as the tile licence asks
    map_tile_max_zoom: int = Field(19, ge=1, le=24)
    # Path (under GRAFANA_URL) of the dashboard the vehicle page embeds; {vehicle_id} is replaced.
    grafana_vehicle_dashboard: str = "/d/fleet-vehicle/vehicle-telemetry?var-vehicle_id={vehicle_id}&kiosk"

    # --- API hardening: web page policy, slow clients, failed authentication (docs/SECURITY.md) ----------------
    # Raster map tiles the web UI loads; their origin is allowed by the pages' Content-Security-Policy.
    map_tile_url: str = "https://tile.openstreetmap.org/{z}/{x}/{y}.png"
    # GRAFANA_URL (in the observability block below) becomes the pages' frame-src.
    api_keepalive_timeout_sec: float = Field(5, gt=0)  # an idle keep-alive connection is closed after this
    api_request_head_timeout_sec: float = Field(10, gt=0)  # request line + headers must arrive within this
    api_request_body_timeout_sec: float = Field(30, gt=0)  # the body (at most 64 KiB) must arrive within this
    # A rotated refresh token still works this long (two tabs refreshing at once).
    refresh_reuse_grace_sec: float = Field(30, ge=0)
    # Bad bearer tokens / API keys allowed per client address and minute.
    rate_limit_auth_failures_per_minute: int = Field(30, ge=1)

    # --- observability: Grafana behind the auth proxy, host gauges (issue 10) ---------------------------
    # Where nginx publishes Grafana (the web UI's iframe; the Grafana session cookie is scoped to its path).
    grafana_url: str | None = None
    # Certificates whose expiry `/metrics` exports (comma-separated paths, e.g. Let's Encrypt fullchain.pem).
    tls_cert_files: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # Extra volumes whose free space `/metrics` exports besides DATA_DIR (comma-separated paths).
    disk_watch_paths: Annotated[list[str], NoDecode] = Field(default_factory=list)
    business_metrics_interval_sec: float = Field(30, gt=0)  # refresh of the fleet/user gauges from SQL

    # --- device-port hardening (issue 15; docs/SECURITY.md "Device port") --------------------------------
    # Per-protocol unknown-device policies overriding UNKNOWN_DEVICE_POLICY (JSON: {"teltonika": "reject"}).
    unknown_device_policies: dict[str, Literal["register", "reject"]] = Field(default_factory=dict)
    # Networks that may connect to the device ports (comma-separated CIDRs, e.g. the WireGuard or APN
    # network); empty: any address. Checked once per connection, before a byte is read.
    ingest_allowed_cidrs: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # Open device connections per address (IPv4 address, IPv6 /64) - in total, and before identification.
    # Trackers behind one carrier NAT share an address: raise these for a private APN behind one NAT.
    ingest_max_connections_per_address: int = Field(1000, ge=1)
    ingest_max_unidentified_per_address: int = Field(100, ge=1)
    # Descriptors kept for everything but device sockets (API clients and WebSockets, the database pools,
    # Redis, log and backup files); device connections are capped below RLIMIT_NOFILE minus this.
    # None: a quarter of the limit, at least 256.
    ingest_fd_reserve: int | None = Field(None, ge=16)
    # A second connection for an online device from another address replaces the first only when the
    # first has been silent this long (a tracker whose link died); otherwise it is refused as a takeover.
    ingest_takeover_silence_sec: float = Field(180, gt=0)
    # Raw frames of unidentified or repeatedly failing peers are kept as excerpts (their first bytes, the
    # length and the SHA-256), at most this many bytes per address and hour; beyond that they are counted.
    ingest_raw_excerpt_bytes: int = Field(256, ge=16, le=65536)
    ingest_stranger_raw_bytes_per_hour: int = Field(64 * 1024, ge=0)
    # --- behind a TCP balancer (issue 13; docs/OPERATIONS.md "Several ingest processes") ---------------
    # 1: every device connection must start with a PROXY protocol header (v2, or v1 text) naming the real
    # tracker address, which is then what is logged, stored, rate-limited and checked against
    # INGEST_ALLOWED_CIDRS; a connection without a valid one is refused. 0: a PROXY header is refused.
    ingest_proxy_protocol: bool = False
    # Who may send PROXY headers (comma-separated CIDRs: the HAProxy hosts); empty: any peer. Checked on
    # the balancer's own address before the header is read.
    ingest_proxy_trusted_cidrs: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # Finished device commands (answered, failed, expired) are deleted after this many days; security
    # events follow AUDIT_LOG_RETENTION_DAYS.
    device_command_retention_days: int = Field(90, ge=1)

    @field_validator("log_level")
    @classmethod
    def _known_level(cls, value: str) -> str:
        level = value.strip().upper()
        if level not in ("CRITICAL", "ERROR", "WARNING", "INFO", "DEBUG"):
            raise ValueError("must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL")
        return level

    @field_validator("trusted_proxies", "tls_cert_files", "disk_watch_paths", mode="before")
    @classmethod
    def _split_proxies(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        return value

    @field_validator("ingest_allowed_cidrs", "ingest_proxy_trusted_cidrs", mode="before")
    @classmethod
    def _networks(cls, value: Any) -> Any:
        import ipaddress

        if isinstance(value, str):
            value = [item.strip() for item in value.split(",") if item.strip()]
        if isinstance(value, list | tuple):
            try:
                # Normalised (host bits cleared): "10.0.0.1/24" means the network 10.0.0.0/24.
                return [str(ipaddress.ip_network(str(item).strip(), strict=False)) for item in value]
            except ValueError as err:
                raise ValueError(f"not a network in CIDR notation: {err}") from err
        return value

    @model_validator(mode="before")
    @classmethod
    def _production_refuses_unknown_devices(cls, data: Any) -> Any:
        # In production a tracker must be registered first unless the operator chose otherwise explicitly.
        if (
            isinstance(data, dict)
            and "unknown_device_policy" not in {str(key).lower() for key in data}
            and str(data.get("env", data.get("ENV", ""))).lower() == "production"
        ):
            return {**data, "unknown_device_policy": "reject"}
        return data

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Order is precedence: explicit arguments, then the environment, then config.yaml.
        return (init_settings, env_settings, YamlSource(settings_cls, _config_path()))

    # --- derived ------------------------------------------------------------------------------------------------
    @property
    def production(self) -> bool:
        return self.env == "production"

    @property
    def uses_embedded_db(self) -> bool:
        return not (self.database_url or self.db_host)

    @property
    def log_dir(self) -> Path:
        return self.data_dir / "logs"

    @property
    def backup_path(self) -> Path:
        return self.backup_dir or self.data_dir / "backups"

    @property
    def wireguard_path(self) -> Path:
        return self.wireguard_dir or self.data_dir / "wireguard"

    def owner_dsn(self) -> str | None:
        """The connection used for migrations (None → embedded server decides)."""
        if self.database_url:
            return self.database_url
        if self.db_host:
            user = quote(self.db_user or "postgres", safe="")
            password = self.db_password.get_secret_value() if self.db_password else ""
            auth = f"{user}:{quote(password, safe='')}" if password else user
            return f"postgresql://{auth}@{self.db_host}:{self.db_port}/{self.db_name}"
        return None


def with_user(dsn: str, user: str, password: str | None) -> str:
    """Return `dsn` with its credentials replaced (keeps host, port, database and query)."""
    parts = urlsplit(dsn)
    host = parts.netloc.rsplit("@", 1)[-1]
    auth = quote(user, safe="")
    if password:
        auth += ":" + quote(password, safe="")
    return urlunsplit((parts.scheme, f"{auth}@{host}", parts.path, parts.query, parts.fragment))


# A production secret must be worth at least this many guesses by zxcvbn's estimate (about 50 bits). zxcvbn
# credits a random string of n characters with ~10**n guesses and far less for words, keyboard walks, repeats
# and sequences, so any generated secret of 16+ characters passes and `passwordpassword12` does not.
MIN_SECRET_GUESSES_LOG10 = 15
SECRET_HINT = "generate one with: python3 -c 'import secrets; print(secrets.token_urlsafe(32))'"


def _weak(value: SecretStr | None) -> bool:
    if value is None:
        return True
    raw = value.get_secret_value()
    if raw.strip().lower() in PLACEHOLDER_SECRETS or len(raw) < MIN_SECRET_LENGTH:
        return True
    from zxcvbn import zxcvbn

    # zxcvbn refuses inputs over 72 characters; a longer secret is judged by its first 72.
    return float(zxcvbn(raw[:72])["guesses_log10"]) < MIN_SECRET_GUESSES_LOG10


def _secret_problems(settings: Settings) -> list[str]:
    """What makes the production secrets unacceptable: missing, placeholder, low entropy, or shared."""
    problems = [name.upper() for name in ("secret_key", "api_key") if _weak(getattr(settings, name))]
    if settings.metrics_api_key is not None and _weak(settings.metrics_api_key):
        problems.append("METRICS_API_KEY")
    values: dict[str, str] = {}
    for name in ("secret_key", "api_key", "metrics_api_key"):
        secret = getattr(settings, name)
        if secret is None:
            continue
        raw = secret.get_secret_value()
        for other, other_raw in values.items():
            if raw == other_raw:
                problems.append(f"{name.upper()} equals {other.upper()}")
        values[name] = raw
    return problems


GENERATED_SECRETS = ("secret_key", "api_key", "db_app_password", "db_grafana_password")


def finalize_secrets(settings: Settings) -> Settings:
    """Refuse weak secrets in production; in development, generate missing ones and keep them on disk."""
    if settings.production:
        problems = _secret_problems(settings)
        if (
            not settings.uses_embedded_db
            and not settings.database_app_url
            and _weak(settings.db_app_password)
        ):
            problems.append("DB_APP_PASSWORD (or DATABASE_APP_URL)")
        if problems:
            raise ConfigError(
                "ENV=production refuses missing, placeholder, low-entropy or shared secrets: "
                + ", ".join(problems)
                + f" (each must be set, its own, at least {MIN_SECRET_LENGTH} random characters; {SECRET_HINT})"
            )
        return settings
    missing = [name for name in GENERATED_SECRETS if getattr(settings, name) is None]
    if not missing:
        return settings
    path = settings.data_dir / "secrets.json"
    stored: dict[str, str] = {}
    if path.exists():
        try:
            stored = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise ConfigError(f"{path}: unreadable generated secrets file: {err}") from err
    changed = False
    for name in missing:
        if name not in stored:
            stored[name] = secrets.token_urlsafe(32)
            changed = True
    if changed:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(stored, indent=2), encoding="utf-8")
        tmp.chmod(0o600)
        tmp.replace(path)
    return settings.model_copy(update={name: SecretStr(stored[name]) for name in missing})


def load_settings(**overrides: Any) -> Settings:
    """Read config.yaml and the environment, validate, and complete secrets."""
    from pydantic import ValidationError

    try:
        settings = Settings(**overrides)
    except ValidationError as err:
        lines = []
        for item in err.errors():
            where = ".".join(str(p) for p in item["loc"]) or "settings"
            lines.append(f"{where.upper()}: {item['msg']}")
        raise ConfigError("invalid configuration: " + "; ".join(lines)) from err
    return finalize_secrets(settings)
