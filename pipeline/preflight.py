"""Start-up checks on a configuration: what cannot work where it runs. The worker refuses
to start on a broken invariant (ConfigError, one line naming the variable); the web and
the worker log, at ERROR, the embedded defaults found on a deployment."""

from __future__ import annotations

from pipeline.errors import ConfigError
from pipeline.settings import Settings

MIN_LEASE_SECONDS = 3.0


def check_invariants(settings: Settings, backoff_cap: float) -> None:
    """Refuse a configuration where the broker would redeliver a task still running."""
    if not settings.lease_seconds >= MIN_LEASE_SECONDS:
        raise ConfigError(
            f"RUN_LEASE_SECONDS ({settings.lease_seconds:g}) must be at least "
            f"{MIN_LEASE_SECONDS:g}: the worker renews it every third of it, and a renewal "
            "slower than that would let the relay re-run work still in progress"
        )
    if not settings.shutdown_grace >= 0:
        raise ConfigError(
            f"WORKER_SHUTDOWN_GRACE ({settings.shutdown_grace:g}) must be 0 or more seconds"
        )
    limit = max(settings.task_time_limit, backoff_cap)
    redis = not (settings.uses_filesystem_broker or settings.uses_amqp_broker)
    if redis and limit >= settings.visibility_timeout:
        raise ConfigError(
            f"BROKER_VISIBILITY_TIMEOUT ({settings.visibility_timeout:g}s) must exceed the task "
            f"time limit and every listener's backoff cap (largest: {limit:g}s), or Redis "
            "hands a task still running or waiting to a second worker"
        )


def embedded_defaults_in_production(settings: Settings) -> list[str]:
    """What cannot work where this runs: the one-host defaults on a deployment that is
    (or may be) several hosts. Empty unless PIPELINE_ENV=production or on a dyno."""
    if settings.environment != "production":
        return []
    found = []
    if settings.uses_filesystem_broker:
        found.append(
            "CELERY_BROKER_URL is not set: the filesystem:// broker reaches only workers "
            "on this host, so webhooks are stored and never worked off elsewhere"
        )
    if settings.uses_sqlite:
        found.append(
            "DATABASE_URL is not set to a server: a SQLite file is seen only by "
            "processes on this host"
        )
    return found
