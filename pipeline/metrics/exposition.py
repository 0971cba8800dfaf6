"""`/metrics` in Prometheus' text format, read from the database: the totals every process
added up (tally.py) and gauges of the ledger itself (runs by state, the oldest waiting
run), computed at scrape time and kept CACHE_SECONDS, so a scrape costs two small queries
at most and any web process on any host answers the same."""

from __future__ import annotations

import json
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from sqlalchemy import Engine, func, select

from pipeline import db
from pipeline.metrics import DONE_BUCKETS, OUTCOMES, PREFIX, RUN_BUCKETS
from pipeline.metrics.tally import le_label
from pipeline.models import ListenerRun, MetricTotal, RunState, utcnow

CACHE_SECONDS = 5.0
WAITING = (RunState.PENDING, RunState.RETRYING)
HISTOGRAMS = {
    "run_duration_seconds": (
        RUN_BUCKETS,
        "Seconds an attempt took, from its claim to its recorded outcome",
        ("listener", "state"),
    ),
    "receipt_to_done_seconds": (
        DONE_BUCKETS,
        "Seconds from a webhook's receipt to the end of its last listener run",
        (),
    ),
}


class Exposition:
    """The page, rendered at most every CACHE_SECONDS per process."""

    def __init__(
        self,
        engine: Engine,
        listeners: Sequence[str],
        backlog: Callable[[], int | None] | None = None,
    ) -> None:
        self.engine = engine
        self.listeners = tuple(listeners)
        self.backlog = backlog  # the broker's queue length (None: it cannot say)
        self._lock = threading.Lock()
        self._page: bytes = b""
        self._at = -CACHE_SECONDS

    def page(self) -> bytes:
        with self._lock:
            if time.monotonic() - self._at >= CACHE_SECONDS:
                registry = CollectorRegistry(auto_describe=False)
                registry.register(_Ledger(self.engine, self.listeners, self.backlog))
                self._page = generate_latest(registry)
                self._at = time.monotonic()
            return self._page


class _Ledger:
    def __init__(
        self,
        engine: Engine,
        listeners: Sequence[str],
        backlog: Callable[[], int | None] | None = None,
    ) -> None:
        self.engine = engine
        self.listeners = listeners
        self.backlog = backlog

    def collect(self) -> Iterator[Metric]:
        with db.read_only(self.engine).connect() as conn:
            rows = conn.execute(select(MetricTotal.name, MetricTotal.labels, MetricTotal.value))
            totals = [(n, dict(json.loads(k)), v) for n, k, v in rows]
            by_state = conn.execute(
                select(ListenerRun.listener, ListenerRun.state, func.count()).group_by(
                    ListenerRun.listener, ListenerRun.state
                )
            ).all()
            oldest = conn.execute(
                select(ListenerRun.listener, func.min(ListenerRun.updated_at))
                .where(ListenerRun.state.in_(WAITING))
                .group_by(ListenerRun.listener)
            ).all()
        yield from _counters(totals)
        yield from _histograms(totals)
        yield from _runs(by_state, self.listeners)
        now = utcnow()
        gauge = GaugeMetricFamily(
            f"{PREFIX}oldest_pending_run_seconds",
            "Age of the oldest run waiting for a worker (pending or retrying), by listener",
            labels=["listener"],
        )
        since = {listener: at for listener, at in oldest}
        for listener in sorted(set(self.listeners) | set(since)):
            at = since.get(listener)
            gauge.add_metric([listener], max(0.0, (now - at).total_seconds()) if at else 0.0)
        yield gauge
        waiting = self.backlog() if self.backlog is not None else None
        if waiting is not None:  # absent, rather than a made-up 0, when the broker is silent
            yield GaugeMetricFamily(
                f"{PREFIX}broker_backlog",
                "Messages waiting in the broker's queue for a worker",
                value=float(waiting),
            )


def _counters(totals: list[tuple[str, dict[str, str], float]]) -> Iterator[Metric]:
    values = {(n, tuple(sorted(labels.items()))): v for n, labels, v in totals}
    webhooks = CounterMetricFamily(
        f"{PREFIX}webhooks", "Webhooks answered, by outcome", labels=["outcome"]
    )
    seen = {dict(k).get("outcome", ""): v for (n, k), v in values.items() if n == "webhooks_total"}
    for outcome in sorted(set(OUTCOMES) | set(seen)):
        webhooks.add_metric([outcome], seen.get(outcome, 0.0))
    yield webhooks
    published = CounterMetricFamily(
        f"{PREFIX}relay_published", "Runs the relay published (again) to the broker"
    )
    published.add_metric([], values.get(("relay_published_total", ()), 0.0))
    yield published
    requests = CounterMetricFamily(
        f"{PREFIX}ittybit_requests",
        "Calls to Ittybit's API, by HTTP status (error: no answer)",
        labels=["status"],
    )
    for (name, key), value in sorted(values.items()):
        if name == "ittybit_requests_total":
            requests.add_metric([dict(key).get("status", "")], value)
    yield requests


def _histograms(totals: list[tuple[str, dict[str, str], float]]) -> Iterator[Metric]:
    for name, (bounds, doc, label_names) in HISTOGRAMS.items():
        buckets: dict[tuple[str, ...], dict[str, float]] = defaultdict(dict)
        sums: dict[tuple[str, ...], float] = {}
        for series, labels, value in totals:
            series_labels = tuple(labels.get(label, "") for label in label_names)
            if series == f"{name}_bucket":
                buckets[series_labels][labels.get("le", "+Inf")] = value
            elif series == f"{name}_sum":
                sums[series_labels] = value
        family = HistogramMetricFamily(f"{PREFIX}{name}", doc, labels=list(label_names))
        found = set(buckets) | set(sums)
        if not label_names:
            found.add(())  # one series, zeros until the first observation
        for series_labels in sorted(found):
            counts = buckets[series_labels]
            cumulative, running = [], 0.0
            for bound in [*map(le_label, bounds), "+Inf"]:
                running += counts.get(bound, 0.0)
                cumulative.append((bound, running))
            family.add_metric(list(series_labels), cumulative, sums.get(series_labels, 0.0))
        yield family


def _runs(by_state: Sequence[Any], listeners: Sequence[str]) -> Iterator[Metric]:
    gauge = GaugeMetricFamily(
        f"{PREFIX}runs",
        "Listener runs in the ledger, by listener and state",
        labels=["listener", "state"],
    )
    counts = {(listener, RunState(state).value): n for listener, state, n in by_state}
    names = sorted(set(listeners) | {listener for listener, _ in counts})
    for listener in names:
        for state in RunState:
            gauge.add_metric([listener, state.value], float(counts.get((listener, state.value), 0)))
    yield gauge
