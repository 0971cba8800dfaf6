"""Retention: finished webhook events and their runs, deleted once they are old enough.

An event is *finished* when every run it has is succeeded, skipped or failed (one that
has a pending, running or retrying run is never touched, however old). A finished event
is kept RETAIN_SUCCEEDED_DAYS after it was received, or RETAIN_FAILED_DAYS when it is a
dead letter (a run failed) or was unreadable: dead letters stay visible longer, for
`pipeline runs --state failed` and replay. The app's own rows (media, notifications)
are never touched.

Deletes go in batches of `batch` events, each its own short transaction, walking the
primary key forward: no lock is held for longer than one batch, so the webhook keeps
its speed while a million rows go.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, Engine, and_, delete, exists, func, not_, or_, select

from pipeline.db import read_only
from pipeline.models import FINISHED, ListenerRun, RunState, WebhookEvent, utcnow

BATCH = 500


@dataclass(frozen=True)
class Cutoffs:
    succeeded: datetime  # finished events received before this go
    failed: datetime  # ... and dead letters before this

    @classmethod
    def of(cls, succeeded_days: float, failed_days: float, now: datetime | None = None) -> Cutoffs:
        now = now or utcnow()
        return cls(now - timedelta(days=succeeded_days), now - timedelta(days=failed_days))


@dataclass
class Pruned:
    events: int = 0
    runs: int = 0


def _runs_of_event(*conditions: ColumnElement[bool]) -> ColumnElement[bool]:
    return exists().where(ListenerRun.event_id == WebhookEvent.id, *conditions)


def _expired(cutoffs: Cutoffs) -> ColumnElement[bool]:
    unfinished = _runs_of_event(ListenerRun.state.not_in(FINISHED))
    dead_letter = or_(
        WebhookEvent.parse_error.is_not(None),
        _runs_of_event(ListenerRun.state == RunState.FAILED),
    )
    old_enough = or_(
        WebhookEvent.received_at < min(cutoffs.succeeded, cutoffs.failed),
        and_(WebhookEvent.received_at < cutoffs.succeeded, not_(dead_letter)),
    )
    return and_(old_enough, not_(unfinished))


def count(engine: Engine, cutoffs: Cutoffs) -> Pruned:
    """What `prune` would delete now (`--dry-run`, and the progress bar's total)."""
    expired = select(WebhookEvent.id).where(_expired(cutoffs)).subquery()
    with read_only(engine).connect() as conn:
        events = conn.execute(select(func.count()).select_from(expired)).scalar_one()
        runs = conn.execute(
            select(func.count()).where(ListenerRun.event_id.in_(select(expired.c.id)))
        ).scalar_one()
    return Pruned(events, runs)


def prune(
    engine: Engine,
    cutoffs: Cutoffs,
    batch: int = BATCH,
    progress: Callable[[Pruned], None] | None = None,
) -> Pruned:
    """Delete expired events and their runs, `batch` events per transaction."""
    done = Pruned()
    after = 0
    expired = _expired(cutoffs)
    while True:
        with engine.begin() as conn:
            ids = list(
                conn.execute(
                    select(WebhookEvent.id)
                    .where(WebhookEvent.id > after, expired)
                    .order_by(WebhookEvent.id)
                    .limit(batch)
                ).scalars()
            )
            if not ids:
                return done
            # Checked again as it is deleted: a run replayed meanwhile keeps its event.
            runs = conn.execute(
                delete(ListenerRun).where(
                    ListenerRun.event_id.in_(
                        select(WebhookEvent.id).where(WebhookEvent.id.in_(ids), expired)
                    )
                )
            ).rowcount
            events = conn.execute(
                delete(WebhookEvent).where(WebhookEvent.id.in_(ids), not_(_runs_of_event()))
            ).rowcount
        after = ids[-1]
        done.runs += runs
        done.events += events
        if progress is not None:
            progress(done)
