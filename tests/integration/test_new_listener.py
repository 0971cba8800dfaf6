"""Adding a listener is writing a module: the README's example, dropped into a
`listeners/` directory on PYTHONPATH, is registered, dispatched and run by the real web
and worker; `pipeline listeners` lists it in full when piped; its dead letters show in
`pipeline runs`, in the worker's log at ERROR, and as FAILURE in Flower."""

from __future__ import annotations

import json
import secrets

import pytest
import requests
from sqlalchemy import select
from sqlalchemy.orm import Session

from pipeline.dev.procfile import start_process
from pipeline.dev.procs import free_port, http_answers, wait_for
from pipeline.models import Notification

from .helpers import delivery, finished_runs, make_media, make_user, new_task_id, send
from .stack import Stack

pytestmark = pytest.mark.integration


def test_the_readme_listener_runs_on_the_deliveries_it_wants(listener_stack: Stack) -> None:
    stack = listener_stack
    task_id = new_task_id()
    media_id = make_media(stack.db, task_id=task_id, user_id=make_user(stack.db))
    failed = delivery("B", task_id, status="failed", error="no audio stream")

    answer = send(stack.webhook_url, failed, stack.secret)

    assert answer.status_code == 200, answer.text
    assert "flag_for_review" in {run["listener"] for run in answer.json()["runs"]}
    runs = wait_for(finished_runs(stack.db, task_id), what="every run ends")
    flagged = runs["flag_for_review"]
    assert (flagged.state, flagged.attempts) == ("succeeded", 1), flagged.last_error
    assert flagged.result == {"media_id": media_id}
    with Session(stack.db) as session:
        notes = session.scalars(select(Notification).filter_by(media_id=media_id)).all()
    assert [(n.kind, n.message) for n in notes] == [
        ("review", "Your export failed (no audio stream); we are looking at it.")
    ]


def test_piped_pipeline_listeners_prints_every_name_in_full(listener_stack: Stack) -> None:
    listed = listener_stack.cli("listeners", env={"COLUMNS": "20"})

    assert listed.returncode == 0, listed.stderr
    header, *rows = listed.stdout.splitlines()
    assert header.split("\t")[:3] == ["listener", "task", "wants"]
    by_name = {row.split("\t")[0]: row.split("\t") for row in rows}
    assert by_name["flag_for_review"][1:3] == ["listeners.flag_for_review", "failed video jobs"]
    assert by_name["flag_for_review"][-1] == "listeners.flag_for_review"
    assert by_name["generate_thumbnail"][4] == "ITTYBIT_API_KEY PUBLIC_URL"
    as_json = json.loads(listener_stack.cli("listeners", "--json").stdout)
    assert {row["listener"] for row in as_json} >= {"flag_for_review", "notify_user"}


def flower_states(url: str, auth: tuple[str, str], run_ids: set[int]) -> dict[str, str]:
    """Flower's state of each task run for `run_ids`, by task name."""
    tasks = requests.get(f"{url}/api/tasks", auth=auth, timeout=5).json()
    return {
        task["name"]: task["state"]
        for task in tasks.values()
        if json.loads(task.get("args") or "[]")[:1] and json.loads(task["args"])[0] in run_ids
    }


def test_a_dead_letter_shows_in_runs_in_the_log_and_in_flower(listener_stack: Stack) -> None:
    stack = listener_stack
    port, auth = free_port(), ("ops", secrets.token_hex(8))
    env = {**stack.env, "PORT": str(port), "FLOWER_BASIC_AUTH": ":".join(auth)}
    flower = start_process("flower", env, stack.logs, "--address=127.0.0.1")
    worker = stack.procs["worker"]
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(http_answers(url), what="flower", timeout=60, proc=flower)
        # Flower turns the worker's task events on by itself; the worker says so.
        wait_for(lambda: "enabled by remote" in worker.log(), what="task events", timeout=30)
        task_id = new_task_id()
        media_id = make_media(stack.db, task_id=task_id, user_id=None)  # nobody to ask
        since = worker.log_size()
        answer = send(stack.webhook_url, delivery("B", task_id, status="failed"), stack.secret)
        run_ids = {run["id"] for run in answer.json()["runs"]}
        runs = wait_for(finished_runs(stack.db, task_id), what="every run ends")
        states = wait_for(
            # Each task in a final state: Flower may have seen a task start, not yet end.
            lambda: (
                len(found := flower_states(url, auth, run_ids)) == len(run_ids)
                and set(found.values()) <= {"SUCCESS", "FAILURE"}
                and found
            ),
            what="Flower knows how each task ended",
            timeout=30,
        )
    finally:
        flower.stop()

    dead = runs["flag_for_review"]
    assert dead.state == "failed"
    assert dead.last_error == f"PermanentError: media {media_id} has no owner to ask for a review"
    assert states == {
        "listeners.flag_for_review": "FAILURE",
        "listeners.update_media_record": "SUCCESS",
    }
    log = worker.log(since)
    assert "ERROR pipeline.tasks[" in log
    assert f"run {dead.id} (flag_for_review, event {dead.event_id}) failed: " in log
    listed = stack.cli("runs", "--state", "failed", "--listener", "flag_for_review")
    rows = [r.split("\t") for r in listed.stdout.splitlines()[1:]]
    [row] = [r for r in rows if r[0] == str(dead.id)]
    assert row[3] == "failed" and row[-1].endswith("has no owner to ask for a review")
