"""The webhook endpoint under gunicorn: duplicates (one after another and all at once),
forged signatures, and a database that is down."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from pipeline.dev.procs import Proc, free_port, http_answers, wait_for
from pipeline.dev.servers import start_redis

from .helpers import (
    delivery,
    events_for,
    finished_runs,
    make_media,
    make_user,
    new_task_id,
    runs_for,
    send,
)
from .procs import start_gunicorn
from .stack import Stack, pipeline_env

pytestmark = pytest.mark.integration

COPIES = 20


def test_a_repeated_delivery_answers_duplicate_and_runs_nothing_again(stack: Stack) -> None:
    task_id = new_task_id()
    make_media(stack.db, task_id=task_id, user_id=make_user(stack.db))
    body = delivery("B", task_id)

    first = send(stack.webhook_url, body, stack.secret)
    runs = wait_for(finished_runs(stack.db, task_id), what="the first delivery's runs end")
    second = send(stack.webhook_url, body, stack.secret)

    assert first.status_code == 200 and first.json()["status"] == "accepted", first.text
    assert second.status_code == 200, second.text
    assert second.json() == {"status": "duplicate", "event_id": first.json()["event_id"]}
    time.sleep(1)  # a second run, had one been dispatched, would be visible by now
    again = runs_for(stack.db, task_id)
    assert [(r.id, r.state, r.attempts) for r in again] == [
        (r.id, r.state, r.attempts) for r in sorted(runs.values(), key=lambda r: r.id)
    ]
    assert len(events_for(stack.db, task_id)) == 1


def test_twenty_copies_at_the_same_instant_store_one_event_and_one_run_per_listener(
    stack: Stack,
) -> None:
    task_id = new_task_id()
    make_media(stack.db, task_id=task_id, user_id=make_user(stack.db))
    body = delivery("C", task_id)
    barrier = threading.Barrier(COPIES)

    def post(_: int) -> requests.Response:
        barrier.wait(timeout=10)
        return send(stack.webhook_url, body, stack.secret, timeout=30)

    with ThreadPoolExecutor(COPIES) as pool:
        answers = list(pool.map(post, range(COPIES)))

    assert [a.status_code for a in answers] == [200] * COPIES, [a.text for a in answers]
    statuses = Counter(a.json()["status"] for a in answers)
    assert statuses == {"accepted": 1, "duplicate": COPIES - 1}
    assert len({a.json()["event_id"] for a in answers}) == 1
    [accepted] = [a.json() for a in answers if a.json()["status"] == "accepted"]
    wait_for(finished_runs(stack.db, task_id), what="the runs end")
    [event] = events_for(stack.db, task_id)
    runs = runs_for(stack.db, task_id)
    assert Counter(run.listener for run in runs) == Counter(r["listener"] for r in accepted["runs"])
    assert all(run.event_id == event.id for run in runs)
    assert all(run.state == "succeeded" and run.attempts == 1 for run in runs)


def test_a_forged_signature_answers_401_json_and_stores_nothing(stack: Stack) -> None:
    task_id = new_task_id()
    body = delivery("B", task_id)

    forged = send(stack.webhook_url, body, "not-the-secret")
    unsigned = send(stack.webhook_url, body, None)

    for answer in (forged, unsigned):
        assert answer.status_code == 401
        assert answer.headers["Content-Type"].startswith("application/json")
        assert answer.json()["error"] == "invalid_signature"
    assert events_for(stack.db, task_id) == []


@pytest.fixture
def web_without_database(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """gunicorn whose DATABASE_URL names a port where nothing listens; (URL, secret)."""
    redis, broker_url = start_redis(tmp_path)
    secret = "whsec_it_nodb"
    env = pipeline_env(
        database_url=f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/nothing",
        celery_broker_url=broker_url,
        ittybit_webhook_secret=secret,
        pipeline_var_dir=str(tmp_path / "var"),
    )
    port = free_port()
    procs: list[Proc] = [redis]
    try:
        procs.append(start_gunicorn(env, tmp_path, port, name="web-nodb"))
        wait_for(
            http_answers(f"http://127.0.0.1:{port}/healthz"),
            what="gunicorn",
            timeout=30,
            proc=procs[-1],
        )
        yield f"http://127.0.0.1:{port}", secret
    finally:
        for proc in reversed(procs):
            proc.stop()


def test_a_delivery_while_the_database_is_down_answers_503_json_within_5_seconds(
    web_without_database: tuple[str, str],
) -> None:
    base_url, secret = web_without_database

    started = time.monotonic()
    answer = send(f"{base_url}/webhooks/ittybit", delivery("B", new_task_id()), secret)
    elapsed = time.monotonic() - started
    health = requests.get(f"{base_url}/healthz", timeout=10)

    assert answer.status_code == 503, answer.text
    assert answer.json()["error"] == "database_unavailable"
    assert elapsed < 5, f"took {elapsed:.1f}s"
    assert health.status_code == 503
    assert health.json()["database"].startswith("unavailable")
    assert health.json()["broker"] == "ok"
