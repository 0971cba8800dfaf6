"""One Celery task per listener, named `listeners.<name>`, taking a run id."""

from __future__ import annotations

import logging
from typing import Any

from celery import Celery, Task
from celery.exceptions import Retry

from pipeline.listener import Listener
from pipeline.runtime import Runtime

log = logging.getLogger(__name__)


def register_listener_tasks(app: Celery, runtime: Runtime) -> None:
    """Register a task for every discovered listener."""
    for listener in runtime.registry:
        _register(app, runtime, listener)


def _register(app: Celery, runtime: Runtime, listener: Listener) -> None:
    def run_listener(task: Task[Any, Any], run_id: int) -> str:
        outcome = runtime.runner.execute(run_id)
        log.info("run %s %s: %s %s", run_id, listener.name, outcome.state, outcome.detail[:200])
        if outcome.state == "retrying":
            try:
                raise task.retry(countdown=outcome.retry_in, max_retries=None)
            except Retry:
                raise
            except Exception as exc:  # broker unreachable: the run is `retrying`, the relay has it
                log.warning(
                    "run %s: retry not scheduled (%s); the relay will", run_id, type(exc).__name__
                )
        return outcome.state

    run_listener.__doc__ = f"{type(listener).__name__}: {listener.describe_wants()}"
    app.task(
        name=listener.task_name,
        bind=True,
        acks_late=True,
        reject_on_worker_lost=True,
        ignore_result=True,
        max_retries=None,  # attempts are counted in the database, per listener policy
    )(run_listener)
