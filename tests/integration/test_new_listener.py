"""Adding a listener is writing a module: one dropped into a `listeners/` directory on
PYTHONPATH is registered, dispatched and run by the real web and worker processes."""

from __future__ import annotations

import pytest

from .helpers import (
    delivery,
    finished_runs,
    make_media,
    make_user,
    new_task_id,
    send,
    wait_until,
)
from .stack import Stack

pytestmark = pytest.mark.integration


def test_a_listener_module_added_on_the_path_runs_on_each_delivery_and_is_listed(
    probe_stack: Stack,
) -> None:
    stack = probe_stack
    task_id = new_task_id()
    make_media(stack.db, task_id=task_id, user_id=make_user(stack.db))
    effects = stack.logs.parent / "echo_probe.effects"

    answer = send(stack.webhook_url, delivery("B", task_id), stack.secret)

    assert answer.status_code == 200, answer.text
    assert "echo_probe" in {run["listener"] for run in answer.json()["runs"]}
    runs = wait_until(finished_runs(stack.db, task_id), what="every run ends")
    probe = runs["echo_probe"]
    assert (probe.state, probe.attempts) == ("succeeded", 1), probe.last_error
    assert probe.result == {"echoed": task_id}
    assert effects.read_text().splitlines() == [f"{task_id} {probe.id}"]
    assert runs["update_media_record"].state == "succeeded"
    listed = stack.cli("listeners", env={"COLUMNS": "200"})
    assert listed.returncode == 0, listed.stderr
    [row] = [line for line in listed.stdout.splitlines() if "echo_probe" in line]
    assert "listeners.echo_probe" in row
    assert "every succeeded delivery" in row
