"""Publishing runs to Celery: one message per run, carrying only the run id.

A publish that fails is logged and forgotten: the run stays in the database and the relay
publishes it when it falls due. The broker is the fast path, never the record.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from celery import Celery

from pipeline.listener import task_name

log = logging.getLogger(__name__)


def publish(celery: Celery, runs: Iterable[tuple[int, str]]) -> int:
    """Send each (run_id, listener) to its task; returns how many were sent."""
    sent = 0
    for run_id, listener in runs:
        try:
            celery.send_task(task_name(listener), args=[run_id])
            sent += 1
        except Exception as exc:
            # Broker down or hung: stop here (each try costs its timeout); the relay
            # publishes these runs when they fall due.
            log.warning(
                "could not publish run %s (%s): %s; the relay will",
                run_id,
                listener,
                type(exc).__name__,
            )
            return sent
    return sent
