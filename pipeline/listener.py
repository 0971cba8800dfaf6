"""What a listener is: a name, a pure `wants(event)`, a retry policy and `handle(event, ctx)`.

Subclass `Listener` in a module under `listeners/`; discovery does the rest.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from typing import Any, ClassVar

from sqlalchemy import event as sa_event
from sqlalchemy.orm import Session

from pipeline.events import Event
from pipeline.ittybit import IttybitClient
from pipeline.settings import Settings


@dataclass(frozen=True)
class RetryPolicy:
    """Attempts after the first, and exponential backoff between them (with jitter)."""

    max_retries: int = 5
    backoff_base: float = 2.0
    backoff_cap: float = 300.0

    def delay(self, attempt: int, rand: Callable[[], float] = random.random) -> float:
        """Seconds to wait after failed attempt number `attempt` (1-based).

        "Equal jitter": half the exponential step fixed, half random, so retries of many
        runs spread out but none comes back almost at once.
        """
        # The exponent is bounded: 2 ** 1024 does not fit a float, and the cap wins long before.
        step = min(self.backoff_cap, self.backoff_base * 2 ** min(max(attempt - 1, 0), 64))
        return float(step / 2 + rand() * step / 2)

    def __str__(self) -> str:
        return (
            f"{self.max_retries} retries, backoff {self.backoff_base:g}s "
            f"doubling to {self.backoff_cap:g}s"
        )


class Context:
    """What `handle` may use: the run's session, the settings and an Ittybit client."""

    def __init__(
        self,
        session: Session,
        settings: Settings,
        run_id: int,
        attempt: int,
        ittybit: Callable[[], IttybitClient] | None = None,
    ) -> None:
        self.session = session
        self.settings = settings
        self.run_id = run_id
        self.attempt = attempt
        self._client = ittybit
        self._wrote = False
        sa_event.listen(session, "after_flush", self._mark_written)

    @cached_property
    def ittybit(self) -> IttybitClient:
        """The process's client when the runner shares one, else a new one."""
        return self._client() if self._client else IttybitClient.from_settings(self.settings)

    @contextmanager
    def outside_transaction(self) -> Iterator[None]:
        """Hold no database lock during network I/O (SQLite has one writer per file).

        Ends the read-only transaction so far; objects reload on next access. Only valid
        before the listener writes anything: writes go after the call, in one short
        transaction that commits with the run's success.
        """
        if self._wrote or self.session.new or self.session.dirty or self.session.deleted:
            raise RuntimeError("outside_transaction() after writing: call out first, then write")
        self.session.rollback()
        yield

    def _mark_written(self, *_: Any) -> None:
        self._wrote = True


def task_name(listener_name: str) -> str:
    """The Celery task for a listener, as Flower shows it."""
    return f"listeners.{listener_name}"


_SNAKE = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
VALID_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")


class Listener:
    """Base class. Override `wants` (pure: no I/O) and `handle` (never commits)."""

    name: ClassVar[str] = ""
    retry: ClassVar[RetryPolicy] = RetryPolicy()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "name" not in cls.__dict__:
            cls.name = _SNAKE.sub("_", cls.__name__).lower()

    @property
    def task_name(self) -> str:
        return task_name(self.name)

    def wants(self, event: Event) -> bool:
        """Whether this listener gets a run for `event`. Decided at ingest; pure."""
        return True

    def handle(self, event: Event, ctx: Context) -> dict[str, Any] | None:
        """Do the work; return a small JSON-able result. Raise RetryableError/PermanentError."""
        raise NotImplementedError

    def describe_wants(self) -> str:
        """One line for `pipeline listeners`: the first line of `wants`'s docstring."""
        doc = type(self).wants.__doc__ or "every event"
        return doc.strip().splitlines()[0]
