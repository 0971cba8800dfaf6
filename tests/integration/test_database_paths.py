"""The hot paths on SQLite and PostgreSQL: the endpoint's write (pipeline/inbox.py), whose
rows read back through the models, and the worker's claim (runs.claim), which brings the
event along; on both, a connection the server dropped is replaced without the caller
noticing. And the models agree with the migrations (`alembic check`)."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from alembic import command
from sqlalchemy import Engine, func, select, text
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.orm import Session

from pipeline.db import make_engine
from pipeline.errors import DatabaseUnavailable
from pipeline.events import Event
from pipeline.inbox import receive
from pipeline.listener import Listener
from pipeline.live.versions import OWNERLESS, tick
from pipeline.migrate import alembic_config, upgrade
from pipeline.models import ListenerRun, RunState, WebhookEvent, utcnow
from pipeline.registry import Registry
from pipeline.runner import Runner
from pipeline.runtime import Role, Runtime
from pipeline.settings import Settings

from .stack import BACKENDS, PG_SERVER, create_database

pytestmark = pytest.mark.integration

BODY = b'{"id": "task_1", "status": "succeeded", "kind": "video"}'


class AFirst(Listener):
    name = "a_first"

    def handle(self, event: Event, ctx: Any) -> None:
        return None


class BBroken(Listener):
    name = "b_broken"

    def wants(self, event: Event) -> bool:
        raise ValueError("oops")

    def handle(self, event: Event, ctx: Any) -> None:
        return None


REGISTRY = Registry([AFirst(), BBroken()])


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    database = create_database(request.param, tmp_path)
    upgrade(database.url)
    yield database.url
    database.drop()


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    """An engine as the web process makes it."""
    engine = make_engine(database_url, pool_pre_ping=False, timeout=3.0)
    yield engine
    engine.dispose()


def body(task_id: str, status: str = "succeeded") -> bytes:
    return BODY.replace(b"task_1", task_id.encode()).replace(b"succeeded", status.encode())


def test_an_event_and_its_runs_read_back_through_the_models(engine: Engine) -> None:
    before = utcnow()
    stored = receive(engine, REGISTRY, BODY, redeliver_after=60)
    after = utcnow()

    assert not stored.duplicate
    assert [(name, state) for _, name, state in stored.runs] == [
        ("a_first", RunState.PENDING),
        ("b_broken", RunState.FAILED),
    ]
    with Session(engine) as session:
        event = session.get_one(WebhookEvent, stored.event_id)
        runs = session.scalars(select(ListenerRun).order_by(ListenerRun.id)).all()
    assert (event.delivery_key, event.task_id, event.status, event.kind, event.topic) == (
        "task_1:succeeded",
        "task_1",
        "succeeded",
        "video",
        None,
    )
    assert event.raw_body == BODY
    assert before <= event.received_at <= after
    assert event.signature_valid and event.parse_error is None
    assert [r.id for r in runs] == [run_id for run_id, _, _ in stored.runs]
    first, broken = runs
    assert (first.event_id, first.listener, first.state, first.attempts) == (
        stored.event_id,
        "a_first",
        RunState.PENDING,
        0,
    )
    assert first.due_at == event.received_at + timedelta(seconds=60)
    assert first.created_at == first.updated_at == event.received_at
    assert first.finished_at is None and first.lease_expires_at is None
    assert first.last_error is None and first.result is None
    assert (broken.state, broken.finished_at) == (RunState.FAILED, event.received_at)
    assert broken.last_error == "wants() raised ValueError('oops')"


def test_the_same_delivery_again_is_a_duplicate_with_the_first_events_id(engine: Engine) -> None:
    first = receive(engine, REGISTRY, body("task_2"), 60)
    again = receive(engine, REGISTRY, body("task_2"), 60)

    assert again.duplicate and again.event_id == first.event_id and again.runs == ()
    with Session(engine) as session:
        assert session.scalar(select(func.count()).select_from(ListenerRun)) == 2


def test_an_unreadable_body_is_stored_without_runs(engine: Engine) -> None:
    stored = receive(engine, REGISTRY, b"\xff not json", 60)

    assert not stored.duplicate and stored.runs == () and stored.error is not None
    with Session(engine) as session:
        event = session.get_one(WebhookEvent, stored.event_id)
    assert event.raw_body == b"\xff not json" and event.task_id is None
    assert event.parse_error is not None and event.parse_error.startswith("body is not valid JSON")


def test_a_state_outside_the_state_machine_is_refused_by_the_database(engine: Engine) -> None:
    stored = receive(engine, REGISTRY, body("task_7"), 60)

    with pytest.raises(IntegrityError), engine.begin() as conn:
        conn.exec_driver_sql(
            f"UPDATE listener_runs SET state = 'done' WHERE id = {stored.runs[0][0]}"
        )


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_connection_the_server_dropped_is_replaced_and_the_write_lands(
    engine: Engine,
) -> None:
    receive(engine, REGISTRY, body("task_3", "processing"), 60)  # a pooled connection exists
    end_pooled_connections(engine)

    stored = receive(engine, REGISTRY, body("task_3"), 60)

    assert not stored.duplicate and len(stored.runs) == 2


def runner_for(engine: Engine) -> Runner:
    settings = Settings.from_env({"PIPELINE_VAR_DIR": "var"})
    return Runner(settings, engine, REGISTRY)


def end_pooled_connections(engine: Engine) -> None:
    with psycopg.connect(f"postgresql://{PG_SERVER}/postgres", autocommit=True) as admin:
        ended = admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = %s AND pid <> pg_backend_pid()",
            (engine.url.database,),
        ).fetchall()
    assert ended, "no pooled connection was there to end"


def test_a_claim_takes_the_run_once_and_brings_its_event(engine: Engine) -> None:
    stored = receive(engine, REGISTRY, body("task_5"), 60)
    run_id = stored.runs[0][0]
    runner = runner_for(engine)

    claim = runner.claim(run_id)
    again = runner.claim(run_id)

    assert claim is not None and again is None
    assert (claim.listener, claim.attempt, claim.event_id) == ("a_first", 1, stored.event_id)
    assert claim.raw_body == body("task_5")
    with Session(engine) as session:
        run = session.get_one(ListenerRun, run_id)
        event = session.get_one(WebhookEvent, stored.event_id)
    assert claim.received_at == event.received_at
    assert (run.state, run.attempts) == (RunState.RUNNING, 1) and run.lease_expires_at is not None


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_claim_on_a_connection_the_server_dropped_still_claims(database_url: str) -> None:
    web = make_engine(database_url, pool_pre_ping=False, timeout=3.0)
    worker = make_engine(database_url, pool_pre_ping=False)
    first = receive(web, REGISTRY, body("task_6"), 60).runs[0][0]
    second = receive(web, REGISTRY, body("task_8"), 60).runs[0][0]
    runner = runner_for(worker)
    assert runner.claim(first) is not None  # the worker's pool now holds a connection
    end_pooled_connections(worker)

    claim = runner.claim(second)

    assert claim is not None and claim.listener == "a_first"
    web.dispose()
    worker.dispose()


def test_a_database_that_cannot_be_reached_is_unavailable_not_a_crash(tmp_path: Path) -> None:
    (tmp_path / "no").write_text("a file where a directory should be")
    missing = make_engine(f"sqlite:///{tmp_path}/no/x.db")

    with pytest.raises(DatabaseUnavailable):
        receive(missing, REGISTRY, BODY, 60)


def test_the_models_and_the_migrations_describe_the_same_schema(database_url: str) -> None:
    command.check(alembic_config(database_url))  # raises if autogenerate finds a difference


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_postgresqls_own_lock_timeout_ends_a_write_stuck_behind_a_lock(database_url: str) -> None:
    """Outside the main thread no SIGALRM is armed: the server's lock_timeout alone ends
    the wait, within the web engine's write timeout."""
    web = make_engine(database_url, pool_pre_ping=False, timeout=0.5)
    holder = make_engine(database_url)
    outcome: list[float] = []

    def write() -> None:
        started = time.monotonic()
        with contextlib.suppress(DatabaseUnavailable):
            receive(web, REGISTRY, body("task_9"), 60, 0.5)
            return
        outcome.append(time.monotonic() - started)

    with holder.connect() as conn:
        conn.execute(text("LOCK TABLE webhook_events IN EXCLUSIVE MODE"))
        writer = threading.Thread(target=write)
        writer.start()
        writer.join(10)
        conn.rollback()
    web.dispose()
    holder.dispose()
    assert len(outcome) == 1 and outcome[0] < 1.5, outcome


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_worker_cut_off_mid_transaction_has_its_locks_freed_after_the_lease(
    database_url: str,
) -> None:
    """A worker host the network cut off inside a transaction is, to the server, a session
    idle in that transaction: it keeps the owner's media clock, which every change of that
    owner's media takes, and another host's workers queue behind it until the kernel gives
    up on the peer (hours). The worker's engine has the server end such a session after
    the lease; its work is rolled back and the others' changes go on."""
    settings = Settings.from_env(
        {"PIPELINE_VAR_DIR": "var", "DATABASE_URL": database_url, "RUN_LEASE_SECONDS": "3"}
    )
    cut_off = Runtime(settings, Role.WORKER).engine
    other = Runtime(settings, Role.WORKER).engine
    ticked: list[int] = []

    def change() -> None:
        with other.begin() as conn:
            ticked.append(tick(conn, OWNERLESS))

    with cut_off.connect() as silent:
        silent.begin()
        tick(silent, OWNERLESS)  # then not a word more, as if its cable were pulled
        waiting = threading.Thread(target=change)
        waiting.start()
        waiting.join(30)
        assert not waiting.is_alive(), "the change still waits on the silent session's lock"
        with pytest.raises(DBAPIError, match="idle-in-transaction timeout"):
            silent.execute(text("SELECT 1"))
    assert ticked == [1]  # the silent session's tick was rolled back
    cut_off.dispose()
    other.dispose()
