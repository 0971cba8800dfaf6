"""The Redis fast path of `outbox.Publisher`: the very message kombu's Redis transport
stores for `send_task(name, args=[run_id])`, built by Celery once per task and filled in
per run, and one LPUSH per queue for a whole batch, in one round trip.

It is used only where it cannot change what is published (`unsupported_by` says why
not): a plain Redis broker (no key prefix, no TLS), no receiver of Celery's publish
signals, no task-sent events. When Celery builds a message the template does not
expect, `ShapeChanged` sends the publisher back to `send_task` for good.
tests/integration/test_publishing.py holds these messages to those `send_task` stores
in a real Redis, byte for byte but for the ids.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Sequence
from typing import Any

import redis
from celery import Celery
from celery.signals import after_task_publish, before_task_publish

# A task body: the run id, no kwargs, and Celery's "embed" (no callbacks, chain or chord).
_BODY = b'[[%d], {}, {"callbacks": null, "errbacks": null, "chain": null, "chord": null}]'
# Placeholders in a template; none can occur in what Celery puts in a message.
_TASK_ID, _RUN_ID, _B64_BODY, _DELIVERY_TAG = "<task-id>", "<run-id>", "<body>", "<tag>"


class ShapeChanged(Exception):
    """Celery built a task message unlike the one the template copies."""


def unsupported_by(celery: Celery) -> str:
    """Why the fast path cannot publish for `celery` as send_task would ('' if it can)."""
    conf = celery.conf
    if not str(conf.broker_url or "").startswith("redis://"):
        return "the broker is not a plain redis:// URL"
    if (conf.broker_transport_options or {}).get("global_keyprefix") or conf.broker_use_ssl:
        return "the broker uses a key prefix or TLS"
    if before_task_publish.receivers or after_task_publish.receivers:
        return "something listens to Celery's publish signals"
    if conf.task_send_sent_event:
        return "task-sent events are on"
    return ""


class RedisFastPath:
    """Publishes (run_id, task name) pairs by LPUSH; one per process (see after_fork)."""

    def __init__(self, celery: Celery) -> None:
        self.celery = celery
        options = celery.conf.broker_transport_options or {}
        timeout = float(options.get("socket_timeout") or celery.conf.broker_connection_timeout)
        self.client = redis.Redis.from_url(
            str(celery.conf.broker_url), socket_timeout=timeout, socket_connect_timeout=timeout
        )
        self._queues: dict[str, str] = {}
        self._templates: dict[str, str] = {}

    def push(self, batch: Sequence[tuple[int, str]]) -> None:
        """One LPUSH per queue carrying all of its messages, in one round trip."""
        queues: dict[str, list[bytes]] = {}
        for run_id, name in batch:
            queues.setdefault(self.queue(name), []).append(self.message(name, run_id))
        if len(queues) == 1:  # the usual case: no pipeline to build
            [(queue, messages)] = queues.items()
            self.client.lpush(queue, *messages)
            return
        pipe = self.client.pipeline(transaction=False)
        for queue, messages in queues.items():
            pipe.lpush(queue, *messages)
        pipe.execute()

    def queue(self, name: str) -> str:
        if name not in self._queues:
            self._queues[name] = self.celery.amqp.router.route({}, name)["queue"].name
        return self._queues[name]

    def message(self, name: str, run_id: int) -> bytes:
        """The JSON kombu's Redis transport would store for `send_task(name, [run_id])`."""
        return (
            self._template(name)
            .replace(_TASK_ID, str(uuid.uuid4()))
            .replace(_RUN_ID, str(run_id))
            .replace(_B64_BODY, base64.b64encode(_BODY % run_id).decode())
            .replace(_DELIVERY_TAG, str(uuid.uuid4()))
            .encode()
        )

    def _template(self, name: str) -> str:
        """The message of `name` with placeholders, as Celery's `create_task_message` (what
        send_task calls, with send_task's arguments) builds it; its `origin` names this
        process, so it is built again after a fork."""
        if name not in self._templates:
            conf = self.celery.conf
            task = self.celery.amqp.create_task_message(
                _TASK_ID,
                name,
                [0],
                {},
                reply_to=self.celery.thread_oid,
                create_sent_event=conf.task_send_sent_event,
                ignore_result=None,  # as send_task leaves it: the task's own setting decides
            )
            headers, properties, body = task.headers, task.properties, task.body
            if not isinstance(headers, dict) or json.dumps(body).encode() != _BODY % 0:
                raise ShapeChanged(f"Celery's task message for {name} is {task!r:.300}")
            envelope: dict[str, Any] = {
                "body": _B64_BODY,
                "content-encoding": "utf-8",
                "content-type": "application/json",
                "headers": {**headers, "root_id": _TASK_ID, "argsrepr": f"[{_RUN_ID}]"},
                "properties": {
                    **properties,
                    "correlation_id": _TASK_ID,
                    "delivery_mode": 2,
                    "delivery_info": {"exchange": "", "routing_key": self.queue(name)},
                    "priority": 0,
                    "body_encoding": "base64",
                    "delivery_tag": _DELIVERY_TAG,
                },
            }
            self._templates[name] = json.dumps(envelope)
        return self._templates[name]

    def backlog(self, queue: str) -> int:
        return int(self.client.llen(queue))

    def close(self) -> None:
        self.client.close()
