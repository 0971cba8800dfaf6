"""The events pages: the filtered list with each event's runs, and one event whole."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Connection, or_, select

from pipeline.console.filters import MAX_ID, EventFilter, Page
from pipeline.console.queries.paging import Listing, fetch_page, listing
from pipeline.errors import PipelineError
from pipeline.events import parse
from pipeline.models import ListenerRun, Media, RunState, WebhookEvent

# Ids of events inserted within this of a time bound may be out of time order (the time
# is taken before the insert); the id range is widened by it and the times then checked.
ORDER_SLACK = timedelta(minutes=1)


@dataclass
class EventRow:
    id: int
    received_at: datetime
    task_id: str | None
    status: str | None
    delivery_key: str
    kind: str | None
    parse_error: str | None
    runs: list[tuple[int, str, RunState, int]] = field(default_factory=list)

    @property
    def rollup(self) -> str:
        """The event's state over its runs: what an operator asks first."""
        states = {state for _, _, state, _ in self.runs}
        if not states:
            return "unreadable" if self.parse_error else "no runs"
        if RunState.FAILED in states:
            return "some failed"
        if states <= {RunState.SUCCEEDED, RunState.SKIPPED}:
            return "all done"
        return "in flight"


EVENT_COLUMNS = (
    WebhookEvent.id,
    WebhookEvent.received_at,
    WebhookEvent.task_id,
    WebhookEvent.status,
    WebhookEvent.delivery_key,
    WebhookEvent.kind,
    WebhookEvent.parse_error,
)


def events(conn: Connection, chosen: EventFilter, page: Page) -> Listing[EventRow]:
    conditions = _event_conditions(conn, chosen)
    query = select(*EVENT_COLUMNS).where(*conditions)
    rows = [EventRow(*row) for row in fetch_page(conn, query, WebhookEvent.id, page)]  # type: ignore[arg-type]
    found = listing(conn, rows, select(WebhookEvent.id).where(*conditions), WebhookEvent.id)
    attach_runs(conn, found.rows)
    return found


def _event_conditions(conn: Connection, chosen: EventFilter) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = []
    if chosen.query:
        conditions.append(_matches(conn, chosen.query))
    if chosen.status:
        conditions.append(WebhookEvent.status == chosen.status)
    if chosen.since is not None:
        conditions.append(WebhookEvent.received_at >= chosen.since)
        first = conn.execute(
            select(WebhookEvent.id)
            .where(WebhookEvent.received_at >= chosen.since - ORDER_SLACK)
            .order_by(WebhookEvent.received_at)
            .limit(1)
        ).scalar()
        conditions.append(WebhookEvent.id >= (first if first is not None else MAX_ID))
    if chosen.until is not None:
        conditions.append(WebhookEvent.received_at < chosen.until)
        last = conn.execute(
            select(WebhookEvent.id)
            .where(WebhookEvent.received_at < chosen.until + ORDER_SLACK)
            .order_by(WebhookEvent.received_at.desc())
            .limit(1)
        ).scalar()
        conditions.append(WebhookEvent.id <= (last if last is not None else 0))
    return conditions


def _matches(conn: Connection, query: str) -> ColumnElement[bool]:
    """Events a search box's text names: by Ittybit task id, delivery (`evt_`) id, or, for
    a number, by event id and by media id (the tasks of that media)."""
    found: list[ColumnElement[bool]] = [
        WebhookEvent.task_id == query,
        WebhookEvent.delivery_key == query,
    ]
    if query.isdigit() and int(query) <= MAX_ID:
        found.append(WebhookEvent.id == int(query))
        tasks = conn.execute(
            select(Media.task_id, Media.thumbnail_task_id).where(Media.id == int(query))
        ).first()
        named = [task for task in tasks or () if task]
        if named:
            found.append(WebhookEvent.task_id.in_(named))
    return or_(*found)


def attach_runs(conn: Connection, rows: Sequence[EventRow]) -> None:
    by_id = {row.id: row for row in rows}
    if not by_id:
        return
    for run_id, event_id, listener, state, attempts in conn.execute(
        select(
            ListenerRun.id,
            ListenerRun.event_id,
            ListenerRun.listener,
            ListenerRun.state,
            ListenerRun.attempts,
        )
        .where(ListenerRun.event_id.in_(list(by_id)))
        .order_by(ListenerRun.listener)
    ):
        by_id[event_id].runs.append((run_id, listener, state, attempts))


@dataclass
class EventDetail:
    row: EventRow
    signature_valid: bool
    body: str  # pretty JSON when it is JSON, else the text as received
    normalised: str | None  # the Event we read from it, as JSON; None when unreadable
    runs: list[Any]  # ListenerRun rows
    media_id: int | None


def event(conn: Connection, event_id: int) -> EventDetail | None:
    if event_id > MAX_ID:
        return None
    found = conn.execute(
        select(*EVENT_COLUMNS, WebhookEvent.signature_valid, WebhookEvent.raw_body).where(
            WebhookEvent.id == event_id
        )
    ).first()
    if found is None:
        return None
    row = EventRow(*found[: len(EVENT_COLUMNS)])  # type: ignore[arg-type]
    raw: bytes = found.raw_body
    runs = list(
        conn.execute(
            select(ListenerRun).where(ListenerRun.event_id == event_id).order_by(ListenerRun.id)
        ).all()
    )
    row.runs = [(r.id, r.listener, r.state, r.attempts) for r in runs]
    media = None
    if row.task_id:
        media = conn.execute(
            select(Media.id).where(
                or_(Media.task_id == row.task_id, Media.thumbnail_task_id == row.task_id)
            )
        ).scalar()
    return EventDetail(
        row, bool(found.signature_valid), _pretty(raw), _normalised(raw), runs, media
    )


def _pretty(raw: bytes) -> str:
    text = raw.decode("utf-8", errors="replace")
    try:
        return json.dumps(json.loads(text), indent=2, ensure_ascii=False)
    except (ValueError, RecursionError):
        return text


def _normalised(raw: bytes) -> str | None:
    try:
        read = parse(raw)
    except PipelineError:
        return None
    return json.dumps(dataclasses.asdict(read), indent=2, default=str, ensure_ascii=False)
