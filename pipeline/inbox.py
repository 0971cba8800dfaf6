"""The webhook endpoint's one write, in SQL the driver runs as written.

Storing a delivery is the hot path of the web: every request does it, and SQLAlchemy's
statement building and result handling cost ten times the driver's own work for it
(bench/README.md has the profile). So this one write is plain SQL on the pooled DBAPI
connection, per dialect:

- PostgreSQL: a single statement (the event, then its runs, in data-modifying CTEs), which
  is a transaction of its own on an autocommit connection: one round trip.
- SQLite: BEGIN IMMEDIATE, two INSERTs, COMMIT, in process.

The columns are those of `models.WebhookEvent` and `models.ListenerRun`;
tests/integration/test_hot_path_sql.py reads the rows back through the models on both
databases. Everything else in the pipeline uses SQLAlchemy as usual.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from pipeline.db import TooSlow, deadline
from pipeline.errors import DatabaseUnavailable

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class NewEvent:
    """A webhook_events row to insert, and the runs (listener, error or None) it starts."""

    delivery_key: str
    raw_body: bytes
    received_at: datetime
    parse_error: str | None
    task_id: str | None
    status: str | None
    kind: str | None
    topic: str | None
    runs: Sequence[tuple[str, str | None]]  # a run with an error is born `failed`
    due_at: datetime


@dataclass(frozen=True)
class Stored:
    event_id: int
    duplicate: bool
    runs: tuple[tuple[int, str, str], ...] = ()  # (id, listener, state)


def store(engine: Engine, new: NewEvent, timeout: float | None = None) -> Stored:
    """Insert the event and its runs atomically, or find the event stored before.

    A connection the server dropped (PostgreSQL restarted) is retried once on a fresh one:
    the insert is idempotent on the delivery key (had the first try committed unseen, the
    retry finds a duplicate, and the relay publishes its runs once they fall due). Any
    other database error is DatabaseUnavailable (503: the sender retries, nothing was
    acknowledged). So is a write that takes longer than `timeout` seconds (a hung server):
    its connection is discarded, mid-statement.
    """
    write = _store_postgresql if engine.dialect.name == "postgresql" else _store_sqlite
    for attempt in (1, 2):
        try:
            pooled = engine.raw_connection()
        except (engine.dialect.loaded_dbapi.Error, SQLAlchemyError) as exc:
            raise _unavailable(exc) from exc
        driver = pooled.driver_connection
        try:
            with deadline(timeout):
                return write(driver, new)
        except TooSlow as exc:
            pooled.invalidate(exc)
            log.error("the database did not answer a delivery's write within %gs", timeout)
            raise DatabaseUnavailable(
                f"the database did not answer within {timeout:g}s; retry later"
            ) from None
        except engine.dialect.loaded_dbapi.Error as exc:
            _rollback_quietly(driver)
            if attempt == 1 and engine.dialect.is_disconnect(exc, driver, None):
                pooled.invalidate(exc)
                engine.dispose()  # its siblings in the pool are as dead
                continue
            raise _unavailable(exc) from exc
        finally:
            pooled.close()
    raise AssertionError("unreachable")  # pragma: no cover


_POSTGRESQL = """
WITH event AS (
    INSERT INTO webhook_events (delivery_key, raw_body, received_at, signature_valid,
                                parse_error, task_id, status, kind, topic)
    VALUES (%(key)s, %(body)s, %(now)s, true, %(parse_error)s, %(task_id)s, %(status)s,
            %(kind)s, %(topic)s)
    ON CONFLICT (delivery_key) DO NOTHING
    RETURNING id
), runs AS (
    INSERT INTO listener_runs (event_id, listener, state, last_error, attempts, due_at,
                               created_at, updated_at, finished_at)
    SELECT event.id, run.listener,
           CASE WHEN run.error IS NULL THEN 'pending' ELSE 'failed' END, run.error, 0,
           %(due)s, %(now)s, %(now)s, CASE WHEN run.error IS NULL THEN NULL ELSE %(now)s END
    FROM event, unnest(%(listeners)s::text[], %(errors)s::text[]) AS run (listener, error)
    RETURNING id, listener, state
)
SELECT event.id, runs.id, runs.listener, runs.state FROM event LEFT JOIN runs ON true
"""


def _store_postgresql(conn: Any, new: NewEvent) -> Stored:
    params = {
        "key": new.delivery_key,
        "body": new.raw_body,
        "now": new.received_at,
        "parse_error": new.parse_error,
        "task_id": new.task_id,
        "status": new.status,
        "kind": new.kind,
        "topic": new.topic,
        "due": new.due_at,
        "listeners": [name for name, _ in new.runs],
        "errors": [error for _, error in new.runs],
    }
    rows = conn.execute(_POSTGRESQL, params).fetchall()
    if not rows:
        existing = conn.execute(
            "SELECT id FROM webhook_events WHERE delivery_key = %s", (new.delivery_key,)
        ).fetchone()
        conn.commit()  # a no-op on an autocommit connection
        return Stored(existing[0], duplicate=True)
    conn.commit()
    runs = tuple(sorted((run_id, name, state) for _, run_id, name, state in rows if run_id))
    return Stored(rows[0][0], duplicate=False, runs=runs)


_SQLITE_EVENT = """
INSERT INTO webhook_events (delivery_key, raw_body, received_at, signature_valid,
                            parse_error, task_id, status, kind, topic)
