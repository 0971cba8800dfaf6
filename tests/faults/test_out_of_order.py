"""Deliveries out of order (scenario h), over real HTTP and the worker: a failure that
happened earlier, an older success, a `processing` after the end — the media keeps the
newest outcome; a newer one still replaces it, also when both arrive at once."""

from __future__ import annotations

import json
import secrets
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from integration.helpers import (
    FINISHED,
    OUTPUT,
    finished_runs,
    get_media,
    make_media,
    make_user,
    new_task_id,
    runs_for,
    send,
)
from integration.stack import Stack

from pipeline.dev.procs import wait_for

pytestmark = pytest.mark.integration

MINUTE = timedelta(minutes=1)
PAIRS = 24  # media whose older and newer outcomes arrive at the same instant


def envelope(
    task_id: str, status: str, at: datetime, *, url: str | None = None, error: str | None = None
) -> bytes:
    """A shape C delivery (its own `evt_` id, so repeats of a status are new events) about
    `task_id`, which reached `status` at `at`."""
    millis = int(at.timestamp() * 1000)
    task: dict[str, Any] = {"id": task_id, "kind": "video", "status": status, "metadata": {}}
    if status == "processing":
        task.update(created_at=millis - 1000, updated_at=millis)
    else:
        task.update(created_at=millis - 60_000, completed_at=millis)
    if url is not None:
        task["outputs"] = [{**OUTPUT, "url": url}]
    if error is not None:
        task["error"] = error
    body = {
        "id": f"evt_{secrets.token_hex(8)}",
        "object": "event",
        "kind": f"task.{status}",
        "data": task,
        "created_at": int(at.timestamp()),
    }
    return json.dumps(body).encode()


def deliver(stack: Stack, task_id: str, body: bytes) -> None:
    """Send `body` and wait until every run of every event about the task has ended."""
    answer = send(stack.webhook_url, body, stack.secret)
    assert answer.status_code == 200, answer.text
    event_id = answer.json()["event_id"]

    def ended() -> bool:
        runs = finished_runs(stack.db, task_id)()
        return bool(runs) and any(run.event_id == event_id for run in runs.values())

    wait_for(ended, timeout=30, what="the delivery's runs end")


def runs_ended(stack: Stack, task_id: str, count: int) -> bool:
    runs = runs_for(stack.db, task_id)
    return len(runs) == count and all(run.state in FINISHED for run in runs)


def new_media(stack: Stack) -> tuple[str, int]:
    task_id = new_task_id()
    return task_id, make_media(stack.db, task_id=task_id, user_id=make_user(stack.db))


def video_url(name: str) -> str:
    return f"https://cdn.ittybit.test/clippable/{name}-{secrets.token_hex(3)}.mp4"


def test_a_failure_that_happened_before_the_success_does_not_undo_it(stack: Stack) -> None:
    task_id, media_id = new_media(stack)
    now, url = datetime.now(UTC), video_url("done")

    deliver(stack, task_id, envelope(task_id, "succeeded", now, url=url))
    deliver(stack, task_id, envelope(task_id, "failed", now - MINUTE, error="too late"))

    media = get_media(stack.db, media_id)
    assert (media.status, media.output_url, media.error) == ("completed", url, None)


def test_an_older_success_arriving_last_keeps_the_newer_output_and_a_newer_outcome_wins(
    stack: Stack,
) -> None:
    task_id, media_id = new_media(stack)
    now, newer, older = datetime.now(UTC), video_url("newer"), video_url("older")

    deliver(stack, task_id, envelope(task_id, "succeeded", now, url=newer))
    deliver(stack, task_id, envelope(task_id, "succeeded", now - MINUTE, url=older))
    kept = get_media(stack.db, media_id)
    deliver(stack, task_id, envelope(task_id, "failed", now + MINUTE, error="re-encode failed"))
    replaced = get_media(stack.db, media_id)

    assert (kept.status, kept.output_url) == ("completed", newer)
    assert (replaced.status, replaced.error) == ("failed", "re-encode failed")


def test_a_processing_delivered_after_the_success_leaves_the_media_completed(
    stack: Stack,
) -> None:
    task_id, media_id = new_media(stack)
    now, url = datetime.now(UTC), video_url("done")

    deliver(stack, task_id, envelope(task_id, "succeeded", now, url=url))
    # Stamped later than the success, yet not final: a terminal outcome beats it.
    deliver(stack, task_id, envelope(task_id, "processing", now + MINUTE))

    media = get_media(stack.db, media_id)
    assert (media.status, media.output_url) == ("completed", url)


def test_an_older_and_a_newer_failure_arriving_together_leave_the_newer_one(
    stack: Stack,
) -> None:
    now = datetime.now(UTC)
    media = [new_media(stack) for _ in range(PAIRS)]
    # Only update_media_record wants failures: each pair's two runs sit side by side in
    # the queue, and the worker's two processes take them at once.
    bodies = [
        body
        for task_id, _ in media
        for body in (
            envelope(task_id, "failed", now, error="newer"),
            envelope(task_id, "failed", now - MINUTE, error="older"),
        )
    ]

    with ThreadPoolExecutor(2) as pool:
        answers = list(pool.map(lambda b: send(stack.webhook_url, b, stack.secret), bodies))

    assert [a.status_code for a in answers] == [200] * len(bodies)
    for task_id, _ in media:
        wait_for(lambda t=task_id: runs_ended(stack, t, count=2), timeout=30, what="both runs end")
    errors = {media_id: get_media(stack.db, media_id).error for _, media_id in media}
    assert errors == {media_id: "newer" for _, media_id in media}
