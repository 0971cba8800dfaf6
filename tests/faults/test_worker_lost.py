"""With the shipped timings (RUN_LEASE_SECONDS 10, RELAY_INTERVAL 5): a worker SIGKILLed
with runs in flight has every run finished within 30 s of the kill; a live worker's
listener that runs past its lease is never taken over; a worker sent SIGTERM mid-run
finishes the run before it exits (a deploy strands nothing)."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator

import pytest
from integration.helpers import finished_runs, make_media, new_task_id, send
from integration.procs import start_worker
from integration.stack import BACKENDS, Stack

from pipeline.dev.procs import wait_for, worker_ready
from pipeline.settings import Settings

from .harness import probe_of, start_fault_stack

pytestmark = pytest.mark.integration

SHIPPED = Settings()
DEFAULT_TIMINGS = {
    "RUN_LEASE_SECONDS": f"{SHIPPED.lease_seconds:g}",
    "RELAY_INTERVAL": f"{SHIPPED.relay_interval:g}",
    "TASK_TIME_LIMIT": f"{SHIPPED.task_time_limit:g}",
    "REDELIVER_AFTER": f"{SHIPPED.redeliver_after:g}",
}


@pytest.fixture(scope="module", params=BACKENDS)
def shipped(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    """A fault stack with the timings a user gets, not the fault suite's short ones."""
    root = tmp_path_factory.mktemp(f"shipped-{request.param}")
    stack = start_fault_stack(request.param, root, env=DEFAULT_TIMINGS)
    yield stack
    stack.stop()


def a_probed_delivery(stack: Stack, **controls: float) -> tuple[str, bytes]:
    task_id = new_task_id()
    make_media(stack.db, task_id=task_id, user_id=None)
    return task_id, probe_of(stack).delivery(task_id, status="failed", **controls)


def test_a_worker_killed_with_runs_in_flight_has_every_run_finished_within_30s(
    shipped: Stack,
) -> None:
    stack, probe = shipped, probe_of(shipped)
    deliveries = [a_probed_delivery(stack, sleep=60) for _ in range(2)]  # the worker's two children
    for _, body in deliveries:
        assert send(stack.webhook_url, body, stack.secret).status_code == 200
    for task_id, _ in deliveries:
        probe.wait_started(task_id)

    stack.procs["worker"].kill()  # the whole worker at once: a dyno stopped, the OOM killer
    killed = time.monotonic()
    stack.start_worker()  # as the platform restarts it

    for task_id, _ in deliveries:
        left = 30 - (time.monotonic() - killed)
        runs = wait_for(
            finished_runs(stack.db, task_id), timeout=max(left, 0.1), what="every run ends"
        )
        assert (runs["probe"].state, runs["probe"].attempts) == ("succeeded", 2)
        assert probe.effects(task_id) == [(runs["probe"].id, 2)]
    assert time.monotonic() - killed < 30


def test_a_listener_running_past_its_lease_on_a_live_worker_is_never_taken_over(
    shipped: Stack,
) -> None:
    stack, probe = shipped, probe_of(shipped)
    pause = SHIPPED.lease_seconds + SHIPPED.relay_interval + 2  # an unrenewed lease is gone by then
    task_id, body = a_probed_delivery(stack, sleep=pause)

    assert send(stack.webhook_url, body, stack.secret).status_code == 200
    runs = wait_for(finished_runs(stack.db, task_id), timeout=pause + 20, what="the long run ends")

    assert (runs["probe"].state, runs["probe"].attempts) == ("succeeded", 1)
    assert [start.attempt for start in probe.starts(task_id)] == [1]


