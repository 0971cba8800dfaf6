"""The emulator's memory: jobs moving through their statuses, webhook deliveries retried
with backoff (each attempt: deliveries.py), idempotency keys, fault rules and the logs
tests read.

One lock guards the state; timed work runs on the Scheduler, never in a request's thread.
"""

from __future__ import annotations

import copy
import logging
import secrets
import threading
import time
from collections import deque
from dataclasses import dataclass, replace
from typing import Any

from pipeline.dev import sender
from pipeline.dev.emulator.clock import Scheduler
from pipeline.dev.emulator.deliveries import Delivery, attempt
from pipeline.dev.emulator.jobs import ApiError, EmulatorConfig, JobRequest, output
from pipeline.dev.samples import webhook_payload

log = logging.getLogger(__name__)

LOG_LIMIT = 10_000  # entries kept per log; a long-running emulator must not grow forever
IDEMPOTENCY_TTL = 24 * 3600.0


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class Job:
    data: dict[str, Any]  # what the API answers
    request: JobRequest
    files_url: str
    fail: str | None
    delivery_failures: int


@dataclass(frozen=True)
class Replay:
    fingerprint: str
    status: int
    body: dict[str, Any]
    at: float


class Emulator:
    """Everything the emulator remembers, guarded by one lock."""

    def __init__(self, config: EmulatorConfig) -> None:
        self.config = config
        self.closing = threading.Event()  # wakes requests hanging on a fault
        self._lock = threading.Lock()
        self._scheduler = Scheduler()
        self._reset()

    def _reset(self) -> None:
        self._jobs: dict[str, Job] = {}
        self._keys: dict[str, Replay] = {}
        self._faults: list[dict[str, Any]] = []
        self._fail_jobs: list[str] = []  # reasons for the next jobs created
        self._delivery_failures = 0
        self._lost_deliveries = 0  # the next job ends whose webhook is never sent
        self.requests: deque[dict[str, Any]] = deque(maxlen=LOG_LIMIT)
        self.deliveries: deque[dict[str, Any]] = deque(maxlen=LOG_LIMIT)

    def reset(self) -> None:
        """Forget jobs, keys, faults and logs; work already scheduled for old jobs is dropped."""
        with self._lock:
            self._reset()

    def close(self) -> None:
        self.closing.set()
        self._scheduler.close()

    # --- the API ---------------------------------------------------------------------------

    def create_job(
        self, request: JobRequest, files_url: str, key: str | None, fingerprint: str
    ) -> tuple[int, dict[str, Any], bool]:
        """(HTTP status, job, replayed): a known Idempotency-Key replays the first answer."""
        with self._lock:
            replay = self._keys.get(key) if key else None
            if replay and time.monotonic() - replay.at < IDEMPOTENCY_TTL:
                if replay.fingerprint != fingerprint:
                    raise ApiError(
                        409,
                        "idempotency_conflict",
                        "this Idempotency-Key was first used with a different request body",
                    )
                return replay.status, replay.body, True
            job = self._new_job(request, files_url)
            body = copy.deepcopy(job.data)
            if key:
                self._keys[key] = Replay(fingerprint, 201, body, time.monotonic())
        delay = request.emulator.get("delay", self.config.delay)
        self._scheduler.later(delay / 2, lambda: self._advance(job, delay / 2))
        return 201, body, False

    def _new_job(self, request: JobRequest, files_url: str) -> Job:
        at = now_ms()
        data: dict[str, Any] = {
            "id": f"job_{secrets.token_hex(8)}",
            "object": "job",
            "kind": request.kind,
            "status": "queued",
            "input": request.input,
            "options": request.options,
            "metadata": request.metadata,
            "webhook_url": request.webhook_url,
            "output": None,
            "error": None,
            "created_at": at,
            "updated_at": at,
            "started_at": None,
            "completed_at": None,
        }
        fail = request.emulator.get("fail") or (self._fail_jobs.pop(0) if self._fail_jobs else None)
        job = Job(data, request, files_url, fail, request.emulator.get("delivery_failures", 0))
        self._jobs[data["id"]] = job
        return job

    def job(self, job_id: str) -> dict[str, Any]:
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None:
                raise ApiError(404, "job_not_found", f"no job {job_id!r}")
            return copy.deepcopy(job.data)

    def jobs(self) -> list[dict[str, Any]]:
        with self._lock:
            return [copy.deepcopy(job.data) for job in self._jobs.values()]

    # --- the lifecycle ---------------------------------------------------------------------

    def _advance(self, job: Job, then: float) -> None:
        """queued → processing, then (after `then` seconds) → succeeded | failed."""
        with self._lock:
            if self._jobs.get(job.data["id"]) is not job:
                return  # reset since
            at = now_ms()
            if job.data["status"] == "queued":
                job.data.update(status="processing", started_at=at, updated_at=at)
                self._scheduler.later(then, lambda: self._advance(job, 0))
                wanted = job.request.emulator.get(
                    "processing_webhook", self.config.processing_webhook
                )
            else:
                if job.fail:
                    job.data.update(status="failed", error=job.fail)
                else:
                    job.data.update(status="succeeded", output=output(job.data, job.files_url))
                job.data.update(completed_at=at, updated_at=at)
                wanted = job.request.emulator.get("deliver", True)
                if wanted and self._lost_deliveries > 0:
                    self._lost_deliveries -= 1
                    wanted = False
                if not wanted:  # a webhook that never arrives: only reconciliation finds it
                    self.deliveries.append(
                        {"job_id": job.data["id"], "status": job.data["status"], "outcome": "lost"}
                    )
            delivery = self._delivery(job) if wanted and job.data["webhook_url"] else None
        if delivery is not None:
            self._attempt(delivery)

    def _delivery(self, job: Job) -> Delivery:
        shape = job.request.emulator.get("shape", self.config.shape)
        body = sender.encode(webhook_payload(job.data, shape))
        return Delivery(job.data["id"], job.data["status"], job.data["webhook_url"], shape, body)

    # --- webhook deliveries ----------------------------------------------------------------

    def _attempt(self, delivery: Delivery) -> None:
        """One delivery attempt, logged; a network error or 5xx schedules the next one."""
        with self._lock:
            job = self._jobs.get(delivery.job_id)
            if job is None:
                return  # reset since
            emulated = job.delivery_failures > 0 or self._delivery_failures > 0
            if job.delivery_failures > 0:
                job.delivery_failures -= 1
            elif self._delivery_failures > 0:
                self._delivery_failures -= 1
        entry = attempt(delivery, self.config, emulated)
        self._log_delivery(entry)
        outcome = entry["outcome"]
        if outcome == "retrying":
            pause = self.config.retry_base * 2 ** (delivery.attempt - 1)
            following = replace(delivery, attempt=delivery.attempt + 1)
            self._scheduler.later(pause, lambda: self._attempt(following))

    def _log_delivery(self, entry: dict[str, Any]) -> None:
        with self._lock:
            if entry["job_id"] in self._jobs:
                self.deliveries.append(entry)

    # --- faults and logs -------------------------------------------------------------------

    def add_fault(self, rule: dict[str, Any]) -> None:
        with self._lock:
            if "fail_jobs" in rule:
                self._fail_jobs.extend([rule["error"]] * rule["fail_jobs"])
                self._delivery_failures += rule["delivery_failures"]
                self._lost_deliveries += rule["lost_deliveries"]
            else:
                self._faults.append(rule)

    def faults(self) -> dict[str, Any]:
        with self._lock:
            return {
                "rules": [dict(rule) for rule in self._faults],
                "fail_jobs": len(self._fail_jobs),
                "delivery_failures": self._delivery_failures,
                "lost_deliveries": self._lost_deliveries,
            }

    def clear_faults(self) -> None:
        with self._lock:
            self._faults, self._fail_jobs, self._delivery_failures = [], [], 0
            self._lost_deliveries = 0

    def take_fault(self, method: str, path: str) -> dict[str, Any] | None:
        """The first rule matching this request, its count used up by one."""
        with self._lock:
            for rule in self._faults:
                if (rule["method"] in (None, method)) and path.startswith(rule["path"] or "/"):
                    rule["count"] -= 1
                    if rule["count"] <= 0:
                        self._faults.remove(rule)
                    return dict(rule)
        return None

    def record(self, entry: dict[str, Any]) -> None:
        with self._lock:
            self.requests.append(entry)

    def snapshot(self, entries: deque[dict[str, Any]]) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(entry) for entry in entries]
