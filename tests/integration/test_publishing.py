"""The Redis fast path against a real redis-server: what it pushes is what a worker takes."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import redis

from pipeline.dispatch import Publisher
from pipeline.runtime import create_celery
from pipeline.settings import Settings

from .procs import start_redis

pytestmark = pytest.mark.integration


def test_a_batch_lands_in_each_tasks_queue_in_the_order_it_was_given(tmp_path: Path) -> None:
    proc, url = start_redis(tmp_path)
    try:
        defaults = Settings.from_env({"PIPELINE_VAR_DIR": str(tmp_path)})
        settings = dataclasses.replace(defaults, broker_url=url)
        celery = create_celery(settings)
        celery.conf.task_routes = {"listeners.notify_user": {"queue": "mail"}}
        batch = [(1, "update_media_record"), (2, "notify_user"), (3, "generate_thumbnail")]

        assert Publisher(celery).publish(batch) == 3

        client = redis.Redis.from_url(url)
        # Workers take from the right of the list (BRPOP): oldest first.
        taken = {
            queue: [json.loads(m)["headers"] for m in reversed(client.lrange(queue, 0, -1))]
            for queue in ("celery", "mail")
        }
        assert [(h["task"], h["argsrepr"]) for h in taken["celery"]] == [
            ("listeners.update_media_record", "[1]"),
            ("listeners.generate_thumbnail", "[3]"),
        ]
        assert [(h["task"], h["argsrepr"]) for h in taken["mail"]] == [
            ("listeners.notify_user", "[2]")
        ]
    finally:
        proc.stop()
