"""Executes one run: claim it, handle the event, record the outcome.

Attempts are counted in the database, not by Celery: a run re-published by the relay keeps
its count. The listener's writes and the run's success commit in one transaction, and only
while the run is still ours (runs.py: the attempt number fences the outcome).
"""

from __future__ import annotations

import json
import logging
import time
import traceback
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any

from sqlalchemy import Engine, bindparam, select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from pipeline import metrics, runs
from pipeline.app.ittybit import IttybitClient
from pipeline.db import make_sessionmaker, read_only
from pipeline.errors import (
    ConfigError,
    ListenerError,
    MalformedPayload,
    PermanentError,
    RetryableError,
    Skip,
)
from pipeline.events import parse
from pipeline.lease import LeaseKeeper
from pipeline.listener import Context, Listener
from pipeline.models import ListenerRun, RunState, utcnow
from pipeline.registry import Registry
from pipeline.runs import Claim
from pipeline.settings import Settings

log = logging.getLogger(__name__)

MAX_ERROR_CHARS = 4000
_SIBLINGS = select(ListenerRun.id, ListenerRun.state, ListenerRun.finished_at).where(
    ListenerRun.event_id == bindparam("event_id")
)


@dataclass(frozen=True)
class Outcome:
    """How an execution ended: the state recorded, or None when nothing was (the run was
    finished or held by someone else, or taken over while it ran). `retry_in` is set
    when the run is `retrying`."""

    state: RunState | None
    detail: str = ""
    retry_in: float | None = None
    claim: Claim | None = None


