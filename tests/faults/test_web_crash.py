"""The web process dies between the commit and the publish (SIGKILL right after the
commit): the sender gets no answer, but the delivery is durable; the relay publishes its
runs, and the sender's retry is recognised as a duplicate."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import requests
from integration.helpers import finished_runs, make_media, new_task_id, runs_for, send
from integration.stack import Stack

from pipeline.dev.procs import wait_for
from pipeline.models import ListenerRun
from pipeline.signing import sign

from .probe import Probe

pytestmark = pytest.mark.integration

CRASHING_APP = "crashing_web:create_app()"  # installed beside the probe


def sorted_runs(runs: dict[str, ListenerRun]) -> list[ListenerRun]:
    return sorted(runs.values(), key=lambda r: r.id)


@pytest.fixture
def crashing_web(fault_stack: Stack) -> Iterator[str]:
    """A second gunicorn (same database and broker) whose worker dies after committing a
    delivery sent with the X-Die-After-Commit header; its webhook URL."""
    url = fault_stack.start_web("web-crashing", app=CRASHING_APP)
    yield f"{url}/webhooks/ittybit"
    fault_stack.procs.pop("web-crashing").stop()


def test_a_web_process_killed_after_the_commit_leaves_runs_that_the_relay_delivers_once(
    fault_stack: Stack, probe: Probe, crashing_web: str
) -> None:
    stack = fault_stack
    task_id = new_task_id()
    make_media(stack.db, task_id=task_id, user_id=None)
    body = probe.delivery(task_id, status="failed")
    signed = {"Ittybit-Signature": sign(body, stack.secret), "X-Die-After-Commit": "1"}

    with pytest.raises(requests.ConnectionError):
        requests.post(crashing_web, data=body, headers=signed, timeout=10)
    stored = runs_for(stack.db, task_id)
    runs = wait_for(
        finished_runs(stack.db, task_id), timeout=30, what="the relay delivers the runs"
    )
    retry = send(stack.webhook_url, body, stack.secret)  # the sender never got its 200

    assert "was sent SIGKILL" in stack.procs["web-crashing"].log()
    assert {(r.listener, r.state, r.attempts) for r in stored} == {
        ("update_media_record", "pending", 0),
        ("probe", "pending", 0),
    }
    assert {(r.state, r.attempts) for r in runs.values()} == {("succeeded", 1)}
    # Published by the relay, not the dying web: the relay moves a run's due time on
    # when it publishes it; a run the web had published would have ended before it was due.
    assert all(r.due_at > s.due_at for r, s in zip(sorted_runs(runs), stored, strict=True))
    assert retry.status_code == 200 and retry.json()["status"] == "duplicate", retry.text
    time.sleep(1)  # a run re-dispatched by the retry would be visible by now
    assert [(r.id, r.state, r.attempts) for r in runs_for(stack.db, task_id)] == [
        (r.id, r.state, r.attempts) for r in sorted_runs(runs)
    ]
    assert probe.effects(task_id) == [(runs["probe"].id, 1)]
