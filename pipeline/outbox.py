"""The outbox: `listener_runs` is the record, the broker only the fast path to a worker.

`Publisher.publish` sends one Celery message per run (its id only) right after the
webhook's commit; a publish that fails is logged and the run waits in the database.
`relay_once` (the relay process, every RELAY_INTERVAL) publishes what is due again: runs
whose message was lost and runs whose worker died. `replay` puts dead letters back.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import Any, NoReturn

import redis
from celery import Celery
from kombu.utils.functional import retry_over_time
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from pipeline import metrics, runs
from pipeline.fast_publish import RedisFastPath, ShapeChanged, unsupported_by
from pipeline.listener import task_name

log = logging.getLogger(__name__)


class Publisher:
    """Sends (run_id, listener) pairs to their tasks; one per process.

    With `fast`, through the Redis fast path where it applies (fast_publish.py), else
    through Celery's own producer (`send_task`), several messages per round trip. After a
    failure it rests a few seconds instead of making every request wait on a broker that
    is down or hung.
    """

    def __init__(self, celery: Celery, *, fast: bool = False, rest_after_failure: float = 5.0):
        self.celery = celery
        self.fast = fast
        self.rest_after_failure = rest_after_failure
        self._resting_until = 0.0
        self._fast_path: RedisFastPath | None = None
        self._policy: dict[str, Any] | None = None

    def publish(self, batch: Iterable[tuple[int, str]]) -> int:
        """Publish every run, or none on a broker failure; returns how many were sent."""
        pairs = [(run_id, task_name(listener)) for run_id, listener in batch]
        if not pairs or time.monotonic() < self._resting_until:
            return 0
        try:
            fast = self._fast()
            if fast is not None:
                try:
                    self._push(fast, pairs)
                    return len(pairs)
                except ShapeChanged as exc:
                    log.error("publishing through send_task from now on: %s", exc)
                    self.fast = False
            self._send(pairs)
        except Exception as exc:
            self._resting_until = time.monotonic() + self.rest_after_failure
            log.warning(
                "could not publish %d run(s) (%s: %s); the relay will publish them",
                len(pairs),
                type(exc).__name__,
                exc,
            )
            return 0
        return len(pairs)

    def backlog(self) -> int | None:
        """Messages waiting in the default queue, or None when the broker cannot say."""
        queue = str(self.celery.conf.task_default_queue)
        try:
            fast = self._fast()
            if fast is not None:
                return fast.backlog(queue)
            with self.celery.connection_for_write() as conn:
                declared = conn.default_channel.queue_declare(queue=queue, passive=True)
                return int(declared.message_count)
        except Exception:
            return None

    def after_fork(self) -> None:
        """A forked child opens its own broker connection and builds its own messages."""
        self._fast_path = None

    def _fast(self) -> RedisFastPath | None:
        if not self.fast:
            return None
        if self._fast_path is None:
            reason = unsupported_by(self.celery)
            if reason:
                log.info("publishing through send_task: %s", reason)
                self.fast = False
                return None
            self._fast_path = RedisFastPath(self.celery)
        return self._fast_path

    def _send(self, pairs: Sequence[tuple[int, str]]) -> None:
        with self.celery.producer_or_acquire() as producer, producer.batch():
            for run_id, name in pairs:
                self.celery.send_task(name, args=[run_id], producer=producer)

    def _push(self, fast: RedisFastPath, pairs: Sequence[tuple[int, str]]) -> None:
        """`fast.push`, retried as Celery's task_publish_retry(_policy) says send_task is
        when the broker refuses or drops the connection. A timeout is not retried: a hung
        broker would hold the web worker once more per retry."""
        if self._policy is None:
            conf = self.celery.conf
            policy = conf.task_publish_retry_policy or {}
            self._policy = {
                "max_retries": policy.get("max_retries", 3) if conf.task_publish_retry else 0,
                "interval_start": policy.get("interval_start", 0),
                "interval_step": policy.get("interval_step", 0.2),
                "interval_max": policy.get("interval_max", 1),
            }
        retry_over_time(  # type: ignore[no-untyped-call]
            fast.push, redis.ConnectionError, args=(pairs,), **self._policy
        )


def relay_once(engine: Engine, publisher: Publisher, redeliver_after: float) -> int:
    """Publish every run that is due; returns how many were published.

    While the broker holds a backlog, a waiting run's message is most likely in it: only
    runs whose worker died are taken back then, the rest once the queue drains, so that a
    backlog is never multiplied.
    """
    due = runs.take_due(engine, redeliver_after, waiting=not publisher.backlog())
    published = publisher.publish(due)
    if published:
        metrics.relay_published(published)
    return published


def run_forever(
    engine: Engine,
    publisher: Publisher,
    redeliver_after: float,
    interval: float,
    chores: Sequence[tuple[Callable[[], None], float]] = (),
) -> NoReturn:
    """The relay process: a pass every `interval` seconds, outliving database outages;
    each chore (reconciliation, retention) every its own seconds (0: never)."""
    due = [time.monotonic() + min(every, 60.0) for _, every in chores]
    while True:
        try:
            published = relay_once(engine, publisher, redeliver_after)
            if published:
                log.info("relay published %d run(s)", published)
            for i, (chore, every) in enumerate(chores):
                if every and time.monotonic() >= due[i]:
                    due[i] = time.monotonic() + every
                    chore()
        except SQLAlchemyError as exc:
            # The runs wait in the database; the first pass after it is back publishes them.
            log.warning("relay: database unavailable (%s); trying again", type(exc).__name__)
        time.sleep(interval)


def replay(
    engine: Engine,
    publisher: Publisher,
    redeliver_after: float,
    *,
    run_ids: Sequence[int] = (),
    listener: str | None = None,
    since: datetime | None = None,
    all_failed: bool = False,
) -> list[int]:
    """Put failed/skipped runs back in line with a fresh attempt count, and publish them."""
    replayed = runs.replay(
        engine,
        redeliver_after,
        run_ids=run_ids,
        listener=listener,
        since=since,
        all_failed=all_failed,
    )
    publisher.publish(replayed)
    return [run_id for run_id, _ in replayed]
