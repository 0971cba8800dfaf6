"""What a listener is: a name, a pure `wants(event)`, a retry policy and `handle(event, ctx)`.

Subclass `Listener` in a module of its own under `listeners/`; discovery does the rest.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from typing import Any, ClassVar

from sqlalchemy import event as sa_event
from sqlalchemy.orm import Session

from pipeline.app.ittybit import IttybitClient
from pipeline.errors import PermanentError
from pipeline.events import Event
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


OUTSIDE_TRANSACTION = (
    "database access inside ctx.outside_transaction(): read what the call needs before "
    "the block and write its result after it"
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

        Ends the transaction so far, which has only read (loaded objects stay readable),
        and refuses any database access until the block ends. After it, objects reload
        fresh on access: write the call's result then, in the short transaction that
        commits with the run's success.
        """
        session = self.session
        if self._wrote or session.new or session.dirty or session.deleted:
            raise PermanentError("outside_transaction() after writing: call out first, then write")
        session.commit()  # nothing to write: this only ends the read transaction
        sa_event.listen(session, "do_orm_execute", _refuse)
        sa_event.listen(session, "after_begin", _refuse)
        try:
            yield
        finally:
            sa_event.remove(session, "do_orm_execute", _refuse)
            sa_event.remove(session, "after_begin", _refuse)
            session.expire_all()

    def _mark_written(self, *_: Any) -> None:
        self._wrote = True


def _refuse(*_: Any) -> None:
    raise PermanentError(OUTSIDE_TRANSACTION)


def task_name(listener_name: str) -> str:
    """The Celery task for a listener, as Flower shows it."""
    return f"listeners.{listener_name}"


class Listener:
    """Base class. Override `wants` (pure: no I/O) and `handle` (never commits).

    Class attributes:
    - `name`: the listener's name, its task's (`listeners.<name>`) and its runs'. By
      default the name of the module it is defined in, so renaming the class changes
      nothing stored; set it to keep a name when renaming the module.
    - `retry`: its RetryPolicy.
    - `requires`: environment variables it cannot work without (e.g. "ITTYBIT_API_KEY");
      the worker refuses to start while one is unset.
    - `description`: one line for `pipeline listeners` (default: the first line of the
      docstring of `wants`).
    - `abstract = True` on a base class meant to be extended: it is not registered.
    """

    name: ClassVar[str] = ""
    retry: ClassVar[RetryPolicy] = RetryPolicy()
    requires: ClassVar[tuple[str, ...]] = ()
    description: ClassVar[str] = ""
    abstract: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "name" not in cls.__dict__:
            cls.name = cls.__module__.rsplit(".", 1)[-1]
        if "abstract" not in cls.__dict__:
            cls.abstract = False

    @property
    def task_name(self) -> str:
        return task_name(self.name)

    def wants(self, event: Event) -> bool:
        """Whether this listener gets a run for `event`. Decided at ingest; pure."""
        return True

    def handle(self, event: Event, ctx: Context) -> Any:
        """Do the work; return a small JSON value. Raise RetryableError/PermanentError/Skip."""
        raise NotImplementedError

    def describe_wants(self) -> str:
        """One line for `pipeline listeners`."""
        wants = type(self).wants
        doc = self.description or (wants.__doc__ if wants is not Listener.wants else None)
        return (doc or "every event").strip().splitlines()[0]
