"""Retention: finished webhook events and their runs, deleted once they are old enough.

An event is *finished* when every run it has is succeeded, skipped or failed (one that
has a pending, running or retrying run is never touched, however old). A finished event
is kept RETAIN_SUCCEEDED_DAYS after it was received, or RETAIN_FAILED_DAYS when it is a
dead letter (a run failed) or was unreadable: dead letters stay visible longer, for
`pipeline runs --state failed` and replay. The app's own rows (media, notifications)
are never touched.

The pass walks the events' primary key in batches of `batch` old events; each batch's
runs are read by their event ids (the runs' unique index), so a batch costs the same on
a table of ten thousand rows or ten million, and each batch is its own short
transaction. The pass then pauses three times as long as the batch took, so it takes a
quarter of one core at most and the webhook keeps the rest of the machine; on SQLite at
least 0.1 s, so the webhook's writers, sleeping in SQLite's busy handler, get the one
write lock in between.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, Connection, Engine, delete, func, select

from pipeline.db import read_only
from pipeline.models import (
    FINISHED,
    ListenerRun,
    RunState,
    WebhookEvent,
    WebhookMinute,
    utcnow,
)

BATCH = 500
MINUTES_KEPT = timedelta(days=1)  # webhook_minutes: the console charts the last hour
DUTY = 0.25  # the share of the time the pass works; it sleeps the rest
SQLITE_PAUSE = 0.1  # seconds, at least, between two batches on SQLite


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
    looked_at: int = 0  # old enough events read (the progress bar's position)


def _old_enough(cutoffs: Cutoffs) -> ColumnElement[bool]:
    return WebhookEvent.received_at < max(cutoffs.succeeded, cutoffs.failed)


def old_enough(engine: Engine, cutoffs: Cutoffs) -> int:
    """How many events are old enough to go, finished or not (one scan: the progress
    bar's total, an upper bound of what `prune` deletes)."""
    with read_only(engine).connect() as conn:
        query = select(func.count()).select_from(WebhookEvent).where(_old_enough(cutoffs))
        return int(conn.execute(query).scalar_one())


def _expired(
    conn: Connection, cutoffs: Cutoffs, after: int, batch: int
) -> tuple[list[int], list[int]]:
    """Of the next `batch` events old enough to go (ids after `after`): the expired ones,
    and every one looked at (none: the walk is over)."""
    candidates = conn.execute(
        select(WebhookEvent.id, WebhookEvent.received_at, WebhookEvent.parse_error)
        .where(WebhookEvent.id > after, _old_enough(cutoffs))
        .order_by(WebhookEvent.id)
        .limit(batch)
    ).all()
    ids = [row.id for row in candidates]
    if not ids:
        return [], []
    states = conn.execute(
        select(ListenerRun.event_id, ListenerRun.state).where(ListenerRun.event_id.in_(ids))
    ).all()
    unfinished = {event for event, state in states if state not in FINISHED}
    failed = {event for event, state in states if state is RunState.FAILED}
    expired = []
    for row in candidates:
        dead_letter = row.parse_error is not None or row.id in failed
        limit = cutoffs.failed if dead_letter else cutoffs.succeeded
        if row.id not in unfinished and row.received_at < limit:
            expired.append(row.id)
    return expired, ids


def count(engine: Engine, cutoffs: Cutoffs, batch: int = 5000) -> Pruned:
    """What `prune` would delete now (`--dry-run`, and the progress bar's total): the
    same walk, reading only."""
    found = Pruned()
    after = 0
    with read_only(engine).connect() as conn:
        while True:
            ids, looked = _expired(conn, cutoffs, after, batch)
            if ids:
                found.events += len(ids)
                found.runs += len(
                    conn.execute(select(ListenerRun.id).where(ListenerRun.event_id.in_(ids))).all()
                )
            conn.rollback()  # one short read transaction per batch
            if not looked:
                return found
            found.looked_at += len(looked)
            after = looked[-1]


def prune(
    engine: Engine,
    cutoffs: Cutoffs,
    batch: int = BATCH,
    progress: Callable[[Pruned], None] | None = None,
) -> Pruned:
    """Delete expired events and their runs, `batch` events looked at per transaction."""
    done = Pruned()
    after = 0
    sqlite = engine.dialect.name == "sqlite"
    while True:
        started = time.monotonic()
        with engine.begin() as conn:
            # Read and deleted in one transaction: a run replayed meanwhile keeps its event
            # (PostgreSQL: the runs are locked as they are deleted; SQLite: one writer).
            ids, looked = _expired(conn, cutoffs, after, batch)
            if ids and not sqlite:
                conn.execute(
                    select(ListenerRun.id).where(ListenerRun.event_id.in_(ids)).with_for_update()
                )
                ids = _still_finished(conn, ids)
            if ids:
                runs = conn.execute(
                    delete(ListenerRun).where(ListenerRun.event_id.in_(ids))
                ).rowcount
                events = conn.execute(delete(WebhookEvent).where(WebhookEvent.id.in_(ids))).rowcount
                done.runs += runs
                done.events += events
        if not looked:
            _forget_old_minutes(engine)
            return done
        done.looked_at += len(looked)
        after = looked[-1]
        if progress is not None:
            progress(done)
        pause = (time.monotonic() - started) * (1 / DUTY - 1)
        time.sleep(max(pause, SQLITE_PAUSE) if sqlite else pause)


def _still_finished(conn: Connection, ids: list[int]) -> list[int]:
    """Those of `ids` with every run still finished now that the runs are locked (a replay
    may have put one back in line since they were read)."""
    states = conn.execute(
        select(ListenerRun.event_id, ListenerRun.state).where(ListenerRun.event_id.in_(ids))
    ).all()
    unfinished = {event for event, state in states if state not in FINISHED}
    return [event for event in ids if event not in unfinished]


def _forget_old_minutes(engine: Engine) -> None:
    """The per-minute webhook counts past MINUTES_KEPT (a row per outcome and minute)."""
    with engine.begin() as conn:
        conn.execute(delete(WebhookMinute).where(WebhookMinute.minute < utcnow() - MINUTES_KEPT))
