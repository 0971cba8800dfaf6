"""Publishing against a real redis-server: the fast path's messages are the ones
`send_task` stores (but for their ids), kombu takes them back as the same tasks, and where
the fast path cannot be exact (a changed message shape, publish signals) the publisher
goes through send_task instead."""

from __future__ import annotations

import base64
import dataclasses
import json
import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from celery import Celery
from celery.signals import before_task_publish
from kombu import Connection

from pipeline.dev.procs import Proc, free_port
from pipeline.dev.servers import start_redis
from pipeline.outbox import Publisher
from pipeline.runtime import create_celery
from pipeline.settings import Settings

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    proc, url = start_redis(tmp_path_factory.mktemp("redis"))
    yield url
    proc.stop()


@pytest.fixture
def celery(broker: str, tmp_path: Path) -> Iterator[Celery]:
    redis.Redis.from_url(broker).flushdb()
    settings = Settings.from_env({"PIPELINE_VAR_DIR": str(tmp_path)})
    yield create_celery(dataclasses.replace(settings, broker_url=broker))


def stored(url: str, queue: str = "celery") -> list[dict[str, Any]]:
    """The messages in `queue`, oldest first (workers take from the right: BRPOP)."""
    return [json.loads(m) for m in reversed(redis.Redis.from_url(url).lrange(queue, 0, -1))]


def masked(message: dict[str, Any]) -> dict[str, Any]:
    """A stored message with what differs from one publish to the next taken out."""
    message = json.loads(json.dumps(message))
    task_id = message["headers"]["id"]
    for part in ("headers", "properties"):
        for key, value in list(message[part].items()):
            if value == task_id:
                message[part][key] = "<task id>"
    message["properties"]["delivery_tag"] = "<tag>"
    message["body"] = json.loads(base64.b64decode(message["body"]))
    return message


def test_a_fast_path_message_is_the_one_send_task_stores_but_for_its_ids(
    celery: Celery, broker: str
) -> None:
    assert Publisher(celery, fast=True).publish([(41, "notify_user")]) == 1
    celery.send_task("listeners.notify_user", args=[41])

    ours, celerys = stored(broker)
    assert masked(ours) == masked(celerys)


def test_kombu_takes_back_each_message_as_its_task_and_run_in_order(
    celery: Celery, broker: str
) -> None:
    celery.conf.task_routes = {"listeners.notify_user": {"queue": "mail"}}
    batch = [(1, "update_media_record"), (2, "notify_user"), (3, "generate_thumbnail")]

    assert Publisher(celery, fast=True).publish(batch) == 3

    taken: dict[str, list[tuple[str, Any]]] = {"celery": [], "mail": []}
    waiting = {queue: redis.Redis.from_url(broker).llen(queue) for queue in taken}
    with Connection(broker) as conn:
        for queue, messages in taken.items():
            with conn.SimpleQueue(queue) as simple:
                for _ in range(waiting[queue]):
                    message = simple.get(timeout=5)
                    messages.append((message.headers["task"], message.payload[0]))
                    message.ack()
    assert taken == {
        "celery": [("listeners.update_media_record", [1]), ("listeners.generate_thumbnail", [3])],
        "mail": [("listeners.notify_user", [2])],
    }


def test_a_message_shape_the_fast_path_does_not_know_goes_through_send_task_with_one_error(
    celery: Celery, broker: str, caplog: pytest.LogCaptureFixture
) -> None:
    celery.conf.task_protocol = 1  # Celery's other message format
    publisher = Publisher(celery, fast=True)

    with caplog.at_level(logging.ERROR, logger="pipeline.outbox"):
        assert publisher.publish([(1, "notify_user")]) == 1
        assert publisher.publish([(2, "notify_user")]) == 1

    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "publishing through send_task from now on" in errors[0]
    # Protocol 1 keeps the task name in the body; both runs are there, as Celery wrote them.
    bodies = [json.loads(base64.b64decode(m["body"])) for m in stored(broker)]
    assert [(b["task"], b["args"]) for b in bodies] == [
        ("listeners.notify_user", [1]),
        ("listeners.notify_user", [2]),
    ]


def test_receivers_of_the_publish_signals_see_every_message(celery: Celery, broker: str) -> None:
    seen: list[str] = []

    def trace(sender: str, headers: dict[str, Any], **_: Any) -> None:
        seen.append(sender)
        headers["traceparent"] = "00-trace-span-01"  # what a tracer injects

    before_task_publish.connect(trace)
    try:
        assert Publisher(celery, fast=True).publish([(7, "notify_user")]) == 1
    finally:
        before_task_publish.disconnect(trace)

    assert seen == ["listeners.notify_user"]
    assert stored(broker)[0]["headers"]["traceparent"] == "00-trace-span-01"


def test_a_broker_back_within_the_publish_retry_policy_still_gets_the_message(
    tmp_path: Path,
) -> None:
    port = free_port()
    settings = Settings.from_env({"PIPELINE_VAR_DIR": str(tmp_path)})
    celery = create_celery(dataclasses.replace(settings, broker_url=f"redis://127.0.0.1:{port}/0"))
    celery.conf.task_publish_retry_policy = {"max_retries": 4, "interval_start": 0.5}
    started: list[Proc] = []
    later = threading.Timer(0.3, lambda: started.append(start_redis(tmp_path, port)[0]))
    later.start()
    try:
        began = time.monotonic()
        assert Publisher(celery, fast=True).publish([(9, "notify_user")]) == 1
        assert time.monotonic() - began >= 0.3
        assert [m["headers"]["argsrepr"] for m in stored(f"redis://127.0.0.1:{port}/0")] == ["[9]"]
    finally:
        later.join()
        for proc in started:
            proc.stop()
