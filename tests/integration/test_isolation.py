"""Each listener is its own Celery task: one failing never re-runs the others."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest

from pipeline.dev.procs import wait_for

from .helpers import (
    delivery,
    emulator,
    finished_runs,
    get_media,
    make_media,
    make_user,
    new_task_id,
    notifications,
    send,
)
from .stack import Stack

pytestmark = pytest.mark.integration


@pytest.fixture
def jobs_rejected(stack: Stack) -> Iterator[str]:
    """The emulator answers the next `POST /jobs` with a 400; yields the error's message."""
    message = f"input is not a readable video ({secrets.token_hex(4)})"
    rule = {"status": 400, "count": 1, "method": "POST", "path": "/jobs", "message": message}
    emulator(stack.emulator_url, "faults", "POST", rule)
    yield message
    emulator(stack.emulator_url, "faults", "DELETE")


def test_a_thumbnail_rejected_by_ittybit_fails_alone_and_the_other_listeners_run_once(
    stack: Stack, jobs_rejected: str
) -> None:
    user_id = make_user(stack.db)
    task_id = new_task_id()
    media_id = make_media(stack.db, task_id=task_id, user_id=user_id)

    answer = send(stack.webhook_url, delivery("B", task_id), stack.secret)

    assert answer.status_code == 200, answer.text
    runs = wait_for(finished_runs(stack.db, task_id), what="every run ends")
    thumbnail = runs["generate_thumbnail"]
    assert (thumbnail.state, thumbnail.attempts) == ("failed", 1)
    assert jobs_rejected in (thumbnail.last_error or "")
    assert "400" in (thumbnail.last_error or "")
    for name in ("update_media_record", "notify_user"):
        assert (runs[name].state, runs[name].attempts) == ("succeeded", 1), runs[name].last_error
    assert emulator(stack.emulator_url, "faults")["rules"] == []  # the one 400 was ours
    media = get_media(stack.db, media_id)
    assert media.status == "completed" and media.thumbnail_task_id is None
    assert len(notifications(stack.db, media_id)) == 1
