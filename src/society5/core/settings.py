"""Settings read from the environment (prefix ``SOCIETY5_``); nothing is built at import time."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_SQLITE = "sqlite:///./var/society5.db"


class Settings(BaseSettings):
    """Everything an operator can configure. Embedded defaults: SQLite under ./var, in-process jobs."""

    model_config = SettingsConfigDict(env_prefix="SOCIETY5_", env_file=None, extra="ignore")

    database_url: str = DEFAULT_SQLITE
    # PostgreSQL connections a process keeps open. Fewer than the requests that use the database at once
    # (the web thread pool runs up to 40) means a new connection, a new server process, per request beyond
    # it: under 16 concurrent clients that cost more than the queries themselves.
    db_pool_size: int = Field(default=32, ge=1, le=500)
    auth: Literal["on", "off"] = "on"
    demo: bool = False
    secret_key: str = ""
    host: str = "127.0.0.1"
    port: int = 8000
    base_url: str = ""
    max_body_bytes: int = Field(default=2 * 1024 * 1024, ge=1024)
    max_batch_entities: int = Field(default=10_000, ge=1)
    max_page_size: int = Field(default=1000, ge=1)
    # Instances per attribute in one temporal answer; longer histories are paged (206 + Content-Range).
    temporal_instance_limit: int = Field(default=1000, ge=1)
    default_page_size: int = Field(default=20, ge=1)
    # History retention in days per entity type ("*": every other type); absent = keep for ever.
    temporal_retention_days: dict[str, float] = Field(default_factory=dict)
    # SQLite: a write logs its history in one row; the log is expanded into an unindexed table and moved into
    # the indexed one in bulk (broker/temporal_staging.py). Off: every row goes straight into the index
    # (PostgreSQL always does).
    temporal_staging: bool = True
    # A directory holding index.json ({url: file}) of JSON-LD contexts to preload into the local cache.
    preload_contexts: Path | None = None
    # Remote @context URLs may be fetched only from these hosts (the default: none, offline-safe).
    context_fetch_hosts: tuple[str, ...] = ("127.0.0.1", "localhost")
    context_fetch_timeout_s: float = 3.0
    log_level: str = "INFO"
    # Outbox delivery (notifications, messages): parallel deliveries per process and the retry schedule.
    outbox_workers: int = Field(default=8, ge=1, le=256)
    outbox_max_attempts: int = Field(default=12, ge=1)
    outbox_retry_base_s: float = Field(default=1.0, gt=0)
    outbox_retry_max_s: float = Field(default=600.0, gt=0)
    session_hours: int = 12
    # Notify layer (society5.notify, see its README): the SMTP server for mail, the LINE Messaging API, and
    # per-channel rate limits (messages per second per process; 0 = unlimited). Mail is off until
    # SMTP_HOST and SMTP_FROM are set, LINE until its channel access token is set.
    smtp_host: str = ""
    smtp_port: int = Field(default=587, ge=1, le=65535)
    smtp_starttls: bool = True
    smtp_ssl: bool = False
    smtp_user: str = ""
    smtp_password: str = ""
    smtp_from: str = ""
    smtp_timeout_s: float = Field(default=10.0, gt=0)
    line_channel_access_token: str = ""
    line_api_base: str = "https://api.line.me"
    notify_timeout_s: float = Field(default=10.0, gt=0)  # LINE, webhook and MQTT calls
    notify_rate_mail: float = Field(default=10.0, ge=0)
    notify_rate_line: float = Field(default=2000.0, ge=0)
    notify_rate_webhook: float = Field(default=100.0, ge=0)
    notify_rate_mqtt: float = Field(default=500.0, ge=0)
    # Failed attempts on one channel before a message escalates to the recipient's next channel.
    notify_escalate_after: int = Field(default=5, ge=1)
    notify_keep_days: int = Field(default=90, ge=1)
    # MQTT ingestion bridge (broker/mqtt.py, docs/mqtt.md), off until MQTT_URL is set: mqtt://user:pw@host:1883
    # (mqtts:// for TLS). Keep the client id stable (default: society5-bridge-<hostname>): Mosquitto keeps
    # the bridge's session, and what arrives while it restarts, under that id. MQTT_TENANTS ({"011002": ""}
    # as JSON) lists the tenants MQTT may write to, each with the entity-id prefix it is limited to
    # ("" = any id); empty: every existing tenant.
    mqtt_url: str = ""
    mqtt_client_id: str = ""
    mqtt_topic_prefix: str = "society5"
    mqtt_shared_group: str = ""
    mqtt_tenants: dict[str, str] = Field(default_factory=dict)
    mqtt_receive_max: int = Field(default=2000, ge=1, le=65535)
    mqtt_batch_max: int = Field(default=1000, ge=1)
    mqtt_session_expiry_s: int = Field(default=3600, ge=0)
    mqtt_dead_letter_payload_max: int = Field(default=4096, ge=64)
    # Open-data portal (society5.opendata): uploaded files live under OPENDATA_DIR; an upload larger than
    # OPENDATA_MAX_UPLOAD_MB is refused while it streams in (nothing is kept). SITE_URL is the public base URL
    # written into DCAT identifiers and resource URLs (default: the URL each request came in on).
    opendata_dir: str = "./var/opendata"
    opendata_max_upload_mb: int = Field(default=500, ge=1)
    opendata_site_url: str = ""
    opendata_site_title: str = "北海道オープンデータ"
    opendata_publisher: str = "北海道"
    # ヒグマ service (society5.services.bears): images and thumbnails under BEARS_DIR. A frame whose bear
    # score reaches BEARS_SIGHTING_THRESHOLD is labelled bear and creates a sighting (unset: the classifier's
    # own threshold, tuned on the validation split, the one `society5 bench bears` reports); at or above
    # BEARS_ALERT_THRESHOLD it also alerts before staff verify it. Person images are never published and
    # are deleted after BEARS_PERSON_RETENTION_H hours.
    # Resident reports: at most BEARS_REPORT_LIMIT per client per hour. Public and open-data locations are
    # rounded to BEARS_PUBLIC_DECIMALS decimal degrees (3 ≈ 100 m). Reports within BEARS_MERGE_M metres and
    # BEARS_MERGE_MINUTES of each other are proposed to staff as one event.
    bears_dir: str = "./var/bears"
    bears_classifier: str = ""  # "package.module:factory" of another Classifier; empty: EfficientNet-Lite0
    bears_sighting_threshold: float | None = Field(default=None, ge=0, le=1)
    bears_alert_threshold: float = Field(default=0.5, ge=0, le=1)
    bears_person_retention_h: float = Field(default=24.0, gt=0)
    bears_max_image_mb: int = Field(default=20, ge=1)
    bears_report_limit: int = Field(default=5, ge=1)
    bears_public_decimals: int = Field(default=3, ge=1, le=6)
    bears_merge_m: float = Field(default=1000.0, gt=0)
    bears_merge_minutes: float = Field(default=120.0, gt=0)
    bears_alert_hours: float = Field(default=6.0, gt=0)
    bears_watch_dir: str = ""  # a folder trail cameras push images into (FTP/e-mail drop); empty: off

    @field_validator("database_url")
    @classmethod
    def _sqlalchemy_url(cls, value: str) -> str:
        # Operators paste libpq-style URLs; SQLAlchemy needs the driver named.
        if value.startswith("postgres://"):
            value = "postgresql://" + value[len("postgres://") :]
        if value.startswith("postgresql://"):
            value = "postgresql+psycopg://" + value[len("postgresql://") :]
        return value

    @field_validator("temporal_retention_days")
    @classmethod
    def _positive_days(cls, value: dict[str, float]) -> dict[str, float]:
        bad = {k: v for k, v in value.items() if not v > 0}
        if bad:
            raise ValueError(f"retention days must be positive: {bad}")
        return value

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    def effective_secret(self) -> str:
        """The signing secret; demo and auth-off runs get a fixed one, production must set it."""
        if self.secret_key:
            return self.secret_key
        if self.demo or self.auth == "off":
            return "society5-demo-secret-not-for-production"
        from society5.core.errors import ConfigError

        raise ConfigError("SOCIETY5_SECRET_KEY must be set (a long random string) unless demo mode is on")
