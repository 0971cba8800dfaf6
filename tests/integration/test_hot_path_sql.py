"""The two hot paths' SQL on SQLite and PostgreSQL: the endpoint's driver-level write
(pipeline/inbox.py), whose rows read back through the models exactly as SQLAlchemy would
have written them, and the worker's claim (Runner.claim), which brings the event along; on
both, a connection the server dropped is replaced without the caller noticing."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import Engine, select, text
from sqlalchemy.orm import Session

from pipeline.db import make_engine
from pipeline.errors import DatabaseUnavailable
from pipeline.inbox import NewEvent, store
from pipeline.migrate import upgrade
from pipeline.models import ListenerRun, WebhookEvent
from pipeline.registry import Registry
from pipeline.runner import Runner
from pipeline.settings import Settings

from .stack import BACKENDS, PG_SERVER, create_database

pytestmark = pytest.mark.integration

NOW = datetime(2026, 11, 25, 12, 0, 0, tzinfo=UTC)  # microsecond 0: the format's edge


@pytest.fixture(params=BACKENDS)
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    """A fresh migrated database, and an engine as the web process makes it."""
    database = create_database(request.param, tmp_path)
    upgrade(database.url)
    options = {} if request.param == "sqlite" else {"isolation_level": "AUTOCOMMIT"}
    engine = make_engine(database.url, pool_pre_ping=False, **options)
    yield engine
    engine.dispose()
    database.drop()


def new_event(key: str, runs: list[tuple[str, str | None]], **values: object) -> NewEvent:
    fields: dict[str, object] = {
        "delivery_key": key,
        "raw_body": b'{"id": "task_1", "status": "succeeded"}',
        "received_at": NOW,
        "parse_error": None,
        "task_id": "task_1",
        "status": "succeeded",
        "kind": "video",
        "topic": None,
        "runs": runs,
        "due_at": NOW + timedelta(seconds=60),
    }
    fields.update(values)
    return NewEvent(**fields)  # type: ignore[arg-type]


def test_an_event_and_its_runs_read_back_through_the_models(engine: Engine) -> None:
    stored = store(engine, new_event("task_1:succeeded", [("a_first", None), ("b_broken", "oops")]))

    assert not stored.duplicate
    assert [(name, state) for _, name, state in stored.runs] == [
        ("a_first", "pending"),
        ("b_broken", "failed"),
    ]
    with Session(engine) as session:
        event = session.get_one(WebhookEvent, stored.event_id)
        runs = session.scalars(select(ListenerRun).order_by(ListenerRun.id)).all()
    assert (event.delivery_key, event.task_id, event.status, event.kind, event.topic) == (
        "task_1:succeeded", "task_1", "succeeded", "video", None,
    )  # fmt: skip
    assert event.raw_body == b'{"id": "task_1", "status": "succeeded"}'
    assert event.received_at == NOW and event.signature_valid and event.parse_error is None
    assert [r.id for r in runs] == [run_id for run_id, _, _ in stored.runs]
    first, broken = runs
    assert (first.event_id, first.listener, first.state, first.attempts) == (
        stored.event_id, "a_first", "pending", 0,
    )  # fmt: skip
    assert first.due_at == NOW + timedelta(seconds=60)
    assert first.created_at == first.updated_at == NOW and first.finished_at is None
    assert first.last_error is None and first.result is None and first.lease_expires_at is None
    assert (broken.state, broken.last_error, broken.finished_at) == ("failed", "oops", NOW)


def test_the_same_delivery_again_is_a_duplicate_with_the_first_events_id(engine: Engine) -> None:
    first = store(engine, new_event("task_2:succeeded", [("a_first", None)]))
    again = store(engine, new_event("task_2:succeeded", [("a_first", None)]))

    assert again.duplicate and again.event_id == first.event_id and again.runs == ()
    with Session(engine) as session:
        assert session.scalar(select(text("count(*)")).select_from(ListenerRun)) == 1


def test_an_unreadable_body_is_stored_without_runs(engine: Engine) -> None:
    stored = store(
        engine,
        new_event(
            "unreadable:abc", [], raw_body=b"\xff not json", parse_error="not JSON",
            task_id=None, status=None, kind=None,
        ),
    )  # fmt: skip

    assert not stored.duplicate and stored.runs == ()
    with Session(engine) as session:
        event = session.get_one(WebhookEvent, stored.event_id)
    assert (event.raw_body, event.parse_error, event.task_id) == (
        b"\xff not json",
        "not JSON",
        None,
    )


@pytest.mark.parametrize("engine", ["postgresql"], indirect=True)
def test_a_connection_the_server_dropped_is_replaced_and_the_write_lands(
    engine: Engine,
) -> None:
    store(engine, new_event("task_3:processing", []))  # one pooled connection now exists
    end_pooled_connections(engine)

    stored = store(engine, new_event("task_3:succeeded", [("a_first", None)]))

    assert not stored.duplicate and len(stored.runs) == 1


def runner_for(engine: Engine) -> Runner:
    settings = Settings.from_env({"PIPELINE_VAR_DIR": "var"})
    return Runner(settings, engine, Registry([]))


def end_pooled_connections(engine: Engine) -> None:
    with psycopg.connect(f"postgresql://{PG_SERVER}/postgres", autocommit=True) as admin:
        ended = admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = %s AND pid <> pg_backend_pid()",
            (engine.url.database,),
        ).fetchall()
    assert ended, "no pooled connection was there to end"


def test_a_claim_takes_the_run_once_and_brings_its_event(engine: Engine) -> None:
    stored = store(engine, new_event("task_5:succeeded", [("a_first", None)]))
    [(run_id, _, _)] = stored.runs
    runner = runner_for(engine)

    claim = runner.claim(run_id)
    again = runner.claim(run_id)

    assert claim is not None and again is None
    assert (claim.listener, claim.attempt, claim.event_id) == ("a_first", 1, stored.event_id)
    assert claim.raw_body == b'{"id": "task_1", "status": "succeeded"}'
    assert claim.received_at == NOW
    with Session(engine) as session:
        run = session.get_one(ListenerRun, run_id)
    assert (run.state, run.attempts) == ("running", 1) and run.lease_expires_at is not None


@pytest.mark.parametrize("engine", ["postgresql"], indirect=True)
def test_a_claim_on_a_connection_the_server_dropped_still_claims(engine: Engine) -> None:
    worker = make_engine(engine.url.render_as_string(hide_password=False), pool_pre_ping=False)
    stored = store(engine, new_event("task_6:succeeded", [("a_first", None), ("b_second", None)]))
    (first, _, _), (second, _, _) = stored.runs
    runner = runner_for(worker)
    assert runner.claim(first) is not None  # the worker's pool now holds a connection
    end_pooled_connections(worker)

    claim = runner.claim(second)

    assert claim is not None and claim.listener == "b_second"
    worker.dispose()


def test_a_database_that_cannot_be_reached_is_unavailable_not_a_crash(tmp_path: Path) -> None:
    (tmp_path / "no").write_text("a file where a directory should be")
    missing = make_engine(f"sqlite:///{tmp_path}/no/x.db")

    with pytest.raises(DatabaseUnavailable):
        store(missing, new_event("task_4:succeeded", []))
