"""Every setting Pulse reads, from the environment (or a `.env` file), in one place.

The settings table of docs/settings.md is generated from nothing else: keep names and defaults here.
"""
from functools import lru_cache
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    database_url: str = Field(
        "postgresql+psycopg://postgres@127.0.0.1:5432/pulse",
        description="SQLAlchemy URL of the Postgres database (created when missing).",
    )
    broker_url: str = Field(
        "amqp://guest:guest@127.0.0.1:5672//", description="RabbitMQ (AMQP) URL for Celery."
    )
    mongo_uri: str = Field(
        "mongodb://127.0.0.1:27017/pulse",
        description="MongoDB URI; its path names the database.",
    )
    redis_url: str = Field("redis://127.0.0.1:6379/0", description="Redis URL for the profile cache.")
    result_backend: str = Field(
        "redis://127.0.0.1:6379/1",
        description="Celery result backend (no API call waits for a task's result: fits and validations are jobs).",
    )
    cache_prefix: str = Field("pulse:", description="Prefix of every Redis key Pulse writes.")
    profile_cache_ttl: int = Field(3600, description="Seconds a cached profile lives in Redis.")

    smtp_host: str = Field("127.0.0.1", description="SMTP server for the welcome e-mail.")
    smtp_port: int = Field(1025, description="SMTP port (the dev mail catcher listens on 1025).")
    smtp_user: str | None = Field(None, description="SMTP login, when the server wants one.")
    smtp_password: str | None = Field(None, description="SMTP password.")
    smtp_starttls: bool = Field(False, description="Upgrade the SMTP connection with STARTTLS.")
    mail_from: str = Field("Pulse <welcome@pulse.local>", description="Sender of the welcome e-mail.")

    queue_prefix: str = Field(
        "pulse", description="Prefix of Pulse's RabbitMQ exchanges and queues."
    )
    queue_type: Literal["classic", "quorum"] = Field(
        "classic",
        description="RabbitMQ queue type: quorum queues replicate over a cluster (compose uses them); "
        "an existing queue keeps its type, so switching needs new queues (another QUEUE_PREFIX or vhost).",
    )
    outbox_batch_size: int = Field(100, description="Outbox rows the relay publishes per round.")
    outbox_poll_interval: float = Field(
        0.5, description="Seconds the relay sleeps when the outbox is empty or the broker is down."
    )
    events_batch_max: int = Field(
        1000, description="Largest number of events POST /api/events/batch accepts (larger: 413)."
    )
    segment_cors_origin: str = Field(
        "*", description="The Access-Control-Allow-Origin of Segment's /v1 API (analytics.js in pages of that origin)."
    )
    events_chunk_size: int = Field(
        1000, description="Events per RabbitMQ message when a batch is published."
    )
    rescore_delay_seconds: float = Field(
        5.0,
        description="Seconds of event changes collected into one analytics rescoring run "
        "(API reads are fresh regardless; this bounds how stale stored profile documents get).",
    )
    rescore_sweep_seconds: float = Field(
        60.0,
        description="Every so many seconds (beat), users pending rescoring for longer than that are queued "
        "again: what a Redis restart or a killed analytics worker lost is rescored within about twice this.",
    )
    session_idle_minutes: float = Field(
        30.0, gt=0,
        description="A gap between one person's events of at least this many minutes ends a session "
        "(the profile's `sessions`).",
    )
    applied_batches_retention_days: int = Field(
        30,
        description="Days the worker remembers which event batches it has counted (a redelivery within "
        "them adds nothing); pruned daily.",
    )
    task_retry_backoff_max_seconds: int = Field(
        300,
        description="Cap of the exponential backoff between a task's retries (2, 4, 8, ... seconds, jittered).",
    )
    task_max_retries: int = Field(
        10,
        description="Retries of a task before it is dead-lettered. Not for erasures, event batches and signups: "
        "those retry, at the capped backoff, until the store is back (shared.infra.retry).",
    )
    erasure_reconcile_seconds: float = Field(
        60.0,
        description="Every so many seconds (beat), erasures not yet confirmed in MongoDB and Redis are done again, "
        "and one page of the sweep over all user ids forgets people deleted from Postgres some other way.",
    )
    erasure_sweep_page: int = Field(
        10000, description="User ids the erasure sweep checks per run (its cost per run; a full cycle takes "
        "highest id / this runs)."
    )
    outbox_retention_hours: float = Field(
        24.0,
        description="Hours a published outbox message (a signup's carries name and e-mail) is kept; the relay "
        "deletes older ones in batches.",
    )
    model_refit_cron_hour: int = Field(
        3, description="Hour (UTC) at which Celery beat refits the population models daily."
    )
    insight_cache_seconds: int = Field(
        300, description="Seconds a funnel, retention or lifecycle answer stays cached in Redis (each answer is "
        "cached per query and data version: new events change the version at once; the time bounds the answers "
        "of a cohort with `event_in_last_days`, which move with the clock).")
    insight_inline_timeout_ms: int = Field(
        5000, description="How long (Postgres statement_timeout, milliseconds) the API computes an insight query "
        "itself; a query still running then is cancelled and run as a job by the analytics worker (202 with "
        "Location).")
    customer_stats_seconds: float = Field(
        60.0,
        description="Every so many seconds (beat), the analytics worker recomputes the customer distributions "
        "the dashboard draws (churn risk, P(alive), predicted LTV, the P(alive) matrix); also after every fit.",
    )
    scoring_model: Literal["bgnbd", "pareto_nbd", "mbgnbd"] = Field(
        "bgnbd",
        description="Purchase model that scores profiles (P(alive), expected purchases, CLV): every fit fits and "
        "stores them all; a profile and the stored model say which one scored it.",
    )
    clv_horizon_months: int = Field(12, description="CLV horizon in months.")
    clv_monthly_discount_rate: float = Field(0.01, description="Monthly discount rate for CLV.")
    api_key_cache_seconds: float = Field(
        5.0,
        description="Seconds an API process trusts a key it has checked while Redis is unreachable (otherwise a "
        "revocation, announced in Redis, reaches every process from the next request on).",
    )
    trusted_proxies: str = Field(
        "",
        description="Reverse proxies whose X-Forwarded-For (the client, for the signup and failed-key limits) and "
        "X-Forwarded-Proto (the dashboard's Secure cookie) are believed: comma-separated IP addresses or CIDR "
        "networks; empty: none, the connection's peer is the client.",
    )
    dashboard_session_seconds: int = Field(
        12 * 3600, description="Seconds a dashboard login lasts (a session in Redis; logging out ends it at once)."
    )
    rate_limits_enabled: bool = Field(True, description="Apply the rate limits below (kept in Redis).")
    rate_limit_signup: str = Field(
        "10/minute", description="Signups per client IP address (requests with an admin key are not limited)."
    )
    rate_limit_ingest: str = Field(
        "6000/minute", description="Event requests (single or batch) per API key with the ingest scope."
    )
    rate_limit_read: str = Field("1200/minute", description="Read requests per API key with the read scope.")
    rate_limit_auth_failures: str = Field(
        "20/minute",
        description="Per client IP address: keys looked up in Postgres and not found. Over it, requests with a key "
        "this process does not know answer 429 without a lookup.",
    )
    tracking_plan_refresh_seconds: float = Field(
        2.0, ge=0, description="Each API process asks Postgres at most this often whether the tracking plan changed "
        "(one cheap query) and re-reads it when it did: a plan change applies everywhere within about this long.",
    )
    tracking_plan_unplanned: Literal["accept", "flag", "refuse"] = Field(
        "accept", description="What happens to a custom event whose type has no tracking-plan entry: accept it, "
        "store it flagged (listed in GET /api/tracking-plan/violations), or refuse it (422).",
    )
    metrics_enabled: bool = Field(
        True, description="Count requests and cache reads for GET /metrics (bench/metrics_cost.py measures the cost)."
    )
    otel_exporter_otlp_endpoint: str | None = Field(
        None,
        description="Base URL of an OTLP/HTTP collector (Jaeger: http://127.0.0.1:4318): every process sends its "
        "traces there. Unset (and TRACES_DIR unset): tracing is off.",
    )
    traces_dir: str | None = Field(
        None,
        description="Folder where every process appends its finished spans as JSON lines, a file per process "
        "(tests; a look without a collector). Unset: no files.",
    )
    log_level: str = Field("INFO", description="Log level of every Pulse process.")
    log_json: bool = Field(False, description="Log JSON lines instead of coloured console output.")


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
