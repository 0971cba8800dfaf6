"""What the pipeline counts (tally.py adds it up in the database) and what `/metrics`
shows (exposition.py): the names below, each prefixed `ittybit_pipeline_`."""

from __future__ import annotations

from pipeline.metrics.tally import TALLY

PREFIX = "ittybit_pipeline_"
# Seconds. A run is a database transaction around a listener, which may call Ittybit.
RUN_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
# Seconds from the webhook's receipt to its last run's end (queueing and retries included).
DONE_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 3600.0)
# How a webhook was answered (webhooks_total{outcome}, and the console's chart).
OUTCOMES = ("accepted", "duplicate", "rejected_signature", "unreadable", "too_large", "unavailable")


def webhook(outcome: str) -> None:
    TALLY.webhook(outcome)


def run_ended(listener: str, state: str, seconds: float) -> None:
    """An attempt recorded its outcome (succeeded, failed, skipped or retrying)."""
    labels = (("listener", listener), ("state", state))
    TALLY.observe("run_duration_seconds", labels, seconds, RUN_BUCKETS)


def event_done(seconds: float) -> None:
    """An event's last unfinished run ended, `seconds` after the webhook was received."""
    TALLY.observe("receipt_to_done_seconds", (), seconds, DONE_BUCKETS)


def relay_published(runs: int) -> None:
    TALLY.add("relay_published_total", value=runs)


def ittybit_request(status: str) -> None:
    """A call to Ittybit's API ended: its HTTP status, or `error` (no answer)."""
    TALLY.add("ittybit_requests_total", (("status", status),))
