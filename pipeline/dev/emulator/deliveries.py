"""One attempt at delivering a job's webhook, as Ittybit makes it: signed, POSTed with a
timeout, its answer classified (delivered, retrying, gave up, rejected) and logged."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import requests

from pipeline.dev import sender
from pipeline.dev.emulator.jobs import EmulatorConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Delivery:
    job_id: str
    status: str  # the job status this webhook reports
    url: str
    shape: str
    body: bytes
    attempt: int = 1


def attempt(delivery: Delivery, config: EmulatorConfig, emulated_failure: bool) -> dict[str, Any]:
    """POST the delivery (or fail it, `emulated_failure`); its log entry, with `outcome`:
    a network error or a 5xx is `retrying` until the attempts run out (`gave_up`), any
    other non-2xx is `rejected`."""
    started = time.monotonic()
    status, error, answer = _post(delivery, config, emulated_failure)
    retryable = status is None or status >= 500
    if status is not None and 200 <= status < 300:
        outcome = "delivered"
    elif retryable and delivery.attempt < config.max_attempts:
        outcome = "retrying"
    else:
        outcome = "gave_up" if retryable else "rejected"
    log.info(
        "delivery %s %s attempt %d: %s (%s)",
        delivery.job_id,
        delivery.status,
        delivery.attempt,
        status or error,
        outcome,
    )
    return {
        "job_id": delivery.job_id,
        "event": delivery.status,
        "shape": delivery.shape,
        "attempt": delivery.attempt,
        "url": delivery.url,
        "status": status,
        "error": error,
        "outcome": outcome,
        "elapsed_ms": round((time.monotonic() - started) * 1000, 1),
        "at": int(time.time() * 1000),
        "body": delivery.body.decode(),
        "answer": answer,
    }


def _post(
    delivery: Delivery, config: EmulatorConfig, emulated_failure: bool
) -> tuple[int | None, str | None, str]:
    if emulated_failure:
        return None, "emulated connection error (delivery_failures)", ""
    try:
        response = sender.post(
            delivery.url, delivery.body, config.secret, timeout=config.delivery_timeout
        )
    except requests.Timeout:
        return None, f"timed out after {config.delivery_timeout:g}s", ""
    except requests.RequestException as exc:
        return None, f"{type(exc).__name__}: {exc}"[:300], ""
    return response.status_code, None, response.text[:1000]
