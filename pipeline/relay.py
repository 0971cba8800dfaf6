"""The relay: the database is the outbox, the broker only the fast path.

It re-publishes runs left `pending`/`retrying` past their due time (a publish that failed
or a message a broker lost) and takes back `running` runs whose lease expired (a worker
died). `replay` puts finished runs back in line on purpose.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, Engine, and_, case, or_, select, update

from pipeline.dispatch import Publisher
from pipeline.models import ListenerRun, utcnow

log = logging.getLogger(__name__)

REPLAYABLE = ("failed", "skipped")


def relay_once(
    engine: Engine, publisher: Publisher, redeliver_after: float, limit: int = 500
) -> int:
    """Publish every run that is due; returns how many were published.

    While the broker holds a backlog, a waiting run's message is most likely in it: only
    runs whose worker died are taken back then, and the rest once the queue drains. A
    copy per run per pass would otherwise multiply a backlog (the claim would turn the
    copies away, but workers would spend their time doing so).
    """
    now = utcnow()
    lease_expired = and_(ListenerRun.state == "running", ListenerRun.lease_expires_at < now)
    waiting = and_(ListenerRun.state.in_(("pending", "retrying")), ListenerRun.due_at <= now)
    due = lease_expired if publisher.backlog() else or_(waiting, lease_expired)
    query = (
        select(ListenerRun.id, ListenerRun.listener)
        .where(due)
        .order_by(ListenerRun.due_at)
        .limit(limit)
    )
    if engine.dialect.name == "postgresql":
        # Several relays at once each take different rows (SQLite: BEGIN IMMEDIATE).
        query = query.with_for_update(skip_locked=True)
    with engine.begin() as conn:
        rows = conn.execute(query).all()
        if not rows:
            return 0
        # A run whose lease expired goes back to `retrying`: its old holder, if it still
        # lives, can no longer record an outcome (see runner._record).
        conn.execute(
            update(ListenerRun)
            .where(ListenerRun.id.in_([r.id for r in rows]))
            .values(
                state=case((ListenerRun.state == "running", "retrying"), else_=ListenerRun.state),
                due_at=now + timedelta(seconds=redeliver_after),
                lease_expires_at=None,
                updated_at=now,
            )
        )
    return publisher.publish([(r.id, r.listener) for r in rows])


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
    """Put failed/skipped runs back to `pending` with a fresh attempt count, and publish.

    Only the chosen runs move: the event's other listeners are left as they are.
    """
    conditions: list[ColumnElement[bool]] = [ListenerRun.state.in_(REPLAYABLE)]
    if run_ids:
        conditions.append(ListenerRun.id.in_(list(run_ids)))
    elif not all_failed:
        return []
    if all_failed:
        conditions.append(ListenerRun.state == "failed")
    if listener:
        conditions.append(ListenerRun.listener == listener)
    if since:
        conditions.append(ListenerRun.updated_at >= since)
    now = utcnow()
    with engine.begin() as conn:
        rows = conn.execute(
            update(ListenerRun)
            .where(*conditions)
            .values(
                state="pending",
                attempts=0,
                due_at=now + timedelta(seconds=redeliver_after),
                finished_at=None,
                updated_at=now,
            )
            .returning(ListenerRun.id, ListenerRun.listener)
        ).all()
    publisher.publish([(r.id, r.listener) for r in rows])
    return sorted(r.id for r in rows)
