"""The database deadlines. The web's engine takes them from the driver and the server:
SQLite's busy timeout and PostgreSQL's lock_timeout answer a held lock with a 503 within
DATABASE_WRITE_TIMEOUT (here for SQLite; PostgreSQL in
tests/integration/test_database_paths.py). `db.deadline`, a SIGALRM, covers the case
neither sees (a stopped server: tests/faults/test_database_faults.py); here its mechanism
alone. pytest-timeout runs in a thread (pyproject.toml), so SIGALRM is free as in a
gunicorn worker."""

from __future__ import annotations

import dataclasses
import logging
import signal
import threading
import time

import pytest
from flask.testing import FlaskClient
from sqlalchemy import Engine

from pipeline.db import DeadlineExceeded, deadline, make_engine
from pipeline.errors import DatabaseUnavailable
from pipeline.inbox import receive
from pipeline.registry import discover
from pipeline.settings import Settings
from pipeline.signing import sign
from pipeline.web import create_app

from .support import SECRET, fixture_bytes

BODY = fixture_bytes("shape_b_guide_succeeded.json")


def test_a_block_past_its_deadline_is_interrupted() -> None:
    started = time.monotonic()
    with pytest.raises(DeadlineExceeded), deadline(0.2):
        time.sleep(5)
    assert time.monotonic() - started < 1


def test_a_block_within_its_deadline_leaves_no_alarm_and_no_handler_behind() -> None:
    with deadline(0.2):
        pass
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
    assert signal.getsignal(signal.SIGALRM) is signal.SIG_DFL
    time.sleep(0.3)  # an alarm left armed would end the test run here


def test_someone_elses_alarm_is_left_alone_and_the_missing_deadline_said_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    fired: list[int] = []
    signal.signal(signal.SIGALRM, lambda signum, _frame: fired.append(signum))
    try:
        with caplog.at_level(logging.WARNING, logger="pipeline.db"):
            for _ in range(2):
                with deadline(0.05):
                    time.sleep(0.1)  # no deadline: the handler belongs to someone else
    finally:
        signal.signal(signal.SIGALRM, signal.SIG_DFL)
    assert fired == [] and signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
    assert [r.getMessage() for r in caplog.records] == [
        "no SIGALRM deadline on database writes: SIGALRM belongs to someone else; a stopped "
        "database server is then noticed only by the server's own timeouts"
    ]


def hold_write_lock(engine: Engine, seconds: float) -> threading.Thread:
    """Another process's transaction, as SQLite sees it: the write lock, for `seconds`."""
    locked = threading.Event()

    def hold() -> None:
        with engine.connect() as conn, conn.begin():  # the engine's BEGIN IMMEDIATE
            locked.set()
            time.sleep(seconds)

    holder = threading.Thread(target=hold)
    holder.start()
    locked.wait(5)
    return holder


def test_a_write_lock_held_past_the_write_timeout_is_a_503_in_time_on_sqlite(
    settings: Settings, engine: Engine
) -> None:
    client: FlaskClient = create_app(
        dataclasses.replace(settings, database_write_timeout=0.5)
    ).test_client()
    holder = hold_write_lock(engine, 3)
    started = time.monotonic()

    answer = client.post(
        "/webhooks/ittybit", data=BODY, headers={"Ittybit-Signature": sign(BODY, SECRET)}
    )

    took = time.monotonic() - started
    holder.join()
    assert answer.status_code == 503 and answer.get_json()["error"] == "database_unavailable"
    assert took < 1.5, f"the 503 took {took:.1f}s"


def test_sqlites_own_busy_timeout_ends_the_wait_where_no_alarm_can(
    settings: Settings, engine: Engine
) -> None:
    """Outside the main thread no SIGALRM is armed: the driver's timeout alone ends it."""
    web = make_engine(settings.database_url, timeout=0.5)
    holder = hold_write_lock(engine, 3)
    outcome: list[BaseException | float] = []

    def write() -> None:
        started = time.monotonic()
        try:
            receive(web, discover(), BODY, 60, 0.5)
        except DatabaseUnavailable:
            outcome.append(time.monotonic() - started)

    writer = threading.Thread(target=write)
    writer.start()
    writer.join(10)
    holder.join()
    web.dispose()
    assert len(outcome) == 1 and isinstance(outcome[0], float) and outcome[0] < 1.5, outcome
