"""Webhooks that never arrive: the relay asks Ittybit about jobs quiet past RECONCILE_AFTER
and feeds their outcome through the inbox. The media completes, its thumbnail too, its
owner is notified once; the real webhook arriving afterwards is a duplicate; Ittybit
down meanwhile invents nothing and is asked again."""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Iterator

import pytest
from integration.helpers import emulator, get_media, notifications, send
from integration.stack import BACKENDS, Stack
from sqlalchemy import select
from sqlalchemy.orm import Session

from pipeline.dev.procs import wait_for
from pipeline.dev.samples import webhook_payload
from pipeline.models import WebhookEvent

from .harness import start_fault_stack

pytestmark = pytest.mark.integration

TIMINGS = {"RECONCILE_AFTER": "2", "RECONCILE_INTERVAL": "2"}


@pytest.fixture(scope="module", params=BACKENDS)
def stack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp(f"reconcile-{request.param}")
    stack = start_fault_stack(request.param, root, env=TIMINGS)
    yield stack
    stack.stop()


def submit(stack: Stack) -> tuple[int, str]:
    email = f"rec-{secrets.token_hex(5)}@example.test"
    url = f"https://clippable.test/projects/{secrets.token_hex(4)}.mov"
    done = stack.cli("submit", url, "--kind", "video", "--user", email)
    assert done.returncode == 0, done.stdout + done.stderr
    found = re.fullmatch(r"media (\d+) job (\S+)", done.stdout.strip())
    assert found, done.stdout
    return int(found[1]), found[2]


def stored(stack: Stack, task_id: str) -> list[WebhookEvent]:
    with Session(stack.db) as session:
        return list(session.scalars(select(WebhookEvent).filter_by(task_id=task_id)))


def finished(stack: Stack, media_id: int) -> bool:
    media = get_media(stack.db, media_id)
    return media.status == "completed" and bool(media.thumbnail_url)


def test_a_job_whose_webhooks_never_arrive_completes_with_its_thumbnail_and_one_notification(
    stack: Stack,
) -> None:
    emulator(stack.emulator_url, "faults", "POST", {"lost_deliveries": 2})  # job + thumbnail
    media_id, job_id = submit(stack)

    wait_for(lambda: finished(stack, media_id), timeout=40, what="the media reconciled")
    media = get_media(stack.db, media_id)

    assert len(notifications(stack.db, media_id)) == 1
    for task_id in (job_id, media.thumbnail_task_id):
        assert task_id is not None
        [event] = stored(stack, task_id)
        assert event.status == "succeeded" and json.loads(event.raw_body)["reconciled"] is True
    lost = [d for d in emulator(stack.emulator_url, "deliveries") if d.get("outcome") == "lost"]
    assert {d["job_id"] for d in lost} >= {job_id, media.thumbnail_task_id}

    # The real webhook, late: the same delivery key, so a duplicate, nothing run again.
    jobs = {j["id"]: j for j in emulator(stack.emulator_url, "jobs")}
    late = json.dumps(webhook_payload(jobs[job_id], "B")).encode()
    answer = send(stack.webhook_url, late, stack.secret)
    assert answer.status_code == 200 and answer.json()["status"] == "duplicate", answer.text
    assert len(notifications(stack.db, media_id)) == 1


def test_ittybit_down_during_reconciliation_invents_nothing_and_is_asked_again(
    stack: Stack,
) -> None:
    emulator(stack.emulator_url, "faults", "POST", {"lost_deliveries": 1})
    emulator(
        stack.emulator_url,
        "faults",
        "POST",
        {"status": 503, "count": 2, "method": "GET", "path": "/jobs/"},
    )
    media_id, job_id = submit(stack)

    wait_for(
        lambda: not emulator(stack.emulator_url, "faults")["rules"],
        timeout=30,
        what="two reconciliation passes answered 503",
    )
    assert not [e for e in stored(stack, job_id) if e.status == "succeeded"]  # nothing invented

    wait_for(
        lambda: get_media(stack.db, media_id).status == "completed", timeout=30, what="reconciled"
    )
    asked = [
        r["status"]
        for r in emulator(stack.emulator_url, "requests")
        if r["method"] == "GET" and r["path"] == f"/jobs/{job_id}"
    ]
    assert asked[:2] == [503, 503] and 200 in asked
