"""What the console's pages read from the ledger. Each page is a handful of indexed
queries whose cost does not grow with the ledger: lists are keyset pages of PAGE_SIZE,
counts read only the unfinished runs, the dead letters and the last hour
(ix_listener_runs_state_listener_finished_at), and a time filter becomes a primary-key
range (ix_webhook_events_received_at)."""

from __future__ import annotations

import dataclasses
import json
import statistics
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Generic, TypeVar

from sqlalchemy import ColumnElement, Connection, Select, case, func, or_, select

from pipeline.console.filters import MAX_ID, DeadLetterFilter, EventFilter, Page
from pipeline.errors import PipelineError
from pipeline.events import parse
from pipeline.metrics import OUTCOMES
from pipeline.models import (
    ListenerRun,
    Media,
    Notification,
    RunState,
    WebhookEvent,
    WebhookMinute,
    utcnow,
)

PAGE_SIZE = 50
LATENCY_SAMPLE = 500  # newest events whose receipt-to-done times the overview reports
CHART_MINUTES = 60
# Ids of events inserted within this of a time bound may be out of time order (the time
# is taken before the insert); the id range is widened by it and the times then checked.
ORDER_SLACK = timedelta(minutes=1)
CURRENT = (RunState.PENDING, RunState.RUNNING, RunState.RETRYING, RunState.FAILED)
RECENT = (RunState.SUCCEEDED, RunState.SKIPPED)
T = TypeVar("T")


# --- overview ---------------------------------------------------------------------------------


@dataclass
class Overview:
    # listener -> state -> runs: waiting, running, retrying and failed runs now; succeeded
    # and skipped ones over the last hour.
    runs: dict[str, dict[str, int]]
    minutes: list[tuple[datetime, dict[str, int]]]  # the last CHART_MINUTES, oldest first
    outcomes: dict[str, int]  # webhooks over the chart's hour, by outcome
    done_p50: float | None
    done_p95: float | None
    done_sample: int
    oldest_pending: float | None  # seconds
    dead_letters: int
    backlog: int | None = None  # messages in the broker's queue; None: it cannot say


def overview(conn: Connection, listeners: Sequence[str]) -> Overview:
    now = utcnow()
    hour_ago = now - timedelta(hours=1)
    runs: dict[str, dict[str, int]] = {name: dict.fromkeys(RunState, 0) for name in listeners}
    counted = conn.execute(
        select(ListenerRun.listener, ListenerRun.state, func.count())
        .where(ListenerRun.state.in_(CURRENT))
        .group_by(ListenerRun.listener, ListenerRun.state)
    ).all()
    recent = conn.execute(
        select(ListenerRun.listener, ListenerRun.state, func.count())
        .where(
            ListenerRun.state.in_(RECENT),
            # Naming the listeners lets the index reach the hour's entries of each one
            # directly: without it every finished run's entry is read (0.4 s at 3M runs).
            ListenerRun.listener.in_(listeners),
            ListenerRun.finished_at >= hour_ago,
        )
        .group_by(ListenerRun.listener, ListenerRun.state)
    ).all()
    for listener, state, n in [*counted, *recent]:
        runs.setdefault(listener, dict.fromkeys(RunState, 0))[state] = n
    oldest = conn.execute(
        select(func.min(ListenerRun.updated_at)).where(
            ListenerRun.state.in_((RunState.PENDING, RunState.RETRYING))
        )
    ).scalar()
    p50, p95, sample = _done_times(conn)
    minutes, outcomes = _minutes(conn, now)
    return Overview(
        runs=runs,
        minutes=minutes,
        outcomes=outcomes,
        done_p50=p50,
        done_p95=p95,
        done_sample=sample,
        oldest_pending=None if oldest is None else max(0.0, (now - oldest).total_seconds()),
        dead_letters=sum(states[RunState.FAILED] for states in runs.values()),
    )


def _done_times(conn: Connection) -> tuple[float | None, float | None, int]:
    """Receipt to last run finished, over the newest LATENCY_SAMPLE events all done."""
    newest = (
        select(WebhookEvent.id, WebhookEvent.received_at)
        .order_by(WebhookEvent.id.desc())
        .limit(LATENCY_SAMPLE)
        .subquery()
    )
    rows = conn.execute(
        select(
            newest.c.received_at,
            func.max(ListenerRun.finished_at),
            func.sum(case((ListenerRun.finished_at.is_(None), 1), else_=0)),
        )
        .join(ListenerRun, ListenerRun.event_id == newest.c.id)
        .group_by(newest.c.id, newest.c.received_at)
    ).all()
    times = sorted(
        max(0.0, (done - received).total_seconds())
        for received, done, unfinished in rows
        if not unfinished and done is not None
    )
    if not times:
        return None, None, 0
    if len(times) == 1:
        return times[0], times[0], 1
    cuts = statistics.quantiles(times, n=100, method="inclusive")
    return cuts[49], cuts[94], len(times)


