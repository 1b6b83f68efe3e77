"""Service configuration: one pydantic-settings object, read from the environment (prefix ``PL_``).

``DATABASE_URL`` is read without the prefix because every Postgres tool and platform already speaks it.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# The project's root (the folder holding pyproject.toml and .venv). The embedded Postgres lives under it, so
# every command finds the same database whatever the current directory is.
PROJECT_ROOT = Path(__file__).resolve().parents[1]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PL_", extra="ignore")

    database_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("DATABASE_URL", "PL_DATABASE_URL"),
        description="Postgres URL. Unset: an embedded Postgres is started in `data_dir`.",
    )
    data_dir: Path = Field(
        default=PROJECT_ROOT / ".data" / "pg",
        description="Embedded Postgres data directory; a relative path is taken from the project root, never "
        "from the current directory.",
    )
    database_name: str = Field(default="points_ledger", description="Database created on the embedded server.")
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 1
    pool_min_size: int = 2
    pool_max_size: int = 10
    statement_timeout_ms: int = 5000
    lock_timeout_ms: int = Field(
        default=3000,
        description="Longest wait for a lock: a duplicate request for its in-flight original (then 409 "
        "request_in_progress), a write for a member busy with other writes (then 409 member_busy).",
    )
    idempotency_retention_days: int = 7
    max_body_bytes: int = 1_048_576
    import_max_body_bytes: int = Field(
        default=33_554_432, ge=1, description="Body limit of POST /v1/imports (up to 10,000 members with their lots)")
    header_timeout_seconds: float = Field(
        default=10.0, ge=0, description="A request's head must arrive within this many seconds of the connection "
        "(or of the request's first byte on a keep-alive connection); then 408 and the connection closes (0: off)")
    body_timeout_seconds: float = Field(
        default=30.0, ge=0, description="A request's whole body must arrive within this many seconds of its head; "
        "then 408 and the connection closes (0: off)")
    keep_alive_seconds: int = Field(default=5, ge=1, description="Idle keep-alive connections close after this")
    migrate_on_start: bool = True
    log_level: str = "INFO"
    scheduler_enabled: bool = Field(
        default=True, description="Run periodic jobs (release expired holds, purge keys) in this process; "
        "one process of the fleet leads, by a Postgres advisory lock.",
    )
    rate_limit_per_second: float = Field(
        default=0.0, description="Requests per second allowed per API key and process (0 = no limit)")
    rate_limit_burst: int = Field(default=100, description="Requests an API key may burst above the rate")
    auth_failure_rate_per_second: float = Field(
        default=10.0, description="Failed key lookups (unknown key, wrong secret, revoked) allowed per second per "
        "client address and per key prefix, in each process; beyond the burst, uncached keys from that address "
        "or prefix are answered 429 authentication_rate_limited without a database lookup (0 = no limit)")
    auth_failure_burst: int = Field(default=200, description="Failed key lookups allowed in a burst")
    metrics_enabled: bool = Field(
        default=False, description="Serve Prometheus metrics on /metrics (off: 404). They are per process and "
        "unauthenticated: enable only where the port is not reachable by clients, or filter /metrics in front")
    voucher_lookup_failures_per_minute: float = Field(
        default=10.0, ge=0, description="Lookups of voucher codes that find nothing, per API key and process, "
        "refilled per minute (0 = no bound); past them (and the burst) 429 rate_limited")
    voucher_lookup_failure_burst: int = Field(default=20, ge=1, description="Failed voucher lookups a key may make "
                                              "before the per-minute bound applies")
    cors_origins: list[str] = Field(default_factory=list, description="Allowed CORS origins (none by default).")
    group_commit: bool = Field(
        default=True, description="Send the writes that reach a process at the same moment to Postgres together: "
        "one round trip and one commit for all of them (app/ledger/batch.py).")
    group_commit_window_ms: float = Field(
        default=1.0, ge=0, le=50, description="How long the first write of a batch waits for others (0: no wait; "
        "the writes that arrive while a batch runs go together when it ends).")
    group_commit_max: int = Field(default=64, ge=2, le=1000, description="Most writes in one batch.")
    invalidation_ack_timeout_ms: int = Field(
        default=2000, ge=1, description="How long revoking a key (or changing settings) waits for every process to "
        "confirm it evicted its cached copy; a process alive and silent past it makes a revocation answer 503 "
        "revocation_unconfirmed (the revocation is committed; repeat the request)")
    changes_retention_days: int = Field(
        default=30, ge=1, description="Days the change feed keeps an event (and webhook deliveries their log); "
        "older ones are purged hourly")
    insight_refresh_hours: float = Field(
        default=24.0, gt=0, description="The scheduler refreshes a programme's insight (RFM segments, lifecycle "
        "stages) when its last refresh is older than this (checked every 10 minutes)")
    webhook_worker: bool = Field(
        default=True, description="Deliver webhooks from this process. Every process may: they claim deliveries "
        "with FOR UPDATE SKIP LOCKED, so no attempt is sent twice")
    webhook_concurrency: int = Field(default=64, ge=1, le=1000,
                                     description="Deliveries a process sends at the same time")
    webhook_timeout_seconds: float = Field(
        default=10.0, gt=0, le=60, description="A receiver must answer a delivery within this (else: retried)")
    webhook_poll_ms: int = Field(default=200, ge=10, le=10_000,
                                 description="How often an idle worker looks for new changes and due retries")
    webhook_allow_private_urls: bool = Field(
        default=False, description="Allow webhook URLs whose host is loopback, private or link-local (refused by "
        "default: a webhook must not reach into the service's own network). For tests and closed networks")
    webhook_disable_after_days: float = Field(
        default=5.0, gt=0, description="An endpoint with no successful delivery for this long, while failing, is "
        "disabled (and `webhook_endpoint.disabled` announced)")
    dashboard_session_hours: float = Field(
        default=8.0, gt=0, le=24 * 30, description="A dashboard sign-in lasts this long (then sign in again); "
        "revoking the admin key ends its sessions at once")
    dashboard_secure_cookie: bool = Field(
        default=False, description="Always mark the dashboard's session cookie Secure (set it when TLS ends at a "
        "proxy in front of the service). Off: Secure when the request itself came over https")
    api_key_cache_seconds: float = Field(
        default=60.0,
        description="Seconds an authenticated key is cached in process (0 = look up on every request). "
        "Revocations and settings changes reach every process through LISTEN/NOTIFY, and each process "
        "acknowledges them before the request that made them answers.",
    )

    @field_validator("data_dir")
    @classmethod
    def _anchor_data_dir(cls, value: Path) -> Path:
        value = value.expanduser()
        return value if value.is_absolute() else PROJECT_ROOT / value


@lru_cache
def get_settings() -> Settings:
    return Settings()
