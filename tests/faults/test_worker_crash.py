"""A worker killed mid-listener (SIGKILL: no cleanup, no ack): the run is taken back when
its lease expires and finishes on another process, its effect committed exactly once; a
run that kills its worker every time ends `failed` instead of looping."""

from __future__ import annotations

import pytest
from integration.helpers import finished_runs, make_media, new_task_id, send
from integration.stack import Stack

from pipeline.dev.procs import wait_for

from .probe import Probe

pytestmark = pytest.mark.integration


def test_a_worker_child_killed_mid_listener_finishes_the_run_later_with_one_effect(
    fault_stack: Stack, probe: Probe
) -> None:
    stack = fault_stack
    task_id = new_task_id()
    make_media(stack.db, task_id=task_id, user_id=None)
    body = probe.delivery(task_id, status="failed", sleep=30)

    answer = send(stack.webhook_url, body, stack.secret)
    first = probe.wait_started(task_id)
    stack.kill_worker_child(first.pid)

    assert answer.status_code == 200, answer.text
    runs = wait_for(
        finished_runs(stack.db, task_id), timeout=30, what="the runs end after the crash"
    )
    run = runs["probe"]
    assert (run.state, run.attempts) == ("succeeded", 2), run.last_error
    starts = probe.starts(task_id)
    assert [s.attempt for s in starts] == [1, 2]
    assert starts[1].pid != first.pid  # the killed process did not come back to finish it
    assert probe.effects(task_id) == [(run.id, 2)]
    assert runs["update_media_record"].state == "succeeded"


@pytest.mark.parametrize("fault_stack", ["sqlite"], indirect=True)
def test_a_run_that_kills_its_worker_every_time_ends_failed_after_its_attempts(
    fault_stack: Stack, probe: Probe
) -> None:
    stack = fault_stack
    task_id = new_task_id()
    make_media(stack.db, task_id=task_id, user_id=None)
    body = probe.delivery(task_id, status="failed", crash_attempts=99)

    answer = send(stack.webhook_url, body, stack.secret)

    assert answer.status_code == 200, answer.text
    runs = wait_for(finished_runs(stack.db, task_id), timeout=60, what="the probe's run gives up")
    run = runs["probe"]
    limit = 1 + 2  # the probe's policy: max_retries=2
    assert run.state == "failed"
    assert run.attempts == limit + 1  # the claim that found the attempts used up
    assert f"gave up after {limit} attempts" in (run.last_error or "")
    assert [s.attempt for s in probe.starts(task_id)] == list(range(1, limit + 1))
    assert probe.effects(task_id) == []
    assert runs["update_media_record"].state == "succeeded"
