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
from sqlalchemy.exc import DBAPIError

from pipeline.listener import Listener
from pipeline.models import RunState
from pipeline.runtime import Runtime

log = logging.getLogger(__name__)


class RunFailed(Exception):
    """The run ended `failed`: it is on the dead-letter list (`pipeline runs --state failed`)."""


class DatabaseUnreachable(Exception):
    """The run's outcome could not be recorded: the database did not answer. The run keeps
    its last recorded state, and the relay publishes it again (past its lease or due time)."""


def register_listener_tasks(app: Celery, runtime: Runtime) -> None:
    """Register a task for every discovered listener."""
    for listener in runtime.registry:
        _register(app, runtime, listener)


def _register(app: Celery, runtime: Runtime, listener: Listener) -> None:
    def run_listener(task: Task[Any, Any], run_id: int) -> str | None:
        try:
            outcome = runtime.runner.execute(run_id)
        except DBAPIError as exc:
            reason = (str(exc.orig).strip().splitlines() or [type(exc.orig).__name__])[0]
            log.warning(
                "run %s (%s): database error (%s); the relay publishes the run again",
                run_id,
                listener.name,
                reason,
            )
            raise DatabaseUnreachable(f"run {run_id} ({listener.name}): {reason}") from None
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
        throws=(RunFailed, DatabaseUnreachable),  # logged above, without Celery's traceback
        max_retries=None,  # attempts are counted in the database, per listener policy
    )(run_listener)
