"""The soak: 5,000 signed webhooks through the real stack on PostgreSQL while its worker is
SIGKILLed mid-run, Redis is restarted empty and the broker redelivers messages of runs
already done. Every run finishes, and every effect happens exactly once. A supervisor (this
test) restarts what died, as Heroku or systemd would."""

from __future__ import annotations

import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from celery import Celery
from integration.stack import Stack
from sqlalchemy import func, insert, select

from pipeline.dev.procs import wait_for
from pipeline.listener import task_name
from pipeline.models import ListenerRun, Media, WebhookEvent
from pipeline.signing import SIGNATURE_HEADER, sign

from .harness import probe_of, start_fault_stack
from .probe import Probe

pytestmark = [pytest.mark.integration, pytest.mark.soak]

WEBHOOKS = int(os.environ.get("SOAK_WEBHOOKS", 5000))  # fewer for a quick local try
LISTENERS = ("update_media_record", "probe")  # those that want a failed job's delivery
SENDERS = 8
CHUNK = 100  # deliveries sent between two looks by the supervisor
# Unfinished runs the senders allow: a steady stream, not one burst whose queue wait would
# pass REDELIVER_AFTER (the relay then re-publishes runs that are merely queued; harmless,
# the claim discards the copies, but they cost the worker time).
WINDOW = 1000
KILL_WORKER_AT, RESTART_REDIS_AT = WEBHOOKS // 3, 2 * WEBHOOKS // 3
REDELIVERED = WEBHOOKS // 20  # the first 5%: their runs' messages are delivered twice


@pytest.fixture(scope="module")
def soak_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    # Runs lost with Redis are re-published 30 s after they arrived; WINDOW keeps the queue
    # wait well below that.
    env = {"REDELIVER_AFTER": "30"}
    stack = start_fault_stack("postgresql", tmp_path_factory.mktemp("soak"), env=env)
    yield stack
    stack.stop()


def add_media(stack: Stack, task_ids: list[str]) -> None:
    rows = [
        {
            "task_id": t,
            "kind": "video",
            "input_url": "https://clippable.test/s.mov",
            "status": "queued",
        }
        for t in task_ids
    ]
    with stack.db.begin() as conn:
        conn.execute(insert(Media), rows)


def run_states(stack: Stack) -> Counter[str]:
    query = select(ListenerRun.state, func.count()).group_by(ListenerRun.state)
    with stack.db.connect() as conn:
        return Counter(dict(conn.execute(query).all()))


def redeliver(stack: Stack, task_ids: list[str]) -> int:
    """Publish every run of these deliveries again, as a broker redelivering a message
    would (at-least-once); how many messages."""
    query = (
        select(ListenerRun.id, ListenerRun.listener)
        .join(WebhookEvent)
        .where(WebhookEvent.task_id.in_(task_ids))
    )
    with stack.db.connect() as conn:
        runs = conn.execute(query).all()
    broker = Celery("soak", broker=stack.env["CELERY_BROKER_URL"])
    try:
        for run_id, listener in runs:
            broker.send_task(task_name(listener), args=[run_id])
    finally:
        broker.close()
    return len(runs)


def unfinished(stack: Stack) -> int:
    states = run_states(stack)
    return sum(n for state, n in states.items() if state in ("pending", "running", "retrying"))


def send_through_faults(
    stack: Stack, bodies: list[bytes], kill_when: Callable[[], object]
) -> tuple[Counter[int], int]:
    """Send `bodies` from SENDERS threads, CHUNK at a time, keeping under WINDOW runs
    unfinished; SIGKILL the worker at KILL_WORKER_AT (once `kill_when()` is true) and
    restart Redis empty at RESTART_REDIS_AT. The answers' statuses, and how many messages
    Redis held when it restarted."""
    local = threading.local()
    lost_with_redis = 0

    def deliver(body: bytes) -> int:
        if not hasattr(local, "session"):
            local.session = requests.Session()
        headers = {"Content-Type": "application/json", SIGNATURE_HEADER: sign(body, stack.secret)}
        answer = local.session.post(stack.webhook_url, data=body, headers=headers, timeout=30)
        return answer.status_code

    started = time.monotonic()
    answers: Counter[int] = Counter()
    with ThreadPoolExecutor(SENDERS) as pool:
        for offset in range(0, len(bodies), CHUNK):
            if offset <= RESTART_REDIS_AT < offset + CHUNK:
                lost_with_redis = int(stack.redis("LLEN", "celery") or 0)
                stack.restart_redis()  # empty: every queued and unacked message is gone
            answers.update(pool.map(deliver, bodies[offset : offset + CHUNK]))
            if offset <= KILL_WORKER_AT < offset + CHUNK:
                wait_for(kill_when, timeout=90, what="the moment to kill the worker")
                stack.procs["worker"].kill()  # SIGKILL to the worker and its pool at once
            wait_for(
                stack.supervising(lambda: unfinished(stack) < WINDOW),
                timeout=120,
                what="the backlog",
            )
            print(f"{time.monotonic() - started:5.1f}s sent {offset + CHUNK}: {run_states(stack)}")
    return answers, lost_with_redis


def test_five_thousand_webhooks_through_a_worker_kill_and_a_redis_restart_finish_once_each(
    soak_stack: Stack,
) -> None:
    stack, probe = soak_stack, probe_of(soak_stack)
    task_ids = [f"task_soak_{n:05d}" for n in range(WEBHOOKS)]
    add_media(stack, task_ids)
    bodies = [Probe.delivery(t, status="failed") for t in task_ids]
    # This one's first attempt sleeps, so the kill surely lands in the middle of a run.
    sleeper = task_ids[KILL_WORKER_AT]
    bodies[KILL_WORKER_AT] = Probe.delivery(sleeper, status="failed", sleep=3)
    expected = {"succeeded": WEBHOOKS * len(LISTENERS)}

    started = time.monotonic()
    answers, lost_with_redis = send_through_faults(stack, bodies, lambda: probe.starts(sleeper))
    redelivered = redeliver(stack, task_ids[:REDELIVERED])  # runs long done by now
    wait_for(
        stack.supervising(lambda: run_states(stack) == expected), timeout=120, what="every run ends"
    )
    wait_for(lambda: stack.redis("LLEN", "celery") == "0", timeout=60, what="the queue drains")
    time.sleep(2)  # the last messages taken are handled
    took = time.monotonic() - started

    assert answers == {200: WEBHOOKS}
    with stack.db.connect() as conn:
        assert conn.scalar(select(func.count()).select_from(WebhookEvent)) == WEBHOOKS
        by_status = select(Media.status, func.count()).group_by(Media.status)
        assert dict(conn.execute(by_status).all()) == {"failed": WEBHOOKS}
    assert run_states(stack) == expected
    effects = probe.effect_counts()
    assert set(effects) == set(task_ids)
    assert set(effects.values()) == {1}, [t for t, n in effects.items() if n != 1][:10]
    # The faults really struck: the sleeper's run was taken back from the killed worker,
    # Redis held messages when it restarted, and the redelivered messages were refused.
    assert [s.attempt for s in probe.starts(sleeper)] == [1, 2]
    assert stack.restarts["worker"] >= 1
    assert lost_with_redis > 0
    assert redelivered == REDELIVERED * len(LISTENERS)
    print(
        f"soak: {WEBHOOKS} webhooks, every run done in {took:.0f}s; {lost_with_redis} "
        f"messages lost with Redis, {redelivered} redelivered; restarts {dict(stack.restarts)}"
    )
