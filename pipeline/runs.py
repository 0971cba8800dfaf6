"""The listener-run state machine: every move of a `listener_runs` row, in one place.

    stored ──▶ pending ──claim──▶ running ──handled──▶ succeeded
        └────▶ failed (its wants() raised)   ├──retryable──▶ retrying ──claim──▶ running
                                             ├──permanent, or out of attempts──▶ failed
                                             ├──Skip──▶ skipped
                                             ├──lease expired (worker died), relay──▶ retrying
                                             └──worker stopping, past its grace──▶ retrying
    failed | skipped ──replay──▶ pending, attempts from 0

The attempt number is a fencing token: an outcome is recorded only while the run is still
`running` under the same attempt, so a run the relay took back records nothing for its
old holder. A `running` run's lease is short and renewed while its worker lives
(lease.py), so a dead worker's run is back in line within seconds. The statements are
built once; SQLAlchemy reuses their compiled form.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Engine,
    and_,
    bindparam,
    case,
    or_,
    select,
    update,
)

from pipeline.models import ListenerRun, RunState, RunStateType, UTCDateTime, WebhookEvent, utcnow

WAITING = (RunState.PENDING, RunState.RETRYING)
REPLAYABLE = (RunState.FAILED, RunState.SKIPPED)


def initial_state(error: str | None) -> RunState:
    """A new run waits for a worker, unless its listener's wants() raised: then it is a
    dead letter from the start, kept visible."""
    return RunState.PENDING if error is None else RunState.FAILED


# --- claim: pending | retrying | running past its lease → running --------------------------


@dataclass(frozen=True)
class Claim:
    """A run a worker now holds, with the stored event it is about."""

    run_id: int
    listener: str
    attempt: int
    event_id: int
    raw_body: bytes
    received_at: datetime


_NOW = bindparam("now", type_=UTCDateTime)
_CLAIM = (
    update(ListenerRun)
    .where(
        ListenerRun.id == bindparam("run_id"),
        or_(
            ListenerRun.state.in_(WAITING),
            (ListenerRun.state == RunState.RUNNING) & (ListenerRun.lease_expires_at < _NOW),
        ),
    )
    .values(
        state=RunState.RUNNING,
        attempts=ListenerRun.attempts + 1,
        lease_expires_at=bindparam("lease", type_=UTCDateTime),
        updated_at=_NOW,
    )
    .returning(ListenerRun.listener, ListenerRun.attempts, ListenerRun.event_id)
)
_EVENT = select(WebhookEvent.raw_body, WebhookEvent.received_at).where(
    WebhookEvent.id == bindparam("event_id")
)
_CLAIMED = _CLAIM.cte("claimed")
_CLAIM_WITH_EVENT = select(_CLAIMED, WebhookEvent.raw_body, WebhookEvent.received_at).join(
    WebhookEvent, WebhookEvent.id == _CLAIMED.c.event_id
)


def claim(engine: Engine, run_id: int, lease_seconds: float) -> Claim | None:
    """Take the run for one attempt (attempts + 1), committed on its own so that a worker
    that dies every time still uses its attempts up; None if it is finished or held by a
    live claim. Brings the stored event along."""
    now = utcnow()
    params = {"run_id": run_id, "now": now, "lease": now + timedelta(seconds=lease_seconds)}
    if engine.dialect.name == "postgresql":
        with engine.connect() as conn:  # one statement, its own transaction
            conn = conn.execution_options(isolation_level="AUTOCOMMIT")
            row = conn.execute(_CLAIM_WITH_EVENT, params).first()
        return None if row is None else Claim(run_id, *row)
    with engine.begin() as conn:  # SQLite has no UPDATE inside a WITH
        first = conn.execute(_CLAIM, params).first()
        if first is None:
            return None
        stored = conn.execute(_EVENT, {"event_id": first.event_id}).one()
    return Claim(run_id, *first, *stored)


# --- the outcome of an attempt: running → succeeded | retrying | failed | skipped ------------

_STILL_OURS = update(ListenerRun).where(
    ListenerRun.id == bindparam("run_id"),
    ListenerRun.state == RunState.RUNNING,
    ListenerRun.attempts == bindparam("attempt"),
)
_OUTCOME = {"state": bindparam("state", type_=RunStateType), "updated_at": _NOW}
_RECORD_RETRY = _STILL_OURS.values(
    **_OUTCOME,
    lease_expires_at=None,
    last_error=bindparam("error"),
    due_at=bindparam("due_at", type_=UTCDateTime),
)
_RECORD_END = _STILL_OURS.values(
    **_OUTCOME,
    lease_expires_at=None,
    last_error=bindparam("error"),
    finished_at=_NOW,
    result=bindparam("result", type_=ListenerRun.result.type),
)


def record(
    conn: Connection,
    claim: Claim,
    state: RunState,
    *,
    result: Any = None,
    error: str | None = None,
    due_at: datetime | None = None,
) -> bool:
    """Set the outcome of `claim`'s attempt if the run is still ours; False if it was taken
    over (then nothing is written, and the caller must roll its own writes back)."""
    params: dict[str, Any] = {
        "run_id": claim.run_id,
        "attempt": claim.attempt,
        "state": state,
        "now": utcnow(),
        "error": error,
    }
    if state is RunState.RETRYING:
        params["due_at"] = due_at
        statement = _RECORD_RETRY
    else:
        params["result"] = result
        statement = _RECORD_END
    return bool(conn.execute(statement, params).rowcount)


# --- the lease: renewed while the attempt runs (lease.py) ------------------------------------

_RENEW = _STILL_OURS.values(lease_expires_at=bindparam("lease", type_=UTCDateTime))


def renew(engine: Engine, claims: list[Claim], lease_seconds: float) -> set[int]:
    """Extend the leases of `claims` still ours to `lease_seconds` from now; the ids of
    those that were taken over (their outcome will be refused: runs.record)."""
    lease = utcnow() + timedelta(seconds=lease_seconds)
    lost = set()
    with engine.begin() as conn:
        for claim in claims:
            params = {"run_id": claim.run_id, "attempt": claim.attempt, "lease": lease}
            if not conn.execute(_RENEW, params).rowcount:
                lost.add(claim.run_id)
    return lost


def hand_back(engine: Engine, claims: Sequence[Claim]) -> list[int]:
    """Put `claims` still ours back in line at once (their worker is stopping): →
    `retrying`, due now, so the next claim takes them; their late outcomes are refused.
    The ids handed back."""
    now = utcnow()
    back = []
    with engine.begin() as conn:
        for claim in claims:
            params = {"run_id": claim.run_id, "attempt": claim.attempt, "now": now}
            if conn.execute(_HAND_BACK, params).rowcount:
                back.append(claim.run_id)
    return back


_HAND_BACK = _STILL_OURS.values(
    state=RunState.RETRYING, due_at=_NOW, lease_expires_at=None, updated_at=_NOW
)


# --- the relay: due runs back in line -------------------------------------------------------


def take_due(
    engine: Engine, redeliver_after: float, *, waiting: bool = True, limit: int = 500
) -> list[tuple[int, str]]:
    """The runs to publish again, moved so that the next pass leaves them alone for
    `redeliver_after` seconds: those whose lease expired (their worker died: → retrying)
    and, if `waiting`, pending/retrying runs past their due time (a lost message).

    Several relays at once each take different rows (PostgreSQL: SKIP LOCKED; SQLite:
    one writer at a time).
    """
    now = utcnow()
    lease_expired = and_(ListenerRun.state == RunState.RUNNING, ListenerRun.lease_expires_at < now)
    overdue = and_(ListenerRun.state.in_(WAITING), ListenerRun.due_at <= now)
    query = (
        select(ListenerRun.id, ListenerRun.listener)
        .where(or_(overdue, lease_expired) if waiting else lease_expired)
        .order_by(ListenerRun.due_at)
        .limit(limit)
    )
    if engine.dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    with engine.begin() as conn:
        rows = conn.execute(query).all()
        if rows:
            conn.execute(
                update(ListenerRun)
                .where(ListenerRun.id.in_([r.id for r in rows]))
                .values(
                    state=case(
                        (ListenerRun.state == RunState.RUNNING, RunState.RETRYING.value),
                        else_=ListenerRun.state,
                    ),
                    due_at=now + timedelta(seconds=redeliver_after),
                    lease_expires_at=None,
                    updated_at=now,
                )
            )
    return [(r.id, r.listener) for r in rows]


# --- replay: dead letters back to pending ---------------------------------------------------


def replay(
    engine: Engine,
    redeliver_after: float,
    *,
    run_ids: Sequence[int] = (),
    listener: str | None = None,
    since: datetime | None = None,
    all_failed: bool = False,
) -> list[tuple[int, str]]:
    """Put the chosen failed/skipped runs back to `pending` with a fresh attempt count:
    `run_ids`, or with `all_failed` every failed run (narrowed by `listener`, `since`).
    The event's other runs are left as they are."""
    conditions: list[ColumnElement[bool]] = [ListenerRun.state.in_(REPLAYABLE)]
    if run_ids:
        conditions.append(ListenerRun.id.in_(list(run_ids)))
    elif not all_failed:
        return []
    if all_failed:
        conditions.append(ListenerRun.state == RunState.FAILED)
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
                state=RunState.PENDING,
                attempts=0,
                due_at=now + timedelta(seconds=redeliver_after),
                finished_at=None,
                updated_at=now,
            )
            .returning(ListenerRun.id, ListenerRun.listener)
        ).all()
    return sorted((r.id, r.listener) for r in rows)
