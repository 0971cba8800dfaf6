"""The dead letter and replay, through the CLI (item 2): `pipeline runs --state failed`
shows each failed run with its listener, attempts, last error and event; `pipeline replay`
re-queues exactly the runs chosen, never a succeeded one, and duplicate detection of
deliveries never stands in its way."""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from integration.helpers import (
    delivery,
    emulator,
    finished_runs,
    make_media,
    make_user,
    new_task_id,
    send,
)
from integration.procs import run_cli
from integration.stack import BACKENDS, Stack, pipeline_env

from pipeline.dev.procs import wait_for

from .test_listener_failures import (
    MAX_RETRIES,
    attempts_made,
    deliver_broken,
    fix,
    run_reaches,
    start_broken_probe_stack,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module", params=BACKENDS)
def replaying(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    """A stack with the broken probe, on SQLite and on PostgreSQL."""
    running = start_broken_probe_stack(request.param, tmp_path_factory.mktemp("replay"))
    yield running
    running.stop()


def failed_rows(stack: Stack) -> dict[int, list[str]]:
    """`pipeline runs --state failed` as {run id: its cells} (piped: tab-separated, whole)."""
    listed = stack.cli("runs", "--state", "failed", "--limit", "1000")
    assert listed.returncode == 0, listed.stderr
    header, *lines = listed.stdout.splitlines()
    assert header.split("\t")[0] == "run"
    return {int(line.split("\t")[0]): line.split("\t") for line in lines}


def replay(stack: Stack, *args: str) -> list[int]:
    """`pipeline replay ARGS...`; the run ids it says it re-queued."""
    done = stack.cli("replay", *args)
    assert done.returncode == 0, done.stdout + done.stderr
    found = re.fullmatch(r"replayed (\d+) run\(s\): ([\d ]+|-)", done.stdout.strip())
    assert found, done.stdout
    ids = [int(i) for i in found[2].split()] if found[2] != "-" else []
    assert len(ids) == int(found[1])
    return ids


def test_runs_state_failed_shows_the_listener_attempts_last_error_and_event(
    replaying: Stack,
) -> None:
    task_id, _, _, runs = deliver_broken(replaying)
    probe = runs["broken_probe"]

    rows = failed_rows(replaying)

    run_id, event_id, listener, state, attempts, updated, error = rows[probe.id]
    assert (int(run_id), int(event_id)) == (probe.id, probe.event_id)
    assert (listener, state, attempts) == ("broken_probe", "failed", str(MAX_RETRIES + 1))
    assert error == f"RuntimeError: broken probe cannot handle {task_id}"
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", updated), updated
    others = {run.id for name, run in runs.items() if name != "broken_probe"}
    assert others and not others & rows.keys()


def test_replay_failed_narrowed_by_listener_and_since_requeues_only_the_runs_chosen(
    replaying: Stack,
) -> None:
    first = deliver_broken(replaying)
    time.sleep(1.1)  # --since has whole seconds: `first` ended before the cut
    since = datetime.now(UTC).replace(microsecond=0)
    second = deliver_broken(replaying)
    early, late = first.runs["broken_probe"], second.runs["broken_probe"]
    rule = {"status": 400, "count": 1, "method": "POST", "path": "/jobs"}
    emulator(replaying.emulator_url, "faults", "POST", {**rule, "message": secrets.token_hex(4)})
    other_task = new_task_id()
    make_media(replaying.db, task_id=other_task, user_id=make_user(replaying.db))
    assert send(replaying.webhook_url, delivery("B", other_task), replaying.secret).ok
    thumbnail = wait_for(
        finished_runs(replaying.db, other_task), timeout=30, what="the other runs end"
    )["generate_thumbnail"]
    assert thumbnail.state == "failed", thumbnail.last_error
    fix(replaying, first.task_id)
    fix(replaying, second.task_id)
    cut = since.strftime("%Y-%m-%d %H:%M:%S")

    by_listener = replay(replaying, "--failed", "--listener", "broken_probe", "--since", cut)
    run_reaches(replaying, late.id, "succeeded")
    by_time = replay(replaying, "--failed", "--since", cut)
    run_reaches(replaying, thumbnail.id, "succeeded")

    assert by_listener == [late.id]
    assert by_time == [thumbnail.id]
    assert early.id in failed_rows(replaying)  # fixed, but never chosen
    assert attempts_made(replaying, early.id) == [1, 2, 3]


def test_a_redelivery_is_a_duplicate_yet_replay_still_reruns_the_failed_run_once(
    replaying: Stack,
) -> None:
    task_id, _, body, runs = deliver_broken(replaying)
    probe = runs["broken_probe"]
    fix(replaying, task_id)

    again = send(replaying.webhook_url, body, replaying.secret)
    time.sleep(0.5)  # a re-dispatched run would have made an attempt by now
    untouched = attempts_made(replaying, probe.id)
    replayed = replay(replaying, str(probe.id))
    succeeded = run_reaches(replaying, probe.id, "succeeded")
    replayed_twice = replay(replaying, str(probe.id))
    time.sleep(0.5)

    assert again.status_code == 200 and again.json() == {
        "status": "duplicate",
        "event_id": probe.event_id,
    }
    assert untouched == [1, 2, 3]
    assert replayed == [probe.id]
    assert succeeded.attempts == 1 and succeeded.result == {"fixed": task_id}
    assert replayed_twice == []  # a succeeded run is never replayed: its effect stays single
    assert attempts_made(replaying, probe.id) == [1, 2, 3, 1]


def test_replay_without_run_ids_or_failed_is_a_usage_error(tmp_path: Path) -> None:
    done = run_cli(["replay"], pipeline_env(pipeline_var_dir=str(tmp_path)), tmp_path)

    assert done.returncode == 2
    assert "name RUN_IDs or pass --failed" in done.stderr
