"""Settings: read once from the environment, passed everywhere as one value."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from pipeline.envvars import (
    choice,
    number,
    sqlalchemy_url,
    text_list,
    user_and_password,
    without_password,
)
from pipeline.errors import ConfigError

# Every variable `Settings.from_env` reads, and the field it fills. Tests scrub exactly
# these from the stacks they start, and a test holds the README's table to them.
ENVIRONMENT: dict[str, str] = {
    "DATABASE_URL": "database_url",
    "CELERY_BROKER_URL": "broker_url",
    "REDIS_URL": "broker_url",
    "ITTYBIT_WEBHOOK_SECRET": "webhook_secrets",
    "ITTYBIT_API_KEY": "ittybit_api_key",
    "ITTYBIT_API_URL": "ittybit_api_url",
    "ITTYBIT_CONNECT_TIMEOUT": "ittybit_connect_timeout",
    "ITTYBIT_READ_TIMEOUT": "ittybit_read_timeout",
    "PUBLIC_URL": "public_url",
    "SMTP_URL": "smtp_url",
    "MAIL_FROM": "mail_from",
    "MAX_BODY_BYTES": "max_body_bytes",
    "PIPELINE_VAR_DIR": "broker_folder",
    "RUN_LEASE_SECONDS": "lease_seconds",
    "WORKER_SHUTDOWN_GRACE": "shutdown_grace",
    "TASK_TIME_LIMIT": "task_time_limit",
    "REDELIVER_AFTER": "redeliver_after",
    "RELAY_INTERVAL": "relay_interval",
    "BROKER_VISIBILITY_TIMEOUT": "visibility_timeout",
    "SQLITE_SYNCHRONOUS": "sqlite_synchronous",
    "DATABASE_WRITE_TIMEOUT": "database_write_timeout",
    "CELERY_TASK_EVENTS": "task_events",
    "RECONCILE_AFTER": "reconcile_after",
    "RECONCILE_INTERVAL": "reconcile_interval",
    "RETAIN_SUCCEEDED_DAYS": "retain_succeeded_days",
    "RETAIN_FAILED_DAYS": "retain_failed_days",
    "PRUNE_INTERVAL": "prune_interval",
    "LIVE_TOKEN_SECRET": "live_token_secrets",
    "METRICS_TOKEN": "metrics_token",
    "CONSOLE_BASIC_AUTH": "console_basic_auth",
    "LIVE_MAX_STREAMS": "live_max_streams",
    "LIVE_HEARTBEAT": "live_heartbeat",
    "LOG_LEVEL": "log_level",
    "PIPELINE_ENV": "environment",
}
# Variables that are not ours but say where we run (a Heroku dyno is one of many hosts).
PLATFORM = ("DYNO",)
LOG_LEVELS = ("INFO", "DEBUG", "WARNING", "ERROR", "CRITICAL")  # the first is the default
_SECRET_FIELDS = frozenset(
    {
        "webhook_secrets",
        "ittybit_api_key",
        "smtp_url",
        "live_token_secrets",
        "metrics_token",
        "console_basic_auth",
    }
)
_URL_FIELDS = frozenset({"database_url", "broker_url"})


@dataclass(frozen=True)
class Settings:
    """Everything the web, worker, relay and CLI need to know about their surroundings.

    Its repr names no secret: tracebacks that show locals and debug logs print it.
    """

    database_url: str = "sqlite:///var/pipeline.db"
    broker_url: str = "filesystem://"
    webhook_secrets: tuple[str, ...] = ()
    ittybit_api_key: str = ""
    ittybit_api_url: str = "https://api.ittybit.com"
    public_url: str = ""
    smtp_url: str = ""
    mail_from: str = "ittybit-pipeline@localhost"
    max_body_bytes: int = 1024 * 1024
    broker_folder: str = "var/broker"
    # Seconds a claimed run stays `running` without news from its worker before the relay
    # takes it back; the worker renews it every third of that while the listener runs.
    lease_seconds: float = 10.0
    # Seconds a stopping worker (SIGTERM) lets its listeners finish before it hands their
    # runs back and ends: below the platform's wait before SIGKILL (Heroku: 30 s).
    shutdown_grace: float = 20.0
    task_time_limit: float = 300.0
    # How long a published run may wait for a worker before the relay re-publishes it.
    redeliver_after: float = 60.0
    relay_interval: float = 5.0
    visibility_timeout: float = 3600.0
    sqlite_synchronous: str = "FULL"
    ittybit_connect_timeout: float = 3.05
    ittybit_read_timeout: float = 10.0
    # Seconds the endpoint waits for its write before answering 503 (a hung database).
    database_write_timeout: float = 3.0
    # Celery task events from the start (Flower turns them on by itself when it runs).
    task_events: bool = False
    # Reconciliation (pipeline/reconcile.py): a job unfinished this long after its media
    # last changed, with no terminal webhook, is asked about; the relay looks every
    # `reconcile_interval` seconds (0: only `pipeline reconcile` does).
    reconcile_after: float = 600.0
    reconcile_interval: float = 60.0
    # Retention (pipeline/prune.py): finished events and their runs are deleted after
    # these many days (dead letters after the second); the relay prunes every
    # `prune_interval` seconds (0: only `pipeline prune` does).
    retain_succeeded_days: float = 7.0
    retain_failed_days: float = 30.0
    prune_interval: float = 3600.0
    # Signs the live stream's tokens; comma-separated, newest first, to rotate. Unset: off.
    live_token_secrets: tuple[str, ...] = ()
    # The bearer token `/metrics` wants; unset: no `/metrics` (404).
    metrics_token: str = ""
    # `user:password` the console wants (HTTP Basic); unset: no console (404).
    console_basic_auth: str = ""
    # Streams one web process holds; past it a new one is answered 503 (the client retries).
    live_max_streams: int = 2000
    live_heartbeat: float = 15.0  # seconds between the stream's keep-alive comments
    log_level: str = "INFO"
    # "production" (or a Heroku dyno) makes the embedded defaults an error worth logging.
    environment: str = ""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Build settings from environment variables (see the README's table)."""
        env = os.environ if environ is None else environ
        var = Path(env.get("PIPELINE_VAR_DIR") or "var")
        secrets = text_list(env, "ITTYBIT_WEBHOOK_SECRET")
        production = env.get("PIPELINE_ENV", "").strip().lower()
        if not production and any(env.get(name) for name in PLATFORM):
            production = "production"
        return cls(
            database_url=sqlalchemy_url(env.get("DATABASE_URL") or f"sqlite:///{var}/pipeline.db"),
            broker_url=env.get("CELERY_BROKER_URL") or env.get("REDIS_URL") or "filesystem://",
            webhook_secrets=secrets,
            ittybit_api_key=env.get("ITTYBIT_API_KEY", ""),
            ittybit_api_url=(env.get("ITTYBIT_API_URL") or "https://api.ittybit.com").rstrip("/"),
            public_url=env.get("PUBLIC_URL", "").rstrip("/"),
            smtp_url=env.get("SMTP_URL", ""),
            mail_from=env.get("MAIL_FROM") or "ittybit-pipeline@localhost",
            max_body_bytes=int(number(env, "MAX_BODY_BYTES", 1024 * 1024)),
            broker_folder=str(var / "broker"),
            lease_seconds=number(env, "RUN_LEASE_SECONDS", 10.0),
            shutdown_grace=number(env, "WORKER_SHUTDOWN_GRACE", 20.0),
            task_time_limit=number(env, "TASK_TIME_LIMIT", 300.0),
            redeliver_after=number(env, "REDELIVER_AFTER", 60.0),
            relay_interval=number(env, "RELAY_INTERVAL", 5.0),
            visibility_timeout=number(env, "BROKER_VISIBILITY_TIMEOUT", 3600.0),
            sqlite_synchronous=choice(env, "SQLITE_SYNCHRONOUS", ("FULL", "NORMAL")),
            ittybit_connect_timeout=number(env, "ITTYBIT_CONNECT_TIMEOUT", 3.05),
            ittybit_read_timeout=number(env, "ITTYBIT_READ_TIMEOUT", 10.0),
            database_write_timeout=number(env, "DATABASE_WRITE_TIMEOUT", 3.0),
            task_events=env.get("CELERY_TASK_EVENTS", "").strip().lower() in ("1", "true", "yes"),
            reconcile_after=number(env, "RECONCILE_AFTER", 600.0),
            reconcile_interval=number(env, "RECONCILE_INTERVAL", 60.0),
            retain_succeeded_days=number(env, "RETAIN_SUCCEEDED_DAYS", 7.0),
            retain_failed_days=number(env, "RETAIN_FAILED_DAYS", 30.0),
            prune_interval=number(env, "PRUNE_INTERVAL", 3600.0),
            live_token_secrets=text_list(env, "LIVE_TOKEN_SECRET"),
            metrics_token=env.get("METRICS_TOKEN", "").strip(),
            console_basic_auth=user_and_password(env, "CONSOLE_BASIC_AUTH"),
            live_max_streams=int(number(env, "LIVE_MAX_STREAMS", 2000)),
            live_heartbeat=number(env, "LIVE_HEARTBEAT", 15.0),
            log_level=choice(env, "LOG_LEVEL", LOG_LEVELS),
            environment=production,
        )

    def __repr__(self) -> str:
        shown = []
        for f in fields(self):
            value: Any = getattr(self, f.name)
            if f.name in _SECRET_FIELDS:
                value = "<set>" if value else "<unset>"
            elif f.name in _URL_FIELDS:
                value = without_password(value)
            shown.append(f"{f.name}={value!r}")
        return f"Settings({', '.join(shown)})"

    def require_webhook_secret(self) -> tuple[str, ...]:
        """The signing secrets, or a start-up error naming the missing variable."""
        if not self.webhook_secrets:
            raise ConfigError(
                "ITTYBIT_WEBHOOK_SECRET is not set: the webhook endpoint cannot verify "
                "signatures without it (comma-separate several to rotate)"
            )
        return self.webhook_secrets

    def require_api_key(self) -> str:
        """The Ittybit API key, or an error naming the missing variable."""
        if not self.ittybit_api_key:
            raise ConfigError("ITTYBIT_API_KEY is not set: calls to Ittybit need it")
        return self.ittybit_api_key

    def missing(self, variables: tuple[str, ...]) -> list[str]:
        """Which of these environment variables (names from ENVIRONMENT) are unset."""
        return [name for name in variables if not getattr(self, ENVIRONMENT[name])]

    @property
    def webhook_url(self) -> str:
        """Where Ittybit should deliver webhooks for jobs we create."""
        if not self.public_url:
            raise ConfigError("PUBLIC_URL is not set: jobs we create need a webhook_url")
        return f"{self.public_url}/webhooks/ittybit"

    @property
    def uses_filesystem_broker(self) -> bool:
        return self.broker_url.startswith("filesystem:")

    @property
    def uses_amqp_broker(self) -> bool:
        return self.broker_url.startswith(("amqp:", "amqps:", "pyamqp:"))

    @property
    def uses_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")
