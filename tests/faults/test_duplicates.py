"""The same delivery many times: 50 copies at once, and 50 copies sent after an answer so
slow the sender gave up. One event, one run per listener, one effect per listener."""

from __future__ import annotations

import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from integration.helpers import (
    events_for,
    finished_runs,
    jobs_requested,
    make_media,
    make_user,
    new_task_id,
    notifications,
    runs_for,
    send,
)
from integration.stack import Stack

from pipeline.dev.procs import wait_for

from .probe import Probe

pytestmark = pytest.mark.integration

COPIES = 50
EVERY_LISTENER = {"update_media_record", "generate_thumbnail", "notify_user", "probe"}


def send_copies(stack: Stack, body: bytes, ready: threading.Barrier) -> list[requests.Response]:
    """COPIES threads post `body` at the same instant (after `ready`); their answers."""

    def post(_: int) -> requests.Response:
        ready.wait(timeout=30)
        return send(stack.webhook_url, body, stack.secret, timeout=60)

    with ThreadPoolExecutor(COPIES) as pool:
        return list(pool.map(post, range(COPIES)))


def assert_one_of_everything(stack: Stack, probe: Probe, task_id: str, media_id: int) -> None:
    """One event; each listener ran once and left exactly one effect."""
    [event] = events_for(stack.db, task_id)
    runs = wait_for(finished_runs(stack.db, task_id), timeout=30, what="every run ends")
    assert sorted(r.listener for r in runs_for(stack.db, task_id)) == sorted(EVERY_LISTENER)
    assert all(r.event_id == event.id for r in runs.values())
    assert {(r.state, r.attempts) for r in runs.values()} == {("succeeded", 1)}, {
        r.listener: r.last_error for r in runs.values()
    }
    assert probe.effects(task_id) == [(runs["probe"].id, 1)]
    assert len(notifications(stack.db, media_id)) == 1
    assert len(jobs_requested(stack.emulator_url, media_id, "image")) == 1


def test_fifty_copies_at_once_store_one_event_and_leave_one_effect_per_listener(
    fault_stack: Stack, probe: Probe
) -> None:
    stack = fault_stack
    task_id = new_task_id()
    media_id = make_media(stack.db, task_id=task_id, user_id=make_user(stack.db))
    body = probe.delivery(task_id)

    answers = send_copies(stack, body, threading.Barrier(COPIES))

    assert [a.status_code for a in answers] == [200] * COPIES, {a.text for a in answers}
    assert Counter(a.json()["status"] for a in answers) == {"accepted": 1, "duplicate": 49}
    assert len({a.json()["event_id"] for a in answers}) == 1
    assert_one_of_everything(stack, probe, task_id, media_id)


def test_fifty_copies_sent_after_a_slow_answer_store_one_event_and_one_effect_each(
    fault_stack: Stack, probe: Probe
) -> None:
    stack = fault_stack
    task_id = new_task_id()
    media_id = make_media(stack.db, task_id=task_id, user_id=make_user(stack.db))
    body = probe.delivery(task_id)
    ready = threading.Barrier(COPIES + 1)

    with ThreadPoolExecutor(1) as sender:
        with stack.database_stalled():
            with pytest.raises(requests.Timeout):  # the sender gives up on a slow answer...
                send(stack.webhook_url, body, stack.secret, timeout=1)
            copies = sender.submit(send_copies, stack, body, ready)  # ...and tries again
            ready.wait(timeout=30)
            time.sleep(1)  # every copy is waiting on the database with the first one
        answers = copies.result()

    assert [a.status_code for a in answers] == [200] * COPIES, {a.text for a in answers}
    statuses = Counter(a.json()["status"] for a in answers)
    # The first delivery, given up by its sender, was stored when the database came back;
    # whichever request got there first, every copy names that one event.
    assert statuses["accepted"] <= 1 and statuses["accepted"] + statuses["duplicate"] == COPIES
    [event] = events_for(stack.db, task_id)
    assert {a.json()["event_id"] for a in answers} == {event.id}
    assert_one_of_everything(stack, probe, task_id, media_id)
