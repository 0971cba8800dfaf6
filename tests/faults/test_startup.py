"""Starting up: a worker whose time limit or listeners' backoff would outlast the broker's
visibility timeout (or whose lease is shorter than its time limit), or that lacks a
variable a listener requires, refuses to start and says why; a listener module that
cannot be imported stops the web, the worker and `pipeline listeners`, naming it; a worker
started while Redis is down waits for it and then works."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from integration.helpers import finished_runs, make_media, new_task_id, send
from integration.procs import run_cli, start_gunicorn, start_worker
from integration.stack import REPO, Stack, pipeline_env

from pipeline.dev.procs import Proc, free_port, wait_for, worker_ready
from pipeline.dev.servers import start_redis

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
    "a lease too short to be renewed in time": (
        {"RUN_LEASE_SECONDS": "2"},
        "RUN_LEASE_SECONDS (2) must be at least 3",
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
    env = worker_env(broker_url, tmp_path, **variables)

    worker = refused(start_worker(env, tmp_path))

    assert f"error: {reason}" in worker.log()


def worker_env(broker_url: str, tmp_path: Path, **variables: str) -> dict[str, str]:
    """What a worker needs (the listeners' required variables too), plus `variables`."""
    required = {"ITTYBIT_API_KEY": "key", "PUBLIC_URL": "https://clippable.test"}
    return pipeline_env(
        celery_broker_url=broker_url,
        pipeline_var_dir=str(tmp_path / "var"),
        **{**required, **variables},
    )


def refused(proc: Proc) -> Proc:
    """`proc` once it has exited, having refused to start (a worker never got ready)."""
    try:
        wait_for(
            lambda: not proc.alive or worker_ready(proc)(), what=f"{proc.name} decides", timeout=60
        )
    finally:
        proc.stop()
    assert not worker_ready(proc)(), f"{proc.name} started"
    assert proc.popen.returncode != 0
    return proc


def test_a_worker_without_a_variable_a_listener_requires_refuses_to_start_naming_it(
    broker_url: str, tmp_path: Path
) -> None:
    env = worker_env(broker_url, tmp_path, PUBLIC_URL="")

    worker = refused(start_worker(env, tmp_path))

    assert "error: not set: PUBLIC_URL (needed by generate_thumbnail)" in worker.log()


BROKEN = "import json\nfrom pipeline import Listener, Contxt\n"  # a typo, as it happens


@pytest.fixture
def broken_listener(tmp_path: Path) -> str:
    """A PYTHONPATH with `listeners/typo.py`, which cannot be imported."""
    (tmp_path / "listeners").mkdir()
    (tmp_path / "listeners" / "typo.py").write_text(BROKEN)
    return f"{tmp_path}:{REPO}"


def test_a_listener_module_that_cannot_be_imported_stops_every_process_naming_it(
    broker_url: str, tmp_path: Path, broken_listener: str
) -> None:
    env = {
        **worker_env(broker_url, tmp_path),
        "PYTHONPATH": broken_listener,
        "ITTYBIT_WEBHOOK_SECRET": "whsec_startup",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'p.db'}",
    }
    expected = (
        "error: listener module listeners.typo failed to import: ImportError: cannot import "
        f"name 'Contxt' from 'pipeline' ({REPO}/pipeline/__init__.py) "
        f"({tmp_path}/listeners/typo.py:2)"
    )

    worker = refused(start_worker(env, tmp_path))
    web = refused(start_gunicorn(env, tmp_path, free_port(), name="web"))
    listed = run_cli(["listeners"], env, tmp_path)

    for output in (worker.log(), web.log(), listed.stderr):
        lines = [line for line in output.splitlines() if "listeners.typo" in line]
        assert lines == [expected], output[-3000:]
    assert listed.returncode == 2


def test_a_worker_within_the_visibility_timeout_starts(broker_url: str, tmp_path: Path) -> None:
    env = worker_env(
        broker_url,
        tmp_path,
        TASK_TIME_LIMIT="300",
        RUN_LEASE_SECONDS="10",
        BROKER_VISIBILITY_TIMEOUT="601",  # just past NotifyUser's backoff cap
    )
    worker = start_worker(env, tmp_path)
    try:
        wait_for(worker_ready(worker), what="the worker", timeout=60, proc=worker)
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
    wait_for(worker_ready(worker), what="the worker, once Redis is up", timeout=60, proc=worker)
    runs = wait_for(finished_runs(stack.db, task_id), timeout=30, what="the runs end")

    assert answer.status_code == 200, answer.text
    assert waited, "the worker should wait for Redis, neither exit nor claim readiness"
    assert stack.procs["worker"] is worker and worker.alive  # the same process: no restart
    assert {(r.state, r.attempts) for r in runs.values()} == {("succeeded", 1)}
    assert probe.effects(task_id) == [(runs["probe"].id, 1)]
