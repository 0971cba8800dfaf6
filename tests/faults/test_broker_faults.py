"""The broker refused or hung while deliveries arrive: each is answered 200 within 5 s
because it is durable in the database (its runs `pending`), and once the broker is back
(Redis even empty) the relay publishes them and every run finishes with one effect; on
Redis (both databases) and on a RabbitMQ node of the test's own (PostgreSQL)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from integration.helpers import (
    events_for,
    finished_runs,
    make_media,
    new_task_id,
    runs_for,
    timed_send,
)
from integration.stack import Stack

from pipeline.dev.procs import wait_for

from .harness import probe_of, start_fault_stack
from .probe import Probe

pytestmark = pytest.mark.integration

DELIVERIES = 3
LISTENERS = {"update_media_record", "probe"}  # those that want a failed job's delivery


def deliver_while_broken(stack: Stack, probe: Probe) -> list[str]:
    """Send DELIVERIES deliveries; check each was answered 200 within 5 s and is stored
    with its runs pending, none attempted. Their task ids."""
    task_ids = [new_task_id() for _ in range(DELIVERIES)]
    for task_id in task_ids:
        make_media(stack.db, task_id=task_id, user_id=None)
        answer, took = timed_send(
            stack.webhook_url, probe.delivery(task_id, status="failed"), stack.secret, 15
        )
        assert answer.status_code == 200, answer.text
        assert answer.json()["status"] == "accepted"
        assert took < 5, f"the answer took {took:.1f}s"
    for task_id in task_ids:
        assert len(events_for(stack.db, task_id)) == 1
        runs = runs_for(stack.db, task_id)
        assert {r.listener for r in runs} == LISTENERS
        assert {(r.state, r.attempts) for r in runs} == {("pending", 0)}
    return task_ids


def assert_all_finish_once(stack: Stack, probe: Probe, task_ids: list[str]) -> None:
    for task_id in task_ids:
        runs = wait_for(
            stack.supervising(finished_runs(stack.db, task_id)),
            timeout=30,
            what=f"{task_id}'s runs end",
        )
        assert {name: run.state for name, run in runs.items()} == dict.fromkeys(
            LISTENERS, "succeeded"
        )
        assert probe.effects(task_id) == [(runs["probe"].id, 1)]


@pytest.fixture(scope="module")
def rabbitmq_fault_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    stack = start_fault_stack(
        "postgresql", tmp_path_factory.mktemp("faults-rabbitmq"), broker="own-rabbitmq"
    )
    yield stack
    stack.stop()


@pytest.fixture(params=["redis-sqlite", "redis-postgresql", "rabbitmq-postgresql"])
def broken(request: pytest.FixtureRequest) -> Iterator[tuple[Stack, Probe]]:
    broker, backend = request.param.split("-")
    name = "rabbitmq_fault_stack" if broker == "rabbitmq" else f"{backend}_fault_stack"
    stack: Stack = request.getfixturevalue(name)
    stack.heal()
    yield stack, probe_of(stack)
    stack.heal()


def test_deliveries_while_the_broker_refuses_connections_answer_200_and_run_once_it_is_back(
    broken: tuple[Stack, Probe],
) -> None:
    stack, probe = broken
    stack.stop_broker()

    task_ids = deliver_while_broken(stack, probe)
    stack.start_broker()  # Redis empty: whatever it held is gone

    assert_all_finish_once(stack, probe, task_ids)


def test_deliveries_while_the_broker_hangs_answer_200_and_run_once_it_answers_again(
    broken: tuple[Stack, Probe],
) -> None:
    stack, probe = broken
    with stack.broker_frozen():
        task_ids = deliver_while_broken(stack, probe)

    assert_all_finish_once(stack, probe, task_ids)