def _minutes(
    conn: Connection, now: datetime
) -> tuple[list[tuple[datetime, dict[str, int]]], dict[str, int]]:
    last = now.replace(second=0, microsecond=0)
    first = last - timedelta(minutes=CHART_MINUTES - 1)
    counts: dict[datetime, dict[str, int]] = defaultdict(dict)
    totals = dict.fromkeys(OUTCOMES, 0)
    for minute, outcome, n in conn.execute(
        select(WebhookMinute.minute, WebhookMinute.outcome, WebhookMinute.count).where(
            WebhookMinute.minute >= first
        )
    ):
        counts[minute][outcome] = counts[minute].get(outcome, 0) + n
        totals[outcome] = totals.get(outcome, 0) + n
    minutes = [first + timedelta(minutes=i) for i in range(CHART_MINUTES)]
    return [(m, counts.get(m, {})) for m in minutes], totals


# --- events -----------------------------------------------------------------------------------


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


@dataclass
class Listing(Generic[T]):
    rows: list[T]
    newer: int | None  # `after` for the page of newer rows, None: this is the newest
    older: int | None  # `before` for the page of older rows, None: this is the oldest


_EVENT_COLUMNS = (
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
    query = select(*_EVENT_COLUMNS).where(*conditions)
    rows = [EventRow(*row) for row in _page(conn, query, WebhookEvent.id, page)]  # type: ignore[arg-type]
    listing = _listing(conn, rows, select(WebhookEvent.id).where(*conditions), WebhookEvent.id)
    _attach_runs(conn, listing.rows)
    return listing


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


def _page(conn: Connection, query: Select[Any], key: Any, page: Page) -> list[Any]:
    """One page, newest first, of `query` ordered by `key` (a row id)."""
    if page.after is not None:
        rows = conn.execute(
            query.where(key > page.after).order_by(key.asc()).limit(PAGE_SIZE)
        ).all()
        return list(reversed(rows))
    if page.before is not None:
        query = query.where(key < page.before)
    return list(conn.execute(query.order_by(key.desc()).limit(PAGE_SIZE)).all())


def _listing(conn: Connection, rows: list[T], ids: Select[Any], key: Any) -> Listing[T]:
    """The page's links: whether a row lies beyond each end (one indexed probe each)."""
    if not rows:
        return Listing(rows, None, None)
    top, bottom = rows[0].id, rows[-1].id  # type: ignore[attr-defined]
    newer = conn.execute(ids.where(key > top).limit(1)).first()
    older = conn.execute(ids.where(key < bottom).limit(1)).first()
    return Listing(rows, top if newer else None, bottom if older else None)


def _attach_runs(conn: Connection, rows: Sequence[EventRow]) -> None:
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


# --- one event --------------------------------------------------------------------------------


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
        select(*_EVENT_COLUMNS, WebhookEvent.signature_valid, WebhookEvent.raw_body).where(
            WebhookEvent.id == event_id
        )
    ).first()
    if found is None:
        return None
    row = EventRow(*found[: len(_EVENT_COLUMNS)])  # type: ignore[arg-type]
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


# --- dead letters -----------------------------------------------------------------------------


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
    rows = [DeadLetter(*row) for row in _page(conn, query, ListenerRun.id, page)]  # type: ignore[arg-type]
    return _listing(conn, rows, select(ListenerRun.id).where(*conditions), ListenerRun.id)


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


# --- media ------------------------------------------------------------------------------------


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
                select(*_EVENT_COLUMNS)
                .where(WebhookEvent.task_id.in_(tasks))
                .order_by(WebhookEvent.id)
                .limit(PAGE_SIZE * 4)
            )
        ]
        _attach_runs(conn, rows)
    notes = list(
        conn.execute(
            select(Notification).where(Notification.media_id == media_id).order_by(Notification.id)
        )
    )
    return Timeline(record, rows, notes)