VALUES (?, ?, ?, 1, ?, ?, ?, ?, ?)
ON CONFLICT (delivery_key) DO NOTHING
RETURNING id
"""
_SQLITE_RUNS = """
INSERT INTO listener_runs (event_id, listener, state, last_error, attempts, due_at,
                           created_at, updated_at, finished_at)
VALUES {values}
RETURNING id, listener, state
"""


def _store_sqlite(conn: Any, new: NewEvent) -> Stored:
    now, due = _sqlite_time(new.received_at), _sqlite_time(new.due_at)
    conn.execute("BEGIN IMMEDIATE")  # the write lock up front, as db.py does
    row = conn.execute(
        _SQLITE_EVENT,
        (new.delivery_key, new.raw_body, now, new.parse_error, new.task_id, new.status,
         new.kind, new.topic),
    ).fetchone()  # fmt: skip
    if row is None:
        existing = conn.execute(
            "SELECT id FROM webhook_events WHERE delivery_key = ?", (new.delivery_key,)
        ).fetchone()
        conn.commit()
        return Stored(existing[0], duplicate=True)
    event_id = row[0]
    runs: tuple[tuple[int, str, str], ...] = ()
    if new.runs:
        values = ", ".join(["(?, ?, ?, ?, 0, ?, ?, ?, ?)"] * len(new.runs))
        params: list[Any] = []
        for name, error in new.runs:
            state = "pending" if error is None else "failed"
            params += [event_id, name, state, error, due, now, now, None if error is None else now]
        stored = conn.execute(_SQLITE_RUNS.format(values=values), params).fetchall()
        runs = tuple(sorted((r[0], r[1], r[2]) for r in stored))
    conn.commit()
    return Stored(event_id, duplicate=False, runs=runs)


def _sqlite_time(moment: datetime) -> str:
    """The text SQLAlchemy's SQLite DateTime stores (naive UTC, always microseconds)."""
    return moment.astimezone(UTC).replace(tzinfo=None).isoformat(" ", timespec="microseconds")


def _unavailable(exc: Exception) -> DatabaseUnavailable:
    log.error("database error while storing a delivery: %s", type(exc).__name__)
    return DatabaseUnavailable("the database is unavailable; retry later")


def _rollback_quietly(conn: Any) -> None:
    with contextlib.suppress(Exception):  # the connection is gone; the pool discards it
        conn.rollback()
