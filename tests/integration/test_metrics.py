"""`/metrics` over the real stack (gunicorn with two workers, a Celery worker with two
pool processes): after known traffic its counters and gauges equal the ledger, whichever
process counted and whichever web worker answers the scrape, and promtool accepts it."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import func, select

from integration.helpers import finished_runs, make_media, new_task_id, send
from integration.stack import BACKENDS, METRICS_TOKEN, Stack, start_stack
from pipeline.dev.procs import wait_for
from pipeline.models import ListenerRun

from .helpers import delivery

pytestmark = pytest.mark.integration


def scrape(stack: Stack) -> str:
    answer = requests.get(
        f"{stack.web_url}/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}, timeout=10
    )
    assert answer.status_code == 200, answer.text
    return answer.text


def samples(text: str) -> dict[str, dict[tuple[Any, ...], float]]:
    found: dict[str, dict[tuple[Any, ...], float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return found


def webhooks(text: str) -> dict[str, float]:
    counts = samples(text)["ittybit_pipeline_webhooks_total"]
    return {dict(labels)["outcome"]: value for labels, value in counts.items()}


@pytest.fixture(scope="module", params=BACKENDS)
def quiet_stack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    """A stack of its own: the shared one still receives the emulator's late webhooks of
    earlier tests, which would count too."""
    stack = start_stack(request.param, tmp_path_factory.mktemp(f"metrics-{request.param}"))
    yield stack
    stack.stop()


def test_metrics_after_known_traffic_equal_the_ledger(quiet_stack: Stack) -> None:
    stack = quiet_stack
    before_text = scrape(stack)
    before = webhooks(before_text)
    before_runs = samples(before_text).get("ittybit_pipeline_run_duration_seconds_count", {})
    before_done = samples(before_text)["ittybit_pipeline_receipt_to_done_seconds_count"]
    task_ids = [new_task_id() for _ in range(3)]
    for task_id in task_ids:
        make_media(stack.db, task_id=task_id, user_id=None)
        body = delivery("B", task_id, status="failed")
        assert send(stack.webhook_url, body, stack.secret).json()["status"] == "accepted"
    assert send(stack.webhook_url, body, stack.secret).json()["status"] == "duplicate"
    assert send(stack.webhook_url, body, "whsec_wrong").status_code == 401
    ours = 0
    for task_id in task_ids:
        ours += len(wait_for(finished_runs(stack.db, task_id), timeout=30, what="the runs end"))
    expected = {**before}
    for outcome, n in (("accepted", 3), ("duplicate", 1), ("rejected_signature", 1)):
        expected[outcome] = expected.get(outcome, 0) + n

    # Counts reach the database within 2 s, a page is cached 5 s: it converges.
    def settled() -> str | None:
        text = scrape(stack)
        return text if webhooks(text) == expected else None

    text = wait_for(settled, timeout=20, what=f"webhooks_total to reach {expected}")
    with stack.db.connect() as conn:
        ledger = dict(
            ((listener, state.value), n)
            for listener, state, n in conn.execute(
                select(ListenerRun.listener, ListenerRun.state, func.count()).group_by(
                    ListenerRun.listener, ListenerRun.state
                )
            )
        )
    gauges = {
        (dict(k)["listener"], dict(k)["state"]): v
        for k, v in samples(text)["ittybit_pipeline_runs"].items()
        if v
    }
    assert gauges == ledger
    found = samples(text)
    runs_now = found["ittybit_pipeline_run_duration_seconds_count"]
    ended = sum(runs_now.values()) - sum(before_runs.values())
    assert ended == ours  # each run ended once (no retries here)
    done = found["ittybit_pipeline_receipt_to_done_seconds_count"][()] - before_done[()]
    assert done == 3

    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool is missing: apt-get install -y prometheus (.ci/run does)")
    checked = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, check=False
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
