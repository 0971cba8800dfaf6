"""Receiving a webhook: parse, then ONE transaction storing the event and a run per
interested listener. Duplicates are recognised by the unique delivery key."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import Engine, insert, select
from sqlalchemy.dialects import postgresql, sqlite

from pipeline.errors import MalformedPayload
from pipeline.events import Event, parse
from pipeline.models import ListenerRun, WebhookEvent, utcnow
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


def receive(engine: Engine, registry: Registry, body: bytes, redeliver_after: float) -> Receipt:
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
    row = {
        "delivery_key": key,
        "raw_body": body,
        "received_at": now,
        "signature_valid": True,
        "parse_error": error.message if error else None,
        # Searchable copies, cut to their columns; the raw body keeps every byte.
        "task_id": event.task_id if event else None,
        "status": event.status[:32] if event else None,
        "kind": event.kind[:64] if event and event.kind else None,
        "topic": event.topic[:64] if event and event.topic else None,
    }
    with engine.begin() as conn:
        event_id = conn.execute(_insert_new(engine, row)).scalar()
        if event_id is None:
            existing = conn.execute(select(WebhookEvent.id).where(WebhookEvent.delivery_key == key))
            return Receipt(existing.scalar_one(), duplicate=True, error=error)
        if event is None:
            return Receipt(event_id, duplicate=False, error=error)
        due = now + timedelta(seconds=redeliver_after)
        runs: list[dict[str, Any]] = [
            {
                "event_id": event_id,
                "listener": listener.name,
                "state": "failed" if wants_error else "pending",
                "last_error": wants_error,
                "attempts": 0,
                "due_at": due,
                "created_at": now,
                "updated_at": now,
                "finished_at": now if wants_error else None,
            }
            for listener, wants_error in registry.interested(event)
        ]
        if not runs:
            return Receipt(event_id, duplicate=False)
        stored = conn.execute(
            insert(ListenerRun).returning(ListenerRun.id, ListenerRun.listener, ListenerRun.state),
            runs,
        ).all()
    return Receipt(
        event_id, duplicate=False, runs=tuple((r.id, r.listener, r.state) for r in stored)
    )


def _insert_new(engine: Engine, row: dict[str, Any]) -> Any:
    """INSERT ... ON CONFLICT (delivery_key) DO NOTHING RETURNING id, per dialect."""
    dialect = postgresql if engine.dialect.name == "postgresql" else sqlite
    stmt = dialect.insert(WebhookEvent).values(row)
    return stmt.on_conflict_do_nothing(index_elements=["delivery_key"]).returning(WebhookEvent.id)
