"""A listener that always raises (scenario g): its run ends `failed` after a bounded number
of attempts, with its error kept; the event's other listeners run once, untouched; once the
cause is fixed, `pipeline replay RUN_ID` runs it to success and nothing else again."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import NamedTuple

import pytest
from integration.helpers import (
    delivery,
    finished_runs,
    jobs_requested,
    make_media,
    make_user,
    new_task_id,
    notifications,
    runs_for,
    send,
)
from integration.stack import REPO, Stack, start_stack
from sqlalchemy.orm import Session

from pipeline.dev.procs import wait_for
from pipeline.models import ListenerRun

pytestmark = pytest.mark.integration

MAX_RETRIES = 2
BROKEN_PROBE = f'''
"""Raises until its event is "fixed": a file named after the task in ../fixes."""

from pathlib import Path

from pipeline.listener import Listener, RetryPolicy

ROOT = Path(__file__).resolve().parent.parent


class BrokenProbe(Listener):
    retry = RetryPolicy(max_retries={MAX_RETRIES}, backoff_base=0.1, backoff_cap=0.2)

    def wants(self, event):
        """deliveries whose metadata asks for the broken probe"""
        return bool(event.metadata.get("broken_probe"))

    def handle(self, event, ctx):
        with (ROOT / "broken_probe.attempts").open("a") as attempts:
            attempts.write(f"{{ctx.run_id}} {{ctx.attempt}}\\n")
        if not (ROOT / "fixes" / event.task_id).exists():
            raise RuntimeError(f"broken probe cannot handle {{event.task_id}}")
        return {{"fixed": event.task_id}}
'''


def start_broken_probe_stack(
    backend: str, root: Path, env: Mapping[str, str] | None = None
) -> Stack:
    """A stack whose PYTHONPATH adds `<root>/listeners/broken_probe.py` (`env`: more
    variables for it)."""
    (root / "listeners").mkdir()
    (root / "fixes").mkdir()
    (root / "listeners" / "broken_probe.py").write_text(BROKEN_PROBE)
    return start_stack(backend, root / "stack", pythonpath=f"{root}:{REPO}", env=env)


@pytest.fixture(scope="module")
def broken(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A SQLite stack with the broken probe (test_replay_cli replays on both backends)."""
    running = start_broken_probe_stack("sqlite", tmp_path_factory.mktemp("broken"))
    yield running
    running.stop()


def fix(stack: Stack, task_id: str) -> None:
    """Make the broken probe succeed from now on for this task."""
    (stack.logs.parent / "fixes" / task_id).touch()


def attempts_made(stack: Stack, run_id: int) -> list[int]:
    """The attempt numbers the probe's handle() was really called with for this run."""
    path = stack.logs.parent / "broken_probe.attempts"
    lines = path.read_text().splitlines() if path.exists() else []
    return [int(attempt) for run, attempt in (line.split() for line in lines) if int(run) == run_id]


class Delivered(NamedTuple):
    task_id: str
    media_id: int
    body: bytes
    runs: dict[str, ListenerRun]  # by listener, once every run ended


def deliver_broken(stack: Stack) -> Delivered:
    """A finished video of a new media, which the broken probe fails on."""
    task_id = new_task_id()
    media_id = make_media(stack.db, task_id=task_id, user_id=make_user(stack.db))
    body = delivery("B", task_id, metadata={"broken_probe": True})
    answer = send(stack.webhook_url, body, stack.secret)
    assert answer.status_code == 200, answer.text
    runs = wait_for(finished_runs(stack.db, task_id), timeout=60, what="the runs end")
    return Delivered(task_id, media_id, body, runs)


def run_reaches(stack: Stack, run_id: int, state: str, timeout: float = 30) -> ListenerRun:
    """The run, once it is in `state`."""

    def check() -> ListenerRun | None:
        with Session(stack.db) as session:
            run = session.get(ListenerRun, run_id)
        return run if run is not None and run.state == state else None

    return wait_for(check, timeout=timeout, what=f"run {run_id} is {state}")


def snapshot(runs: list[ListenerRun]) -> dict[str, tuple[object, ...]]:
    return {r.listener: (r.id, r.state, r.attempts, r.finished_at, r.result) for r in runs}


def test_a_listener_that_always_raises_fails_after_bounded_attempts_and_the_others_run_once(
    broken: Stack,
) -> None:
    task_id, media_id, _, runs = deliver_broken(broken)

    probe = runs.pop("broken_probe")
    assert (probe.state, probe.attempts) == ("failed", MAX_RETRIES + 1)
    assert attempts_made(broken, probe.id) == [1, 2, 3]
    assert probe.last_error is not None
    assert probe.last_error.startswith(f"after {MAX_RETRIES + 1} attempts")
    assert probe.last_error.splitlines()[-1] == (
        f"RuntimeError: broken probe cannot handle {task_id}"
    )
    assert {name: (run.state, run.attempts) for name, run in runs.items()} == {
        "update_media_record": ("succeeded", 1),
        "generate_thumbnail": ("succeeded", 1),
        "notify_user": ("succeeded", 1),
    }
    time.sleep(1)  # five backoff periods: another attempt, were one coming, would be logged
    assert attempts_made(broken, probe.id) == [1, 2, 3]
    assert len(notifications(broken.db, media_id)) == 1


def test_after_a_fix_replaying_the_run_succeeds_and_reruns_no_other_listener(
    broken: Stack,
) -> None:
    task_id, media_id, _, runs = deliver_broken(broken)
    probe = runs["broken_probe"]
    before = snapshot(runs_for(broken.db, task_id))
    fix(broken, task_id)

    replayed = broken.cli("replay", str(probe.id))

    assert replayed.returncode == 0, replayed.stderr
    assert re.search(rf"replayed 1 run\(s\): {probe.id}\b", replayed.stdout), replayed.stdout
    again = run_reaches(broken, probe.id, "succeeded")
    assert again.attempts == 1, again.last_error  # a fresh count: the replay's first attempt
    assert again.result == {"fixed": task_id} and again.last_error is None
    assert attempts_made(broken, probe.id) == [1, 2, 3, 1]
    after = snapshot(runs_for(broken.db, task_id))
    assert {k: v for k, v in after.items() if k != "broken_probe"} == {
        k: v for k, v in before.items() if k != "broken_probe"
    }
    assert len(notifications(broken.db, media_id)) == 1
    assert len(jobs_requested(broken.emulator_url, media_id, "image")) == 1
