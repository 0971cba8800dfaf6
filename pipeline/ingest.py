"""Receiving a webhook: parse, then ONE transaction storing the event and a run per
interested listener. Duplicates are recognised by the unique delivery key."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import Engine

from pipeline.errors import MalformedPayload
from pipeline.events import Event, parse
from pipeline.inbox import NewEvent, store
from pipeline.models import utcnow
from pipeline.registry import Registry


@dataclass(frozen=True)
class Receipt:
    """What was stored: the event's id and its new runs as (id, listener, state)."""

    event_id: int
    duplicate: bool
    runs: tuple[tuple[int, str, str], ...] = ()
    error: MalformedPayload | None = None  # authentic but unreadable: stored, not run

    @property
    def to_publish(self) -> list[tuple[int, str]]:
        return [(run_id, name) for run_id, name, state in self.runs if state == "pending"]


def receive(
    engine: Engine,
    registry: Registry,
    body: bytes,
    redeliver_after: float,
    write_timeout: float | None = None,
) -> Receipt:
    """Store a verified body durably; the caller answers 200 only after this returns."""
    error: MalformedPayload | None = None
    event: Event | None = None
    try:
        event = parse(body)
        key = event.delivery_key
    except MalformedPayload as exc:
        error = exc
        key = "unreadable:" + hashlib.sha256(body).hexdigest()
    now = utcnow()
    wanted = registry.interested(event) if event else []
    new = NewEvent(
        delivery_key=key,
        raw_body=body,
        received_at=now,
        parse_error=error.message if error else None,
        # Searchable copies, cut to their columns; the raw body keeps every byte.
        task_id=event.task_id if event else None,
        status=event.status[:32] if event else None,
        kind=event.kind[:64] if event and event.kind else None,
        topic=event.topic[:64] if event and event.topic else None,
        runs=[(listener.name, why) for listener, why in wanted],
        due_at=now + timedelta(seconds=redeliver_after),
    )
    stored = store(engine, new, write_timeout)
    return Receipt(stored.event_id, duplicate=stored.duplicate, runs=stored.runs, error=error)
