"""One Celery task per listener, named `listeners.<name>`, taking a run id.

The task's state in Celery (and so in Flower and error trackers) follows the run's: a
retry is RETRY, a dead letter FAILURE (the task raises RunFailed once the run is
recorded `failed`; with acks_late the message is acknowledged all the same).
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Celery, Task
from celery.exceptions import Retry

from pipeline.listener import Listener
from pipeline.models import RunState
from pipeline.runtime import Runtime

log = logging.getLogger(__name__)


class RunFailed(Exception):
    """The run ended `failed`: it is on the dead-letter list (`pipeline runs --state failed`)."""


def register_listener_tasks(app: Celery, runtime: Runtime) -> None:
    """Register a task for every discovered listener."""
    for listener in runtime.registry:
        _register(app, runtime, listener)


def _register(app: Celery, runtime: Runtime, listener: Listener) -> None:
    def run_listener(task: Task[Any, Any], run_id: int) -> str | None:
        outcome = runtime.runner.execute(run_id)
        claim = outcome.claim
        about = f"run {run_id} ({listener.name}, event {claim.event_id if claim else '?'})"
        last_line = (outcome.detail.strip().splitlines() or [""])[-1][:200]
        if outcome.state is RunState.FAILED:
            log.error("%s failed: %s", about, outcome.detail)
            raise RunFailed(f"{about} failed: {last_line}")
        log.info("%s: %s %s", about, outcome.state or "nothing to do,", last_line)
        if outcome.state is RunState.RETRYING:
            try:
                raise task.retry(countdown=outcome.retry_in, max_retries=None)
            except Retry:
                raise
            except Exception as exc:  # broker unreachable: the run is `retrying`, the relay has it
                log.warning("%s: retry not scheduled (%s); the relay will", about, exc)
        return outcome.state

    run_listener.__doc__ = f"{type(listener).__name__}: {listener.describe_wants()}"
    app.task(
        name=listener.task_name,
        bind=True,
        acks_late=True,
        reject_on_worker_lost=True,
        ignore_result=True,
        throws=(RunFailed,),  # expected: logged above, at ERROR, without Celery's traceback
        max_retries=None,  # attempts are counted in the database, per listener policy
    )(run_listener)
