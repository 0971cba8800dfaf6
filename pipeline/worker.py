"""The Celery app for `celery -A pipeline.worker worker` (and Flower): a task per listener.

Everything the worker needs is checked before it takes a message: the listeners import,
the variables they require are set, the timings cannot make the broker redeliver work in
progress. A problem stops it with one line naming it.

Stopping (SIGTERM, to the worker or to every process of the dyno): Celery's warm shutdown
lets the pool finish its tasks, and a pool process still busy WORKER_SHUTDOWN_GRACE
seconds later hands its runs back and ends (lease.py), so a deploy strands nothing.
"""

import logging
import os
import signal
from types import FrameType
from typing import Any

import billiard.process
from celery.signals import (
    setup_logging,
    task_prerun,
    worker_init,
    worker_process_init,
    worker_process_shutdown,
    worker_shutting_down,
)

from pipeline import logs, preflight
from pipeline.errors import ConfigError
from pipeline.metrics.tally import TALLY
from pipeline.runtime import Role, Runtime
from pipeline.tasks import register_listener_tasks

log = logging.getLogger(__name__)
# The worker's own process; prefork's pool processes are forked from it after this import.
_MAIN_PID = os.getpid()

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
        preflight.check_invariants(settings, backoff_cap=cap)
    except ConfigError as exc:
        # Celery logs and ignores an Exception raised by a signal handler, and the worker
        # would start anyway; SystemExit is not one, so it stops the worker here.
        raise SystemExit(f"error: {exc.message}") from None
    for problem in preflight.embedded_defaults_in_production(settings):
        log.error("%s", problem)


@worker_process_init.connect  # type: ignore[untyped-decorator]
def _after_fork(**_: object) -> None:
    runtime.after_fork()


@worker_process_shutdown.connect  # type: ignore[untyped-decorator]
def _last_counts(**_: object) -> None:
    TALLY.flush()  # a pool process ends with os._exit: atexit would not run


@task_prerun.connect  # type: ignore[untyped-decorator]
def _on_sigterm_finish_or_hand_back(**_: object) -> None:
    """In a pool process, before a task (billiard sets its own handlers after
    worker_process_init): SIGTERM lets the work finish or hands it back (lease.py).
    Not in the worker's own process (`--pool solo` or threads run tasks there), whose
    SIGTERM is Celery's warm shutdown and must stay so."""
    if os.getpid() == _MAIN_PID:
        return
    if signal.getsignal(signal.SIGTERM) is not _stopping:
        signal.signal(signal.SIGTERM, _stopping)


def _stopping(signum: int, frame: FrameType | None) -> None:
    runtime.runner.leases.stopping(runtime.settings.shutdown_grace)


@worker_shutting_down.connect  # type: ignore[untyped-decorator]
def _tell_the_pool(how: str = "", **_: object) -> None:
    """A warm shutdown of the worker alone (systemd, `kill <pid>`) reaches its pool
    processes as a dyno's SIGTERM would."""
    if how == "Warm":
        for child in billiard.process.active_children():
            if child.pid:
                os.kill(child.pid, signal.SIGTERM)
