"""The Celery app for `celery -A pipeline.worker worker`: one task per listener."""

from celery.signals import worker_init, worker_process_init

from pipeline.errors import ConfigError
from pipeline.runtime import Runtime
from pipeline.tasks import register_listener_tasks

runtime = Runtime.from_env()
app = runtime.celery
register_listener_tasks(app, runtime)


@worker_init.connect  # type: ignore[untyped-decorator]
def _check_invariants(**_: object) -> None:
    cap = max((listener.retry.backoff_cap for listener in runtime.registry), default=0.0)
    try:
        runtime.settings.check_invariants(backoff_cap=cap)
    except ConfigError as exc:
        # Celery logs and ignores an Exception raised by a signal handler, and the worker
        # would start anyway; SystemExit is not one, so it stops the worker here.
        raise SystemExit(f"error: {exc.message}") from None


@worker_process_init.connect  # type: ignore[untyped-decorator]
def _after_fork(**_: object) -> None:
    runtime.after_fork()
