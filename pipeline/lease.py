"""Leases kept alive: a claimed run's lease is short (RUN_LEASE_SECONDS, 10 s) and, while
its listener runs, a thread of the worker process renews it every third of that.

A worker that dies (SIGKILL, the OOM killer, a dyno stopped) renews nothing: its runs'
leases run out within RUN_LEASE_SECONDS and the relay's next pass (RELAY_INTERVAL) puts
them back in line, so a dead worker's run waits seconds, not minutes. A live worker's
long listener keeps its run, however long it takes up to TASK_TIME_LIMIT. A renewal
that finds its run taken over (a network partition outlived the lease) changes nothing:
the attempt number fences the late outcome out (runs.record).
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator

from sqlalchemy import Engine

from pipeline import runs
from pipeline.runs import Claim

log = logging.getLogger(__name__)


class LeaseKeeper:
    """Renews the leases of the runs this process is executing (one per worker process)."""

    def __init__(self, engine: Engine, lease_seconds: float) -> None:
        self.engine = engine
        self.lease_seconds = lease_seconds
        self._held: dict[int, Claim] = {}
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._thread: threading.Thread | None = None

    @contextlib.contextmanager
    def kept(self, claim: Claim) -> Iterator[None]:
        """Keep `claim`'s lease alive for the duration of the block."""
        with self._lock:
            self._held[claim.run_id] = claim
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._renew_forever, name="lease-keeper", daemon=True
                )
                self._thread.start()
        try:
            yield
        finally:
            with self._lock:
                self._held.pop(claim.run_id, None)

    def after_fork(self) -> None:
        """A forked child starts with no runs and no thread of its parent's."""
        self._held = {}
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._thread = None

    def _renew_forever(self) -> None:
        interval = self.lease_seconds / 3
        while True:
            with self._lock:
                self._wake.wait(interval)
                held = list(self._held.values())
            if not held:
                continue
            try:
                lost = runs.renew(self.engine, held, self.lease_seconds)
            except Exception as exc:  # the database blinked: the next beat tries again
                log.warning(
                    "could not renew the leases of runs %s: %s", [c.run_id for c in held], exc
                )
                continue
            for run_id in lost:
                log.warning(
                    "run %s was taken over while it ran here: its outcome will be discarded", run_id
                )
