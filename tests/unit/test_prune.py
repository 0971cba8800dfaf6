"""Retention: finished events past their days go with their runs, in batches; dead letters
stay longer; an event with a run still to do stays however old; `pipeline prune
--dry-run` deletes nothing and says what it would."""

from __future__ import annotations

from datetime import timedelta
from itertools import count as numbers

import pytest
from click.testing import CliRunner
from sqlalchemy import Engine, func, insert, select
from sqlalchemy.orm import Session

from pipeline.cli import main
from pipeline.models import ListenerRun, RunState, WebhookEvent, WebhookMinute, utcnow
from pipeline.prune import Cutoffs, count, prune
from pipeline.settings import Settings

KEYS = numbers()
CUTOFFS = Cutoffs.of(succeeded_days=7, failed_days=30)


def event(engine: Engine, days_old: float, *states: RunState, unreadable: bool = False) -> int:
    with Session(engine) as session, session.begin():
        row = WebhookEvent(
            delivery_key=f"key-{next(KEYS)}",
            raw_body=b"{}",
            received_at=utcnow() - timedelta(days=days_old),
            parse_error="not JSON" if unreadable else None,
        )
        session.add(row)
        session.flush()
        for i, state in enumerate(states):
            session.add(ListenerRun(event_id=row.id, listener=f"l{i}", state=state))
        return row.id


def left(engine: Engine) -> set[int]:
    with Session(engine) as session:
        return set(session.scalars(select(WebhookEvent.id)))


def runs_left(engine: Engine) -> int:
    with Session(engine) as session:
        return session.scalar(select(func.count()).select_from(ListenerRun)) or 0


def test_finished_events_past_their_days_go_with_their_runs(engine: Engine) -> None:
    old_done = event(engine, 8, RunState.SUCCEEDED, RunState.SKIPPED)
    young_done = event(engine, 6, RunState.SUCCEEDED)
    old_failed = event(engine, 8, RunState.SUCCEEDED, RunState.FAILED)
    ancient_failed = event(engine, 31, RunState.FAILED)
    old_unreadable = event(engine, 8, unreadable=True)
    ancient_unreadable = event(engine, 31, unreadable=True)

    done = prune(engine, CUTOFFS)

    assert left(engine) == {young_done, old_failed, old_unreadable}
    assert (done.events, done.runs) == (3, 3)
    assert {old_done, ancient_failed, ancient_unreadable}.isdisjoint(left(engine))
    assert runs_left(engine) == 1 + 2


@pytest.mark.parametrize("state", [RunState.PENDING, RunState.RUNNING, RunState.RETRYING])
def test_an_event_with_a_run_still_to_do_stays_however_old(engine: Engine, state: RunState) -> None:
    stuck = event(engine, 365, RunState.SUCCEEDED, state)

    assert prune(engine, CUTOFFS).events == 0
    assert left(engine) == {stuck} and runs_left(engine) == 2


def test_batches_walk_the_whole_table(engine: Engine) -> None:
    keep = event(engine, 1, RunState.SUCCEEDED)
    for _ in range(23):
        event(engine, 10, RunState.SUCCEEDED)
    seen = []

    done = prune(engine, CUTOFFS, batch=5, progress=lambda so_far: seen.append(so_far.events))

    assert done.events == 23 and left(engine) == {keep}
    assert seen == [5, 10, 15, 20, 23]


def test_count_says_what_prune_would_delete(engine: Engine) -> None:
    event(engine, 8, RunState.SUCCEEDED, RunState.SUCCEEDED)
    event(engine, 8, RunState.FAILED)
    event(engine, 8, RunState.PENDING)

    due = count(engine, CUTOFFS)

    assert (due.events, due.runs) == (1, 2)
    assert prune(engine, CUTOFFS).events == 1


def test_pipeline_prune_dry_run_deletes_nothing(engine: Engine, settings: Settings) -> None:
    event(engine, 8, RunState.SUCCEEDED)
    env = {"DATABASE_URL": settings.database_url, "PIPELINE_VAR_DIR": settings.broker_folder}
    runner = CliRunner()

    dry = runner.invoke(main, ["prune", "--dry-run"], env=env)
    assert dry.exit_code == 0, dry.output
    assert "would delete 1 event(s) and 1 run(s)" in dry.output
    assert len(left(engine)) == 1

    real = runner.invoke(main, ["prune"], env={**env, "RETAIN_SUCCEEDED_DAYS": "9"})
    assert "deleted 0 event(s)" in real.output and len(left(engine)) == 1
    real = runner.invoke(main, ["prune"], env=env)
    assert real.exit_code == 0, real.output
    assert "deleted 1 event(s) and 1 run(s)" in real.output and not left(engine)


def test_per_minute_webhook_counts_are_kept_a_day(engine: Engine) -> None:
    now = utcnow().replace(second=0, microsecond=0)
    with engine.begin() as conn:
        conn.execute(
            insert(WebhookMinute),
            [
                {"minute": now - timedelta(days=1, minutes=1), "outcome": "accepted", "count": 3},
                {"minute": now - timedelta(hours=23), "outcome": "accepted", "count": 2},
            ],
        )
    prune(engine, CUTOFFS)
    with engine.connect() as conn:
        assert conn.execute(select(WebhookMinute.count)).scalars().all() == [2]
