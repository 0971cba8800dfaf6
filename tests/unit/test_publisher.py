"""The Redis fast path without a Redis: when it applies, and the messages it builds
(tests/integration/test_publishing.py holds them to send_task's in a real Redis)."""

from __future__ import annotations

import base64
import dataclasses
import json
from typing import Any

import pytest
from celery import Celery
from celery.signals import after_task_publish

from pipeline.fast_publish import RedisFastPath, ShapeChanged, unsupported_by
from pipeline.runtime import create_celery
from pipeline.settings import Settings


@pytest.fixture
def celery(settings: Settings) -> Celery:
    # A Redis URL nobody listens on: building a message never touches the network.
    return create_celery(dataclasses.replace(settings, broker_url="redis://127.0.0.1:9/0"))


def test_messages_for_one_task_share_nothing_but_its_name(celery: Celery) -> None:
    fast = RedisFastPath(celery)
    one, two = (json.loads(fast.message("listeners.notify_user", n)) for n in (1, 2))

    assert one["headers"]["task"] == two["headers"]["task"] == "listeners.notify_user"
    assert one["headers"]["id"] != two["headers"]["id"]
    assert one["properties"]["delivery_tag"] != two["properties"]["delivery_tag"]
    assert (one["headers"]["argsrepr"], two["headers"]["argsrepr"]) == ("[1]", "[2]")
    assert json.loads(base64.b64decode(two["body"]))[0] == [2]


def test_a_message_shape_the_template_does_not_copy_is_refused(celery: Celery) -> None:
    celery.conf.task_protocol = 1

    with pytest.raises(ShapeChanged, match=r"listeners\.notify_user"):
        RedisFastPath(celery).message("listeners.notify_user", 1)


def test_the_fast_path_applies_to_a_plain_redis_broker_only(
    celery: Celery, settings: Settings
) -> None:
    assert unsupported_by(celery) == ""
    assert "redis://" in unsupported_by(create_celery(settings))  # the filesystem broker
    tls = create_celery(dataclasses.replace(settings, broker_url="rediss://127.0.0.1:9/0"))
    assert unsupported_by(tls)
    celery.conf.broker_transport_options = {"global_keyprefix": "app:"}
    assert "prefix" in unsupported_by(celery)


def test_the_fast_path_steps_aside_for_publish_signals_and_sent_events(celery: Celery) -> None:
    def listening(**_: Any) -> None:
        pass

    after_task_publish.connect(listening)
    try:
        assert "signals" in unsupported_by(celery)
    finally:
        after_task_publish.disconnect(listening)
    celery.conf.task_send_sent_event = True
    assert "task-sent" in unsupported_by(celery)
