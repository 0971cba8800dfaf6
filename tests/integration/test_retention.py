"""`pipeline prune` on both databases, beside a live web: old finished events and their
runs go, dead letters and unfinished runs stay, and webhooks are answered meanwhile."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from sqlalchemy import func, insert, select

from pipeline.models import ListenerRun, RunState, WebhookEvent, utcnow

from .helpers import delivery, new_task_id, send
from .stack import Stack

pytestmark = pytest.mark.integration


def old_events(stack: Stack, n: int, days: float, state: RunState) -> list[int]:
    received = utcnow() - timedelta(days=days)
    tag = new_task_id()
    with stack.db.begin() as conn:
        rows = [
            {
                "delivery_key": f"old:{tag}:{i}",
                "raw_body": b"{}",
                "received_at": received,
                "task_id": tag,
            }
            for i in range(n)
        ]
        conn.execute(insert(WebhookEvent), rows)
        ids = list(
            conn.execute(select(WebhookEvent.id).where(WebhookEvent.task_id == tag)).scalars()
        )
        conn.execute(
            insert(ListenerRun),
            [{"event_id": i, "listener": "update_media_record", "state": state} for i in ids],
        )
    return ids


def still_there(stack: Stack, ids: list[int]) -> int:
    with stack.db.connect() as conn:
        return conn.execute(select(func.count()).where(WebhookEvent.id.in_(ids))).scalar_one()


def test_prune_deletes_old_finished_events_while_webhooks_are_answered(stack: Stack) -> None:
    done = old_events(stack, 3000, days=8, state=RunState.SUCCEEDED)
    dead = old_events(stack, 50, days=8, state=RunState.FAILED)
    stuck = old_events(stack, 50, days=90, state=RunState.RETRYING)

    dry = stack.cli("prune", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert f"would delete {len(done)} event(s) and {len(done)} run(s)" in dry.stdout

    answers: list[int] = []
    sender = threading.Thread(
        target=lambda: answers.extend(
            send(stack.webhook_url, delivery("B", new_task_id()), stack.secret).status_code
            for _ in range(30)
        )
    )
    sender.start()
    pruned = stack.cli("prune", "--batch", "200")
    sender.join()

    assert pruned.returncode == 0, pruned.stderr
    assert f"deleted {len(done)} event(s) and {len(done)} run(s)" in pruned.stdout
    assert answers == [200] * 30
    assert still_there(stack, done) == 0
    assert still_there(stack, dead) == len(dead) and still_there(stack, stuck) == len(stuck)
