"""The emulator's clock: work scheduled for later runs on a few threads, so a request never
sleeps to make a job progress or a delivery wait out its backoff."""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

log = logging.getLogger(__name__)


class Scheduler:
    """Runs callables once they are due, on a pool of worker threads."""

    # Enough threads that deliveries stuck on a slow receiver (5 s each) do not hold up
    # other jobs' progress; the pool only starts threads as work arrives.
    def __init__(self, workers: int = 16) -> None:
        self._due: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = itertools.count()
        self._wake = threading.Condition()
        self._closed = False
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="emulator")
        self._thread = threading.Thread(target=self._loop, name="emulator-clock", daemon=True)
        self._thread.start()

    def later(self, seconds: float, work: Callable[[], None]) -> None:
        with self._wake:
            if not self._closed:
                heapq.heappush(self._due, (time.monotonic() + seconds, next(self._seq), work))
                self._wake.notify()

    def close(self) -> None:
        with self._wake:
            self._closed = True
            self._wake.notify()
        self._thread.join(timeout=5)
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _loop(self) -> None:
        while True:
            with self._wake:
                while not self._closed and (not self._due or self._due[0][0] > time.monotonic()):
                    self._wake.wait(self._due[0][0] - time.monotonic() if self._due else None)
                if self._closed:
                    return
                work = heapq.heappop(self._due)[2]
            self._pool.submit(_logged, work)


def _logged(work: Callable[[], None]) -> None:
    try:
        work()
    except Exception:  # a bug in one job's work must not stop the others
        log.exception("emulator: scheduled work failed")
