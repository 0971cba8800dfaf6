"""SQLite's writers wait their turn on a lock file (pipeline/sqlite_writers.py) rather
than in SQLite's busy handler: a writer behind another goes on once the first commits, and
one held past its timeout gets SQLite's own "database is locked" after that timeout, not
twice it."""

from __future__ import annotations

import fcntl
import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import OperationalError

from pipeline.db import make_engine, read_only
from pipeline.errors import DatabaseUnavailable
from pipeline.inbox import receive
from pipeline.registry import discover
from pipeline.settings import Settings

from .support import fixture_bytes
from .test_database_deadline import hold_write_lock

BODY = fixture_bytes("shape_b_guide_succeeded.json")


@pytest.fixture
def url(tmp_path: Path) -> Iterator[str]:
    url = f"sqlite:///{tmp_path / 'writers.db'}"
    engine = make_engine(url)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE notes (id INTEGER PRIMARY KEY, who TEXT)"))
    engine.dispose()
    yield url


def _names(engine: Engine) -> list[str]:
    with engine.connect() as conn:
        return list(conn.execute(text("SELECT who FROM notes ORDER BY id")).scalars())


def test_a_writer_behind_another_goes_on_once_the_first_commits(url: str) -> None:
    first, second = make_engine(url, timeout=10), make_engine(url, timeout=10)
    wrote = threading.Event()

    def write_second() -> None:
        with second.begin() as conn:
            conn.execute(text("INSERT INTO notes (who) VALUES ('second')"))
        wrote.set()

    with first.begin() as conn:
        conn.execute(text("INSERT INTO notes (who) VALUES ('first')"))
        behind = threading.Thread(target=write_second)
        behind.start()
        assert not wrote.wait(0.3)  # it waits while the first holds the write lock
    behind.join(5)
    assert wrote.is_set()
    assert _names(first) == ["first", "second"]


def test_a_writer_held_past_its_timeout_gets_database_is_locked_after_that_timeout(
    url: str,
) -> None:
    holder, waiter = make_engine(url, timeout=10), make_engine(url, timeout=0.5)
    with holder.begin() as conn:
        conn.execute(text("INSERT INTO notes (who) VALUES ('holder')"))
        started = time.monotonic()
        with pytest.raises(OperationalError, match="database is locked"), waiter.begin() as w:
            w.execute(text("INSERT INTO notes (who) VALUES ('waiter')"))
        waited = time.monotonic() - started
    assert 0.5 <= waited < 0.9  # its turn did not come, and SQLite's wait was not added
    with waiter.begin() as conn:  # the lock is free again; the waiter's timeout restored
        conn.execute(text("INSERT INTO notes (who) VALUES ('waiter')"))
        assert conn.execute(text("PRAGMA busy_timeout")).scalar() == 500
    assert _names(holder) == ["holder", "waiter"]


def test_a_reader_does_not_wait_for_a_writer(url: str) -> None:
    writer, reader = make_engine(url, timeout=10), make_engine(url, timeout=0.2)
    with writer.begin() as conn:
        conn.execute(text("INSERT INTO notes (who) VALUES ('writing')"))
        started = time.monotonic()
        assert _names(read_only(reader)) == []  # WAL: the last commit, at once
        assert time.monotonic() - started < 0.2


def test_a_lock_file_that_cannot_be_opened_leaves_writes_to_sqlites_own_wait(
    url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    lock_file = tmp_path / "writers.db-writers"
    lock_file.unlink()  # made by the fixture's writes
    lock_file.mkdir()  # something else where the lock file goes
    engine = make_engine(url, timeout=1)
    with caplog.at_level(logging.WARNING, "pipeline.sqlite_writers"):
        for who in ("one", "two"):
            with engine.begin() as conn:
                conn.execute(text("INSERT INTO notes (who) VALUES (:who)"), {"who": who})
    assert _names(engine) == ["one", "two"]
    [warning] = [r.getMessage() for r in caplog.records if "lock file" in r.getMessage()]
    assert "busy handler" in warning and "writers.db-writers" in warning


def test_a_webhooks_write_waits_its_turn_in_the_queue_like_every_other_writer(
    settings: Settings, engine: Engine
) -> None:
    """The inbox writes on the driver's connection, past SQLAlchemy's begin: it queues all
    the same (else SQLite's busy handler, sleeping up to 100 ms, loses each freed lock)."""
    web = make_engine(settings.database_url, timeout=5)
    lock_file = Path(settings.database_url.removeprefix("sqlite:///") + "-writers")
    stored: list[int] = []

    def write() -> None:
        stored.append(receive(web, discover(), BODY, 60, 5).event_id)

    with lock_file.open("a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # a writer's turn; SQLite itself is not locked
        writer = threading.Thread(target=write)
        writer.start()
        writer.join(0.3)
        assert writer.is_alive() and not stored  # it waits for the turn
        fcntl.flock(held, fcntl.LOCK_UN)
    writer.join(5)
    assert len(stored) == 1
    with lock_file.open("a") as probe:  # and gave the turn back after its commit
        fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)
    web.dispose()


def test_a_webhooks_write_not_given_its_turn_in_time_is_refused_after_that_time(
    settings: Settings, engine: Engine
) -> None:
    web = make_engine(settings.database_url, timeout=0.5)
    holder = hold_write_lock(engine, 3)
    started = time.monotonic()
    with pytest.raises(DatabaseUnavailable):
        receive(web, discover(), BODY, 60, None)  # no alarm: the queue's and SQLite's waits
    waited = time.monotonic() - started
    holder.join()
    assert 0.5 <= waited < 0.9  # the queue's timeout, and not SQLite's on top
    with web.connect() as conn:  # its busy timeout restored
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 500
    web.dispose()
