"""The overview page: runs by listener and state, the hour's webhooks by minute, receipt
to done over the newest events, the oldest waiting run."""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Connection, case, func, select

from pipeline.metrics import OUTCOMES
from pipeline.models import ListenerRun, RunState, WebhookEvent, WebhookMinute, utcnow

LATENCY_SAMPLE = 500  # newest events whose receipt-to-done times the overview reports
CHART_MINUTES = 60
CURRENT = (RunState.PENDING, RunState.RUNNING, RunState.RETRYING, RunState.FAILED)
RECENT = (RunState.SUCCEEDED, RunState.SKIPPED)


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
