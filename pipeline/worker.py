"""The Celery app for `celery -A pipeline.worker worker` (and Flower): a task per listener.

Everything the worker needs is checked before it takes a message: the listeners import,
the variables they require are set, the timings cannot make the broker redeliver work in
progress. A problem stops it with one line naming it.
"""

import logging
from typing import Any

from celery.signals import setup_logging, worker_init, worker_process_init

from pipeline import logs
from pipeline.errors import ConfigError
from pipeline.runtime import Role, Runtime
from pipeline.tasks import register_listener_tasks

log = logging.getLogger(__name__)

try:
    runtime = Runtime.from_env(Role.WORKER)
    app = runtime.celery
    register_listener_tasks(app, runtime)
except ConfigError as exc:
    # Celery would print this as a traceback under "Unable to load celery application".
    raise SystemExit(f"error: {exc.message}") from None


@setup_logging.connect  # type: ignore[untyped-decorator]
def _logging(loglevel: Any = None, **_: object) -> None:
    level = logging.getLevelName(loglevel) if isinstance(loglevel, int) else loglevel
    logs.configure(level or runtime.settings.log_level)


@worker_init.connect  # type: ignore[untyped-decorator]
def _check(**_: object) -> None:
    settings = runtime.settings
    cap = max((listener.retry.backoff_cap for listener in runtime.registry), default=0.0)
    try:
        runtime.registry.check_requirements(settings)
        settings.check_invariants(backoff_cap=cap)
    except ConfigError as exc:
        # Celery logs and ignores an Exception raised by a signal handler, and the worker
        # would start anyway; SystemExit is not one, so it stops the worker here.
        raise SystemExit(f"error: {exc.message}") from None
    for problem in settings.embedded_defaults_in_production():
        log.error("%s", problem)


@worker_process_init.connect  # type: ignore[untyped-decorator]
def _after_fork(**_: object) -> None:
    runtime.after_fork()
