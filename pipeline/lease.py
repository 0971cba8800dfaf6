"""Leases kept alive: a claimed run's lease is short (RUN_LEASE_SECONDS, 10 s) and, while
its listener runs, a thread of the worker process renews it every third of that.

A worker that dies (SIGKILL, the OOM killer, a dyno stopped) renews nothing: its runs'
leases run out within RUN_LEASE_SECONDS and the relay's next pass (RELAY_INTERVAL) puts
them back in line, so a dead worker's run waits seconds, not minutes. A live worker's
long listener keeps its run, however long it takes up to TASK_TIME_LIMIT. A renewal
that finds its run taken over (a network partition outlived the lease) changes nothing:
the attempt number fences the late outcome out (runs.record).

A worker told to stop (SIGTERM: a deploy, a dyno restart) lets its listeners finish for
WORKER_SHUTDOWN_GRACE seconds; runs still going then are handed back (runs.hand_back) and
the process ends, so the broker redelivers their messages to a worker that stays and the
worker exits within the platform's grace period, stranding nothing.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
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
        self._lock = threading.RLock()  # a signal handler of the same thread may take it
        self._wake = threading.Condition(self._lock)
        self._thread: threading.Thread | None = None
        self._hand_back_at: float | None = None  # monotonic; set once stopping

    @contextlib.contextmanager
    def kept(self, claim: Claim) -> Iterator[None]:
        """Keep `claim`'s lease alive for the duration of the block."""
        with self._lock:
            self._held[claim.run_id] = claim
            self._keep_beating()
        try:
            yield
        finally:
            with self._lock:
                self._held.pop(claim.run_id, None)

    def holding(self) -> bool:
        with self._lock:
            return bool(self._held)

    def stopping(self, grace: float) -> None:
        """The worker is stopping: `grace` seconds from now, the runs still held are
        handed back and this process ends, if it has not ended by itself by then."""
        with self._lock:
            if self._hand_back_at is not None:
                return
            self._hand_back_at = time.monotonic() + grace
            self._keep_beating()
            self._wake.notify()

    def after_fork(self) -> None:
        """A forked child starts with no runs and no thread of its parent's."""
        self._held = {}
        self._lock = threading.RLock()  # a signal handler of the same thread may take it
        self._wake = threading.Condition(self._lock)
        self._thread = None
        self._hand_back_at = None

    def _keep_beating(self) -> None:
        """Start the renewing thread if it is not running (call with the lock held)."""
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(
                target=self._renew_forever, name="lease-keeper", daemon=True
            )
            self._thread.start()

    def _renew_forever(self) -> None:
        interval = self.lease_seconds / 3
        # A renewal races the run's own outcome: one that commits just after `held` was
        # read is no longer `running` and looks taken over. A run still held here a beat
        # after its renewal failed really was taken over.
        suspect: set[int] = set()
        told: set[int] = set()
        while True:
            with self._lock:
                self._wake.wait(self._until_next_beat(interval))
                held = list(self._held.values())
                due = self._hand_back_at is not None and time.monotonic() >= self._hand_back_at
            if due:
                self._hand_back(held)
            if not held:
                suspect, told = set(), set()
                continue
            try:
                lost = runs.renew(self.engine, held, self.lease_seconds)
            except Exception as exc:  # the database blinked: the next beat tries again
                log.warning(
                    "could not renew the leases of runs %s: %s", [c.run_id for c in held], exc
                )
                continue
            with self._lock:
                lost &= self._held.keys()
            for run_id in sorted((lost & suspect) - told):
                log.warning(
                    "run %s was taken over while it ran here: its outcome will be discarded", run_id
                )
            told = (told | (lost & suspect)) & lost
            suspect = lost

    def _until_next_beat(self, interval: float) -> float:
        if self._hand_back_at is None:
            return interval
        return max(0.0, min(interval, self._hand_back_at - time.monotonic()))

    def _hand_back(self, held: list[Claim]) -> None:
        """Past the grace: give the runs still held back, then end this process (the
        broker redelivers its messages; an idle one ends all the same)."""
        if held:
            try:
                back = runs.hand_back(self.engine, held)
            except Exception as exc:  # their leases run out instead
                log.warning("could not hand back runs %s: %s", [c.run_id for c in held], exc)
                back = []
            log.warning(
                "stopping: runs %s still running after the shutdown grace, handed back %s",
                [c.run_id for c in held],
                back,
            )
        os.kill(os.getpid(), signal.SIGKILL)
