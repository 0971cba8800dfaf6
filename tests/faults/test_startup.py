"""Starting up: a worker whose time limit or listeners' backoff would outlast the broker's
visibility timeout (or whose lease is shorter than its time limit) refuses to start and
says why; a worker started while Redis is down waits for it and then works."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from integration.helpers import finished_runs, make_media, new_task_id, send, wait_until
from integration.procs import start_redis, start_worker, wait_for, worker_ready
from integration.stack import Stack, pipeline_env

from .probe import Probe

pytestmark = pytest.mark.integration

# The largest backoff cap among the built-in listeners (NotifyUser's): 600 s.
REFUSED = {
    "a time limit past the visibility timeout": (
        {"TASK_TIME_LIMIT": "900", "RUN_LEASE_SECONDS": "960", "BROKER_VISIBILITY_TIMEOUT": "700"},
        "BROKER_VISIBILITY_TIMEOUT (700s) must exceed the task time limit and every "
        "listener's backoff cap (largest: 900s)",
    ),
    "a backoff cap past the visibility timeout": (
        {"BROKER_VISIBILITY_TIMEOUT": "500"},
        "BROKER_VISIBILITY_TIMEOUT (500s) must exceed the task time limit and every "
        "listener's backoff cap (largest: 600s)",
    ),
    "a lease shorter than the time limit": (
        {"TASK_TIME_LIMIT": "300", "RUN_LEASE_SECONDS": "200"},
        "RUN_LEASE_SECONDS (200) must exceed TASK_TIME_LIMIT (300)",
    ),
}


@pytest.fixture(scope="module")
def broker_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    logs = tmp_path_factory.mktemp("startup")
    redis, url = start_redis(logs)
    yield url
    redis.stop()


@pytest.mark.parametrize("case", REFUSED)
def test_a_worker_configured_past_the_visibility_timeout_refuses_to_start_saying_why(
    case: str, broker_url: str, tmp_path: Path
) -> None:
    variables, reason = REFUSED[case]
    env = pipeline_env(
        celery_broker_url=broker_url, pipeline_var_dir=str(tmp_path / "var"), **variables
    )
    worker = start_worker(env, tmp_path)
    try:
        wait_for(lambda: not worker.alive or worker_ready(worker)(), "the worker to decide", 60)
    finally:
        worker.stop()

    assert not worker_ready(worker)(), "the worker started"
    assert worker.popen.returncode != 0
    assert f"error: {reason}" in worker.log()


def test_a_worker_within_the_visibility_timeout_starts(broker_url: str, tmp_path: Path) -> None:
    env = pipeline_env(
        celery_broker_url=broker_url,
        pipeline_var_dir=str(tmp_path / "var"),
        TASK_TIME_LIMIT="300",
        RUN_LEASE_SECONDS="330",
        BROKER_VISIBILITY_TIMEOUT="601",  # just past NotifyUser's backoff cap
    )
    worker = start_worker(env, tmp_path)
    try:
        wait_for(worker_ready(worker), "the worker", 60, worker)
    finally:
        worker.stop()


@pytest.mark.parametrize("fault_stack", ["sqlite"], indirect=True)  # the broker's affair
def test_a_worker_started_before_redis_waits_and_works_once_redis_comes(
    fault_stack: Stack, probe: Probe
) -> None:
    stack = fault_stack
    stack.procs["worker"].stop()
    stack.stop_redis()
    worker = stack.start_worker(wait=False)
    task_id = new_task_id()
    make_media(stack.db, task_id=task_id, user_id=None)

    answer = send(stack.webhook_url, probe.delivery(task_id, status="failed"), stack.secret)
    time.sleep(3)  # long enough to give up, had it been going to
    waited = worker.alive and not worker_ready(worker)()
    stack.start_redis()
    wait_for(worker_ready(worker), "the worker, once Redis is up", 60, worker)
    runs = wait_until(finished_runs(stack.db, task_id), 30, "the runs end")

    assert answer.status_code == 200, answer.text
    assert waited, "the worker should wait for Redis, neither exit nor claim readiness"
    assert stack.procs["worker"] is worker and worker.alive  # the same process: no restart
    assert {(r.state, r.attempts) for r in runs.values()} == {("succeeded", 1)}
    assert probe.effects(task_id) == [(runs["probe"].id, 1)]
