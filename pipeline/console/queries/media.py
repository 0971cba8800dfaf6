"""One media's timeline: its record, its jobs' deliveries with their runs, its notifications."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, select

from pipeline.console.filters import MAX_ID
from pipeline.console.queries.events import EVENT_COLUMNS, EventRow, attach_runs
from pipeline.console.queries.paging import PAGE_SIZE
from pipeline.models import Media, Notification, WebhookEvent


@dataclass
class Timeline:
    media: Any  # the Media row
    events: list[EventRow]  # its jobs' deliveries, oldest first, with their runs
    notifications: list[Any]  # Notification rows


def media(conn: Connection, media_id: int) -> Timeline | None:
    if media_id > MAX_ID:
        return None
    found = conn.execute(select(Media).where(Media.id == media_id)).first()
    if found is None:
        return None
    record = found
    tasks = [task for task in (record.task_id, record.thumbnail_task_id) if task]
    rows: list[EventRow] = []
    if tasks:
        rows = [
            EventRow(*row)
            for row in conn.execute(
                select(*EVENT_COLUMNS)
                .where(WebhookEvent.task_id.in_(tasks))
                .order_by(WebhookEvent.id)
                .limit(PAGE_SIZE * 4)
            )
        ]
        attach_runs(conn, rows)
    notes = list(
        conn.execute(
            select(Notification).where(Notification.media_id == media_id).order_by(Notification.id)
        )
    )
    return Timeline(record, rows, notes)
