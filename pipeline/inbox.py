"""Receiving a webhook: parse it, then store the delivery and one run per interested
listener in ONE transaction (inbox_sql.py). A delivery key seen before makes it a
duplicate. The caller answers 200 only once this has returned.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from pipeline.db import DeadlineExceeded, deadline
from pipeline.errors import DatabaseUnavailable, MalformedPayload
from pipeline.events import Event, parse
from pipeline.inbox_sql import Run, Runs, Stored, write_postgresql, write_sqlite
from pipeline.models import RunState, WebhookEvent, utcnow
from pipeline.registry import Registry
from pipeline.sqlite_writers import writer_queue

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Receipt:
    """What was stored: the event's id and its new runs."""

    event_id: int
    duplicate: bool
    runs: tuple[Run, ...] = ()
    error: MalformedPayload | None = None  # authentic but unreadable: stored, not run

    @property
    def to_publish(self) -> list[tuple[int, str]]:
        return [(run_id, name) for run_id, name, state in self.runs if state is RunState.PENDING]


def receive(
    engine: Engine,
    registry: Registry,
    body: bytes,
    redeliver_after: float,
    timeout: float | None = None,
) -> Receipt:
    """Store a verified body durably; the caller answers 200 only after this returns.

    A connection the server dropped (PostgreSQL restarted) is retried once on a fresh
    one: the insert is idempotent on the delivery key. Any other database error, or a
    write that takes longer than `timeout` seconds, is DatabaseUnavailable (503: the
    sender retries, nothing was acknowledged).
    """
    error: MalformedPayload | None = None
    event: Event | None = None
    try:
        event = parse(body)
        key = event.delivery_key
    except MalformedPayload as exc:
        error = exc
        key = "unreadable:" + hashlib.sha256(body).hexdigest()
    now = utcnow()
    values = {
        "delivery_key": key,
        "raw_body": body,
        "received_at": now,
        "parse_error": error.message if error else None,
        # Searchable copies, cut to their columns; the raw body keeps every byte.
        "task_id": event.task_id if event else None,
        "status": _fit(event.status if event else None, "status"),
        "kind": _fit(event.kind if event else None, "kind"),
        "topic": _fit(event.topic if event else None, "topic"),
        "due_at": now + timedelta(seconds=redeliver_after),
    }
    wanted = registry.interested(event) if event else []
    runs = [(listener.name, why) for listener, why in wanted]
    event_id, duplicate, stored = _store(engine, values, runs, timeout)
    return Receipt(event_id, duplicate=duplicate, runs=stored, error=error)


def _store(engine: Engine, values: dict[str, Any], runs: Runs, timeout: float | None) -> Stored:
    write = write_postgresql if engine.dialect.name == "postgresql" else write_sqlite
    errors = engine.dialect.loaded_dbapi.Error
    for attempt in (1, 2):
        try:
            pooled = engine.raw_connection()  # on PostgreSQL, an autocommit one (runtime.py)
        except (errors, SQLAlchemyError) as exc:
            raise _unavailable(exc) from exc
        driver: Any = pooled.driver_connection
        queue = writer_queue(engine)
        turn = queue.turn(pooled.dbapi_connection) if queue else contextlib.nullcontext()
        stored: Stored | None = None
        try:
            with deadline(timeout), turn:
                stored = write(driver, engine.dialect, values, runs)
            return stored
        except DeadlineExceeded:
            if stored is not None:  # the alarm rang after the commit: it is stored
                return stored
            pooled.invalidate()  # mid-statement on a hung server: never reuse it
            log.error("the database did not answer a delivery's write within %gs", timeout)
            raise DatabaseUnavailable(
                f"the database did not answer within {timeout:g}s; retry later"
            ) from None
        except errors as exc:
            with contextlib.suppress(Exception):  # the connection may be gone: then discarded
                driver.rollback()
            if attempt == 1 and engine.dialect.is_disconnect(exc, driver, None):
                pooled.invalidate(exc)
                engine.dispose()  # its siblings in the pool are as dead
                continue
            raise _unavailable(exc) from exc
        finally:
            pooled.close()
    raise AssertionError("unreachable")  # pragma: no cover


_WIDTHS: dict[str, int] = {
    name: getattr(WebhookEvent.__table__.c[name].type, "length", 0) or 0
    for name in ("status", "kind", "topic")
}


def _fit(value: str | None, column: str) -> str | None:
    """`value` cut to the width of webhook_events' `column`."""
    length = _WIDTHS[column]
    return value[:length] if value is not None and length else value


def _unavailable(exc: Exception) -> DatabaseUnavailable:
    log.error("database error while storing a delivery: %s", type(exc).__name__)
    return DatabaseUnavailable("the database is unavailable; retry later")