def test_a_worker_sent_sigterm_mid_run_finishes_the_run_before_it_exits(shipped: Stack) -> None:
    stack, probe = shipped, probe_of(shipped)
    task_id, body = a_probed_delivery(stack, sleep=3)
    assert send(stack.webhook_url, body, stack.secret).status_code == 200
    probe.wait_started(task_id)

    started = time.monotonic()
    stack.procs["worker"].stop(grace=30, sig=signal.SIGTERM)  # a deploy: warm shutdown
    stopped_in = time.monotonic() - started
    try:
        runs = finished_runs(stack.db, task_id)()
        assert runs and (runs["probe"].state, runs["probe"].attempts) == ("succeeded", 1)
        assert stopped_in < 30, f"the worker took {stopped_in:.1f}s to stop"
    finally:
        stack.start_worker()


@pytest.mark.parametrize("whom", ["the worker alone", "every process of the dyno"])
def test_a_worker_stopping_with_a_run_past_its_grace_hands_it_back_and_exits_in_time(
    shipped: Stack, whom: str
) -> None:
    stack, probe = shipped, probe_of(shipped)
    grace = 2.0  # WORKER_SHUTDOWN_GRACE, short here: the shipped 20 s behaves the same
    stack.procs["worker"].stop()
    leaving = start_worker(
        {**stack.env, "WORKER_SHUTDOWN_GRACE": f"{grace:g}"}, stack.logs, name="leaving"
    )
    try:
        wait_for(worker_ready(leaving), what="the leaving worker", timeout=60, proc=leaving)
        task_id, body = a_probed_delivery(stack, sleep=60)  # far past any grace
        assert send(stack.webhook_url, body, stack.secret).status_code == 200
        probe.wait_started(task_id)

        told = time.monotonic()
        if whom == "the worker alone":
            leaving.popen.send_signal(signal.SIGTERM)  # systemd, `kill <pid>`
        else:
            leaving.signal_group(signal.SIGTERM)  # Heroku signals every process at once
        leaving.popen.wait(30)  # the platform's SIGKILL would come at 30 s
        exited_in = time.monotonic() - told
        stack.start_worker()  # the deploy's new worker

        runs = wait_for(finished_runs(stack.db, task_id), timeout=30, what="the run ends")
        done_in = time.monotonic() - told
    finally:
        leaving.stop()
        if not stack.procs["worker"].alive:
            stack.start_worker()

    assert exited_in < grace + 5, f"the worker took {exited_in:.1f}s to exit"
    assert (runs["probe"].state, runs["probe"].attempts) == ("succeeded", 2)
    assert probe.effects(task_id) == [(runs["probe"].id, 2)]
    assert "handed back" in leaving.log(leaving.log_start)
    print(f"{whom}: exited {exited_in:.1f}s after SIGTERM, run done {done_in:.1f}s after")


def test_a_solo_pool_worker_sent_sigterm_keeps_celerys_warm_shutdown(shipped: Stack) -> None:
    """`--pool solo` runs tasks in the worker's own process: the pool's SIGTERM handler
    (finish or hand back) is not installed there, so Celery's warm shutdown still lets
    the task finish and the worker exit at once after it."""
    stack, probe = shipped, probe_of(shipped)
    stack.procs["worker"].stop()
    solo = start_worker(stack.env, stack.logs, "solo", 1, "--pool", "solo")
    try:
        wait_for(worker_ready(solo), what="the solo worker", timeout=60, proc=solo)
        task_id, body = a_probed_delivery(stack, sleep=3)
        assert send(stack.webhook_url, body, stack.secret).status_code == 200
        probe.wait_started(task_id)
        told = time.monotonic()
        solo.popen.send_signal(signal.SIGTERM)
        solo.popen.wait(30)
        exited_in = time.monotonic() - told
    finally:
        solo.stop()
        stack.start_worker()  # the event's other runs wait for it
    runs = wait_for(finished_runs(stack.db, task_id), timeout=30, what="the runs end")
    assert (runs["probe"].state, runs["probe"].attempts) == ("succeeded", 1)
    # The task's 3 s and no more: not the 20-s grace of a handler that took SIGTERM over.
    assert exited_in < 10, f"the solo worker took {exited_in:.1f}s to exit"
    assert "handed back" not in solo.log(solo.log_start)
