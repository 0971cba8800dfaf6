"""Publishing runs to Celery: one message per run, carrying only the run id.

The broker is the fast path, never the record: a publish that fails is logged and the run
stays in the database for the relay. After a failure the publisher rests for a few seconds
instead of making every request wait on a broker that is down or hung.

On Redis, each task's message is built once by Celery's own `amqp.as_task_v2` and copied
with the run's ids; a batch goes out as one LPUSH per queue, in one round trip: a sixth of
the CPU of `send_task` per message (bench/README.md). Other transports go through kombu's
producer as usual.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import time
import uuid
from collections.abc import Iterable

import redis
from celery import Celery

from pipeline.listener import task_name

log = logging.getLogger(__name__)

BROKER_TIMEOUT = 2.0  # seconds: connect and read, so a hung broker cannot hold a request


class Publisher:
    """Sends (run_id, listener) pairs to their tasks; one per process."""

    def __init__(self, celery: Celery, rest_after_failure: float = 5.0) -> None:
        self.celery = celery
        self.rest_after_failure = rest_after_failure
        self._resting_until = 0.0
        self._redis = _fast_path_client(celery)
        self._queues: dict[str, str] = {}
        self._templates: dict[tuple[int, str], str] = {}

    def publish(self, runs: Iterable[tuple[int, str]]) -> int:
        """Publish every run, or none on a broker failure; returns how many were sent."""
        batch = list(runs)
        if not batch or time.monotonic() < self._resting_until:
            return 0
        try:
            if self._redis is not None:
                self._push(batch)
            else:
                self._send(batch)
        except Exception as exc:
            self._resting_until = time.monotonic() + self.rest_after_failure
            log.warning(
                "could not publish %d run(s) (%s); the relay will publish them",
                len(batch),
                type(exc).__name__,
            )
            return 0
        return len(batch)

    def backlog(self) -> int | None:
        """Messages waiting in the default queue, or None when the broker cannot say."""
        queue = str(self.celery.conf.task_default_queue)
        try:
            if self._redis is not None:
                return int(self._redis.llen(queue))
            with self.celery.connection_for_write() as conn:
                declared = conn.default_channel.queue_declare(queue=queue, passive=True)
                return int(declared.message_count)
        except Exception:
            return None

    def _send(self, batch: list[tuple[int, str]]) -> None:
        with self.celery.producer_or_acquire() as producer, producer.batch():
            for run_id, listener in batch:
                self.celery.send_task(task_name(listener), args=[run_id], producer=producer)

    def _push(self, batch: list[tuple[int, str]]) -> None:
        """One LPUSH per queue carrying all its messages, in one round trip."""
        assert self._redis is not None
        queues: dict[str, list[bytes]] = {}
        for run_id, listener in batch:
            name = task_name(listener)
            queues.setdefault(self._queue(name), []).append(self._message(name, run_id))
        if len(queues) == 1:
            [(queue, messages)] = queues.items()
            self._redis.lpush(queue, *messages)
            return
        pipe = self._redis.pipeline(transaction=False)
        for queue, messages in queues.items():
            pipe.lpush(queue, *messages)
        pipe.execute()

    def _queue(self, name: str) -> str:
        if name not in self._queues:
            route = self.celery.amqp.router.route({}, name)
            self._queues[name] = route["queue"].name
        return self._queues[name]

    def _message(self, name: str, run_id: int) -> bytes:
        """The JSON kombu's Redis transport would store for `send_task(name, [run_id])`.

        Celery's `as_task_v2` builds the message once per task name and process (its
        `origin` names the pid), as JSON with placeholders; each run then only fills in
        its ids and argument.
        """
        task_id = str(uuid.uuid4())
        body = base64.b64encode(_BODY % run_id).decode()
        return (
            self._template(name)
            .replace(_TASK_ID, task_id)
            .replace(_RUN_ID, str(run_id))
            .replace(_B64_BODY, body)
            .replace(_DELIVERY_TAG, str(uuid.uuid4()))
            .encode()
        )

    def _template(self, name: str) -> str:
        key = (os.getpid(), name)
        if key not in self._templates:
            message = self.celery.amqp.as_task_v2("", name, args=[0], kwargs={}, ignore_result=True)
            if json.dumps(message.body).encode() != _BODY % 0:
                raise RuntimeError(f"Celery's task message changed shape: {message.body!r}")
            envelope = {
                "body": _B64_BODY,
                "content-encoding": "utf-8",
                "content-type": "application/json",
                "headers": {
                    **message.headers,
                    "id": _TASK_ID,
                    "root_id": _TASK_ID,
                    "argsrepr": f"[{_RUN_ID}]",
                },
                "properties": {
                    **message.properties,
                    "correlation_id": _TASK_ID,
                    "delivery_mode": 2,
                    "delivery_info": {"exchange": "", "routing_key": self._queue(name)},
                    "priority": 0,
                    "body_encoding": "base64",
                    "delivery_tag": _DELIVERY_TAG,
                },
            }
            self._templates[key] = json.dumps(envelope)
        return self._templates[key]


# A task body: the run id, no kwargs, and Celery's "embed" (no callbacks, chain or chord).
_BODY = b'[[%d], {}, {"callbacks": null, "errbacks": null, "chain": null, "chord": null}]'
# Placeholders in a template; none can occur in what Celery puts in a message.
_TASK_ID, _RUN_ID, _B64_BODY, _DELIVERY_TAG = "<task-id>", "<run-id>", "<body>", "<tag>"


def _fast_path_client(celery: Celery) -> redis.Redis | None:
    """A Redis client for the pipelined path, when the broker is a plain Redis."""
    url = str(celery.conf.broker_url or "")
    options = celery.conf.broker_transport_options or {}
    if not url.startswith(("redis://", "rediss://")) or options.get("global_keyprefix"):
        return None
    return redis.Redis.from_url(
        url, socket_timeout=BROKER_TIMEOUT, socket_connect_timeout=BROKER_TIMEOUT
    )
