"""The database deadline (db.deadline, around the endpoint's write and /healthz's ping):
a SIGALRM that interrupts a wait the driver would never end by itself. The real thing
against a frozen PostgreSQL is in tests/faults/test_database_faults.py; here the
mechanism alone, on a sleep."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator

import pytest

from pipeline.db import TooSlow, deadline


@pytest.fixture
def alarm_free() -> Iterator[None]:
    """SIGALRM as a gunicorn worker has it (pytest-timeout borrows it for the test run)."""
    handler = signal.getsignal(signal.SIGALRM)
    timer = signal.getitimer(signal.ITIMER_REAL)
    signal.setitimer(signal.ITIMER_REAL, 0)
    signal.signal(signal.SIGALRM, signal.SIG_DFL)
    yield
    signal.signal(signal.SIGALRM, handler)
    if timer[0]:
        signal.setitimer(signal.ITIMER_REAL, *timer)


def test_a_block_past_its_deadline_is_interrupted(alarm_free: None) -> None:
    started = time.monotonic()
    with pytest.raises(TooSlow), deadline(0.2):
        time.sleep(5)
    assert time.monotonic() - started < 1


def test_a_block_within_its_deadline_leaves_no_alarm_behind(alarm_free: None) -> None:
    with deadline(0.2):
        pass
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
    time.sleep(0.3)  # an alarm left armed would raise here


def test_someone_elses_alarm_is_left_alone(alarm_free: None) -> None:
    fired: list[int] = []
    signal.signal(signal.SIGALRM, lambda signum, _frame: fired.append(signum))
    with deadline(0.05):
        time.sleep(0.2)  # no deadline: the handler belongs to someone else
    assert fired == [] and signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
