"""The dead letters: failed runs by listener, error text and time, their count and ids
for a confirmed replay."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, Connection, func, select

from pipeline.console.filters import DeadLetterFilter, Page
from pipeline.console.queries.paging import Listing, fetch_page, listing
from pipeline.models import ListenerRun, RunState, WebhookEvent


@dataclass
class DeadLetter:
    id: int
    event_id: int
    listener: str
    attempts: int
    last_error: str | None
    finished_at: datetime | None
    task_id: str | None


def _dead_conditions(chosen: DeadLetterFilter) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = [ListenerRun.state == RunState.FAILED]
    if chosen.listener:
        conditions.append(ListenerRun.listener == chosen.listener)
    if chosen.error:
        conditions.append(ListenerRun.last_error.icontains(chosen.error, autoescape=True))
    if chosen.since is not None:
        conditions.append(ListenerRun.finished_at >= chosen.since)
    if chosen.until is not None:
        conditions.append(ListenerRun.finished_at < chosen.until)
    return conditions


def dead_letters(conn: Connection, chosen: DeadLetterFilter, page: Page) -> Listing[DeadLetter]:
    conditions = _dead_conditions(chosen)
    query = (
        select(
            ListenerRun.id,
            ListenerRun.event_id,
            ListenerRun.listener,
            ListenerRun.attempts,
            ListenerRun.last_error,
            ListenerRun.finished_at,
            WebhookEvent.task_id,
        )
        .join(WebhookEvent, WebhookEvent.id == ListenerRun.event_id)
        .where(*conditions)
    )
    rows = [DeadLetter(*row) for row in fetch_page(conn, query, ListenerRun.id, page)]  # type: ignore[arg-type]
    return listing(conn, rows, select(ListenerRun.id).where(*conditions), ListenerRun.id)


def dead_letter_count(conn: Connection, chosen: DeadLetterFilter) -> tuple[int, int]:
    """How many runs the filter names now, and the newest one's id (the bound a confirmed
    "Replay all" keeps to, so runs failing after the count are not replayed unseen)."""
    count, newest = conn.execute(
        select(func.count(), func.max(ListenerRun.id)).where(*_dead_conditions(chosen))
    ).one()
    return int(count), int(newest or 0)


def dead_letter_ids(conn: Connection, chosen: DeadLetterFilter, upto: int) -> list[int]:
    query = select(ListenerRun.id).where(*_dead_conditions(chosen), ListenerRun.id <= upto)
    return list(conn.execute(query.order_by(ListenerRun.id)).scalars())
