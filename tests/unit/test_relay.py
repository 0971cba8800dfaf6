"""The relay over a real SQLite file and kombu's filesystem broker (no worker drains it)."""

from __future__ import annotations

from datetime import timedelta
from uuid import uuid4

from sqlalchemy import Engine, insert, select, update

from pipeline.models import ListenerRun, WebhookEvent, utcnow
from pipeline.outbox import Publisher, relay_once, replay
from pipeline.runtime import create_celery
from pipeline.settings import Settings


def _runs(engine: Engine, count: int, **values: object) -> list[int]:
    with engine.begin() as conn:
        event_id = conn.execute(
            insert(WebhookEvent).values(delivery_key=f"task_{uuid4().hex}:ok", raw_body=b"{}")
        ).inserted_primary_key[0]  # type: ignore[index]
        rows = [{"event_id": event_id, "listener": f"listener_{n}", **values} for n in range(count)]
        return [r.id for r in conn.execute(insert(ListenerRun).returning(ListenerRun.id), rows)]


def _publisher(settings: Settings) -> Publisher:
    return Publisher(create_celery(settings))


def test_due_runs_are_published_and_pushed_back_by_redeliver_after(
    engine: Engine, settings: Settings
) -> None:
    overdue = utcnow() - timedelta(seconds=1)
    ids = _runs(engine, 3, state="pending", due_at=overdue)
    publisher = _publisher(settings)
    assert relay_once(engine, publisher, redeliver_after=60) == 3
    with engine.connect() as conn:
        due = conn.scalars(select(ListenerRun.due_at).where(ListenerRun.id.in_(ids))).all()
    assert all(d > utcnow() + timedelta(seconds=50) for d in due)
    assert publisher.backlog() == 3
    assert relay_once(engine, publisher, redeliver_after=60) == 0  # not due again yet


def test_a_backlog_holds_back_waiting_runs_but_not_runs_whose_worker_died(
    engine: Engine, settings: Settings
) -> None:
    past = utcnow() - timedelta(seconds=1)
    _runs(engine, 2, state="pending", due_at=past)
    [dead] = _runs(engine, 1, state="running", attempts=1, lease_expires_at=past, due_at=past)
    publisher = _publisher(settings)
    publisher.publish([(999, "someone_else")])  # a message already waiting: a backlog
    assert relay_once(engine, publisher, redeliver_after=60) == 1
    with engine.connect() as conn:
        states = {r.id: r.state for r in conn.execute(select(ListenerRun.id, ListenerRun.state))}
    assert states.pop(dead) == "retrying"  # taken back: its old holder can no longer record
    assert set(states.values()) == {"pending"}


def test_replay_puts_only_the_chosen_failed_runs_back_with_fresh_attempts(
    engine: Engine, settings: Settings
) -> None:
    failed = _runs(engine, 2, state="failed", attempts=6, last_error="boom")
    with engine.begin() as conn:
        conn.execute(update(ListenerRun).where(ListenerRun.id == failed[1]).values(listener="x"))
    publisher = _publisher(settings)
    assert replay(engine, publisher, 60, run_ids=[failed[0]]) == [failed[0]]
    with engine.connect() as conn:
        rows = conn.execute(select(ListenerRun.id, ListenerRun.state, ListenerRun.attempts)).all()
    assert {(r.id, r.state, r.attempts) for r in rows} == {
        (failed[0], "pending", 0),
        (failed[1], "failed", 6),
    }
    assert publisher.backlog() == 1