class Runner:
    """Executes runs against one engine and registry (one per worker process)."""

    def __init__(self, settings: Settings, engine: Engine, registry: Registry) -> None:
        self.settings = settings
        self.engine = engine
        self.sessions: sessionmaker[Session] = make_sessionmaker(engine)
        self.registry = registry
        self.leases = LeaseKeeper(engine, settings.lease_seconds)
        # Reads of a single statement: on PostgreSQL one round trip (no BEGIN, no ROLLBACK).
        postgresql = engine.dialect.name == "postgresql"
        self._reads = (
            engine.execution_options(isolation_level="AUTOCOMMIT")
            if postgresql
            else read_only(engine)
        )
        self._ittybit: IttybitClient | None = None

    def ittybit(self) -> IttybitClient:
        """One client per process, so its connections to Ittybit (TLS and all) are reused
        from run to run instead of opened for each call."""
        if self._ittybit is None:
            self._ittybit = IttybitClient.from_settings(self.settings)
        return self._ittybit

    def after_fork(self) -> None:
        self._ittybit = None
        self.leases.after_fork()

    def execute(self, run_id: int) -> Outcome:
        claim = self.claim(run_id)
        if claim is None:
            return Outcome(None, "finished, or held by a live claim")
        started = time.monotonic()
        with self.leases.kept(claim):
            outcome = self._attempt(claim)
        if outcome.state is not None:
            metrics.run_ended(claim.listener, outcome.state.value, time.monotonic() - started)
            if outcome.state.finished:
                self._count_if_event_done(claim)
        return outcome

    def _count_if_event_done(self, claim: Claim) -> None:
        """If this run was the event's last to end, its receipt → done time (metrics). Read
        after the commit: of two runs ending at once, the later-stamped one counts it."""
        try:
            with self._reads.connect() as conn:
                rows = conn.execute(_SIBLINGS, {"event_id": claim.event_id}).all()
        except DBAPIError:  # a metric is not worth failing the task for
            return
        if not rows or not all(RunState(r.state).finished and r.finished_at for r in rows):
            return
        last = max(rows, key=lambda r: (r.finished_at, r.id))
        if last.id == claim.run_id:
            metrics.event_done((last.finished_at - claim.received_at).total_seconds())

    def _attempt(self, claim: Claim) -> Outcome:
        try:
            listener = self.registry.get(claim.listener)
        except ConfigError as exc:  # its module was removed or renamed since the event came
            return self._end(claim, RunState.FAILED, exc.message, error=exc.message)
        # A run whose worker keeps dying never reaches the except below: bound it here.
        if claim.attempt > listener.retry.max_retries + 1:
            lost = f"gave up after {claim.attempt - 1} attempts (the worker was lost each time?)"
            return self._end(claim, RunState.FAILED, lost, error=lost)
        with self.sessions() as session:
            try:
                result = self._handle(session, listener, claim)
                if not runs.record(session.connection(), claim, RunState.SUCCEEDED, result=result):
                    session.rollback()
                    return Outcome(
                        None, "the run was taken over; its effects discarded", None, claim
                    )
                session.commit()
                return Outcome(RunState.SUCCEEDED, claim=claim)
            except Exception as exc:
                session.rollback()
                return self._after_error(claim, listener, exc)

    def claim(self, run_id: int) -> Claim | None:
        """runs.claim, on a fresh connection once if the server dropped the pooled one
        since its last use (PostgreSQL restarted)."""
        try:
            return runs.claim(self.engine, run_id, self.settings.lease_seconds)
        except DBAPIError as exc:
            if not exc.connection_invalidated:
                raise
            return runs.claim(self.engine, run_id, self.settings.lease_seconds)

    def _handle(self, session: Session, listener: Listener, claim: Claim) -> Any:
        event = replace(parse(claim.raw_body), received_at=claim.received_at)
        ctx = Context(
            session, self.settings, run_id=claim.run_id, attempt=claim.attempt, ittybit=self.ittybit
        )
        result = listener.handle(event, ctx)
        try:
            json.dumps(result, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise PermanentError(
                f"handle() must return JSON values (dict, list, str, number, bool, None): {exc}"
            ) from None
        return result

    def _after_error(self, claim: Claim, listener: Listener, exc: Exception) -> Outcome:
        message = _describe(exc)
        if isinstance(exc, Skip):
            return self._end(claim, RunState.SKIPPED, exc.message, result={"reason": exc.message})
        if isinstance(exc, PermanentError | ConfigError | MalformedPayload):
            return self._end(claim, RunState.FAILED, message, error=message)
        if not isinstance(exc, ListenerError):
            log.warning(
                "run %s (%s, event %s) attempt %s raised unexpectedly",
                claim.run_id,
                claim.listener,
                claim.event_id,
                claim.attempt,
                exc_info=exc,
            )
        retryable = exc if isinstance(exc, RetryableError) else None
        limit = listener.retry.max_retries
        if retryable is not None and retryable.max_retries is not None:
            limit = min(limit, retryable.max_retries)
        if claim.attempt > limit:
            then = RunState.SKIPPED if retryable and retryable.then is Skip else RunState.FAILED
            exhausted = f"after {claim.attempt} attempts: {message}"
            return self._end(claim, then, exhausted, error=exhausted)
        delay = retryable.delay if retryable and retryable.delay is not None else None
        if delay is None:
            delay = listener.retry.delay(claim.attempt)
        delay = min(delay, listener.retry.backoff_cap)
        due = utcnow() + timedelta(seconds=delay + self.settings.redeliver_after)
        if not self._record(claim, RunState.RETRYING, error=message, due_at=due):
            return Outcome(None, "the run was taken over", None, claim)
        return Outcome(RunState.RETRYING, message, delay, claim)

    def _end(
        self,
        claim: Claim,
        state: RunState,
        detail: str,
        *,
        error: str | None = None,
        result: Any = None,
    ) -> Outcome:
        if not self._record(claim, state, error=error, result=result):
            return Outcome(None, "the run was taken over", None, claim)
        return Outcome(state, detail, None, claim)

    def _record(self, claim: Claim, state: RunState, **values: Any) -> bool:
        with self.sessions.begin() as session:
            return runs.record(session.connection(), claim, state, **values)


def _describe(exc: Exception) -> str:
    """The error to keep on the run: our own errors by message, others with a traceback."""
    if isinstance(exc, ListenerError | ConfigError):
        text = f"{type(exc).__name__}: {exc.message}"
    else:
        text = "".join(traceback.format_exception(exc)).strip()
    return text if len(text) <= MAX_ERROR_CHARS else "…" + text[-MAX_ERROR_CHARS:]
