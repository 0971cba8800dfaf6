"""The Redis fast path's messages: the same JSON kombu would store for `send_task`."""

from __future__ import annotations

import base64
import dataclasses
import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from pipeline.dispatch import Publisher
from pipeline.runtime import create_celery
from pipeline.settings import Settings


@pytest.fixture
def publisher(settings: Settings) -> Publisher:
    # A Redis URL nobody listens on: building a message never touches the network.
    redis_settings = dataclasses.replace(settings, broker_url="redis://127.0.0.1:9/0")
    return Publisher(create_celery(redis_settings))


def fixed_uuids(monkeypatch: pytest.MonkeyPatch, *values: str) -> None:
    made: Iterator[str] = iter(values)
    monkeypatch.setattr(uuid, "uuid4", lambda: uuid.UUID(next(made)))


def celerys_own(publisher: Publisher, name: str, run_id: int, task_id: str, tag: str) -> Any:
    """The envelope built the long way, by Celery's as_task_v2 for this very message."""
    message = publisher.celery.amqp.as_task_v2(
        task_id, name, args=[run_id], kwargs={}, ignore_result=True
    )
    return {
        "body": base64.b64encode(json.dumps(message.body).encode()).decode(),
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": message.headers,
        "properties": {
            **message.properties,
            "delivery_mode": 2,
            "delivery_info": {"exchange": "", "routing_key": "celery"},
            "priority": 0,
            "body_encoding": "base64",
            "delivery_tag": tag,
        },
    }


def test_each_message_equals_the_one_celery_builds_for_the_same_ids(
    publisher: Publisher, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = [str(uuid.UUID(int=n)) for n in range(1, 5)]
    fixed_uuids(monkeypatch, *ids)

    first = json.loads(publisher._message("listeners.notify_user", 41))
    second = json.loads(publisher._message("listeners.generate_thumbnail", 42))

    assert first == celerys_own(publisher, "listeners.notify_user", 41, ids[0], ids[1])
    assert second == celerys_own(publisher, "listeners.generate_thumbnail", 42, ids[2], ids[3])


def test_messages_for_one_task_share_nothing_but_its_name(publisher: Publisher) -> None:
    one, two = (json.loads(publisher._message("listeners.notify_user", n)) for n in (1, 2))

    assert one["headers"]["id"] != two["headers"]["id"]
    assert one["properties"]["delivery_tag"] != two["properties"]["delivery_tag"]
    assert (one["headers"]["argsrepr"], two["headers"]["argsrepr"]) == ("[1]", "[2]")
    assert json.loads(base64.b64decode(two["body"]))[0] == [2]
