"""Counters and histograms of every process, added up in the database.

Each process (a gunicorn worker, a Celery pool process, the relay) counts in memory and a
thread of its own adds its counts to `metric_totals` (and webhook outcomes, per minute,
to `webhook_minutes`) every FLUSH_SECONDS, in one short transaction. So `/metrics`, served
by any web process on any host, reads the same totals: nothing to merge per process, no
files left by dead ones, nothing reset by a restart (prometheus_client's multiprocess
mode has all three problems, and cannot see a worker on another host at all). What a
process counted in its last FLUSH_SECONDS before a SIGKILL is lost; a flush that fails
is kept and added to the next.
"""

from __future__ import annotations

import atexit
import bisect
import json
import logging
import threading
from collections import Counter, defaultdict
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine
from sqlalchemy.dialects import postgresql, sqlite

from pipeline.models import MetricTotal, WebhookMinute, utcnow

log = logging.getLogger(__name__)

FLUSH_SECONDS = 2.0
Labels = tuple[tuple[str, str], ...]


def le_label(bound: float) -> str:
    """A bucket's `le` as prometheus_client writes it (5 → "5.0")."""
    return repr(float(bound))


def label_key(labels: Labels) -> str:
    """How a series' labels are stored: a JSON list of [name, value] pairs, sorted."""
    return json.dumps(sorted(labels), separators=(",", ":"))


class Tally:
    """This process's counts since its last flush."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._totals: defaultdict[tuple[str, str], float] = defaultdict(float)
        self._minutes: Counter[tuple[datetime, str]] = Counter()
        self._engine: Engine | None = None
        self._thread: threading.Thread | None = None
        self._wake = threading.Event()

    def bind(self, engine: Engine) -> None:
        """Flush to `engine` from now on (the process's own; again after a fork)."""
        self._engine = engine

    def add(self, name: str, labels: Labels = (), value: float = 1.0) -> None:
        with self._lock:
            self._totals[(name, label_key(labels))] += value
            self._start()

    def observe(self, name: str, labels: Labels, value: float, buckets: Sequence[float]) -> None:
        """One observation of histogram `name`: its bucket (by upper bound, "+Inf" past the
        last), its sum and its count."""
        index = bisect.bisect_left(buckets, value)
        le = le_label(buckets[index]) if index < len(buckets) else "+Inf"
        with self._lock:
            self._totals[(f"{name}_bucket", label_key((*labels, ("le", le))))] += 1
            self._totals[(f"{name}_sum", label_key(labels))] += value
            self._totals[(f"{name}_count", label_key(labels))] += 1
            self._start()

    def webhook(self, outcome: str) -> None:
        """A webhook answered: its outcome, in the total and in this minute's row."""
        minute = utcnow().replace(second=0, microsecond=0)
        with self._lock:
            self._totals[("webhooks_total", label_key((("outcome", outcome),)))] += 1
            self._minutes[(minute, outcome)] += 1
            self._start()

    def flush(self) -> None:
        """Add the counts to the database now (at exit, and from the flushing thread)."""
        with self._lock:
            totals, minutes = self._totals, self._minutes
            self._totals, self._minutes = defaultdict(float), Counter()
        if not (totals or minutes) or self._engine is None:
            return
        try:
            _write(self._engine, totals, minutes)
        except Exception as exc:  # the database blinked: keep them for the next flush
            log.warning("could not store %d metric counts: %s", len(totals) + len(minutes), exc)
            with self._lock:
                for key, value in totals.items():
                    self._totals[key] += value
                self._minutes.update(minutes)

    def after_fork(self) -> None:
        """A forked child counts from zero: its parent flushes its own counts."""
        self._lock = threading.Lock()
        self._totals, self._minutes = defaultdict(float), Counter()
        self._thread = None
        self._wake = threading.Event()

    def _start(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._flush_forever, name="metrics", daemon=True)
            self._thread.start()

    def _flush_forever(self) -> None:
        while True:
            self._wake.wait(FLUSH_SECONDS)
            self.flush()


def _write(
    engine: Engine,
    totals: dict[tuple[str, str], float],
    minutes: Counter[tuple[datetime, str]],
) -> None:
    with engine.begin() as conn:
        rows = [{"name": n, "labels": k, "value": v} for (n, k), v in sorted(totals.items())]
        _add(conn, MetricTotal.__table__, ("name", "labels"), "value", rows)
        rows = [{"minute": m, "outcome": o, "count": n} for (m, o), n in sorted(minutes.items())]
        _add(conn, WebhookMinute.__table__, ("minute", "outcome"), "count", rows)


def _add(
    conn: Connection, table: Any, keys: tuple[str, str], column: str, rows: list[dict[str, Any]]
) -> None:
    """Upsert `rows`, adding their `column` to the stored one where `keys` match."""
    if not rows:
        return
    insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    statement = insert(table)
    added = {column: table.c[column] + statement.excluded[column]}
    conn.execute(statement.on_conflict_do_update(index_elements=list(keys), set_=added), rows)


TALLY = Tally()  # the process's
atexit.register(TALLY.flush)
