"""The broker refused or hung while deliveries arrive: each is answered 200 within 5 s
because it is durable in the database (its runs `pending`), and once Redis is back, even
empty, the relay publishes them and every run finishes with one effect."""

from __future__ import annotations

import pytest
from integration.helpers import (
    events_for,
    finished_runs,
    make_media,
    new_task_id,
    runs_for,
    timed_send,
)
from integration.stack import Stack

from pipeline.dev.procs import wait_for

from .probe import Probe

pytestmark = pytest.mark.integration

DELIVERIES = 3
LISTENERS = {"update_media_record", "probe"}  # those that want a failed job's delivery


def deliver_while_broken(stack: Stack, probe: Probe) -> list[str]:
    """Send DELIVERIES deliveries; check each was answered 200 within 5 s and is stored
    with its runs pending, none attempted. Their task ids."""
    task_ids = [new_task_id() for _ in range(DELIVERIES)]
    for task_id in task_ids:
        make_media(stack.db, task_id=task_id, user_id=None)
        answer, took = timed_send(
            stack.webhook_url, probe.delivery(task_id, status="failed"), stack.secret, 15
        )
        assert answer.status_code == 200, answer.text
        assert answer.json()["status"] == "accepted"
        assert took < 5, f"the answer took {took:.1f}s"
    for task_id in task_ids:
        assert len(events_for(stack.db, task_id)) == 1
        runs = runs_for(stack.db, task_id)
        assert {r.listener for r in runs} == LISTENERS
        assert {(r.state, r.attempts) for r in runs} == {("pending", 0)}
    return task_ids


def assert_all_finish_once(stack: Stack, probe: Probe, task_ids: list[str]) -> None:
    for task_id in task_ids:
        runs = wait_for(
            stack.supervising(finished_runs(stack.db, task_id)),
            timeout=30,
            what=f"{task_id}'s runs end",
        )
        assert {name: run.state for name, run in runs.items()} == dict.fromkeys(
            LISTENERS, "succeeded"
        )
        assert probe.effects(task_id) == [(runs["probe"].id, 1)]


def test_deliveries_while_redis_refuses_connections_answer_200_and_run_once_it_is_back(
    fault_stack: Stack, probe: Probe
) -> None:
    fault_stack.stop_redis()

    task_ids = deliver_while_broken(fault_stack, probe)
    fault_stack.start_redis()  # empty: whatever it held is gone

    assert_all_finish_once(fault_stack, probe, task_ids)


def test_deliveries_while_redis_hangs_answer_200_and_run_once_it_answers_again(
    fault_stack: Stack, probe: Probe
) -> None:
    with fault_stack.redis_frozen():
        task_ids = deliver_while_broken(fault_stack, probe)

    assert_all_finish_once(fault_stack, probe, task_ids)
