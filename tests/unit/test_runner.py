"""The run state machine, in process: claim, handle, record (no Celery involved)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, select, update
from sqlalchemy.orm import Session

from pipeline import runs
from pipeline.app.media import find_media
from pipeline.errors import PermanentError, RetryableError, Skip
from pipeline.events import Event
from pipeline.inbox import receive
from pipeline.lease import LeaseKeeper
from pipeline.listener import Context, Listener, RetryPolicy
from pipeline.models import ListenerRun, RunState, User, utcnow
from pipeline.registry import Registry
from pipeline.runner import Runner
from pipeline.settings import Settings

BODY = b'{"id": "task_run_1", "status": "succeeded", "kind": "video"}'
POLICY = RetryPolicy(max_retries=2, backoff_base=1.0, backoff_cap=30.0)


class Writer(Listener):
    """Writes a user row named after the task."""

    name = "writer"
    retry = POLICY

    def handle(self, event: Event, ctx: Context) -> dict[str, Any]:
        user = User(email=f"{event.task_id}@writer.test")
        ctx.session.add(user)
        ctx.session.flush()
        return {"user_id": user.id}


class Flaky(Listener):
    name = "flaky"
    retry = POLICY

    def handle(self, event: Event, ctx: Context) -> dict[str, Any]:
        ctx.session.add(User(email=f"flaky-{ctx.attempt}@writer.test"))
        ctx.session.flush()
        raise RetryableError("Ittybit 503 on POST /jobs")


class SlowDown(Listener):
    name = "slow_down"
    retry = POLICY

    def handle(self, event: Event, ctx: Context) -> dict[str, Any]:
        raise RetryableError("Ittybit 429", delay=float(event.extra.get("retry_after", 7)))


class Refused(Listener):
    name = "refused"
    retry = POLICY

    def handle(self, event: Event, ctx: Context) -> dict[str, Any]:
        ctx.session.add(User(email="refused@writer.test"))
        ctx.session.flush()
        raise PermanentError("Ittybit 400 on POST /jobs: request_invalid")


class Buggy(Listener):
    name = "buggy"
    retry = POLICY

    def handle(self, event: Event, ctx: Context) -> dict[str, Any]:
        raise ValueError("boom in a listener")


class NeedsMedia(Listener):
    name = "needs_media"
    retry = RetryPolicy(max_retries=6, backoff_base=1.0, backoff_cap=60.0)

    def handle(self, event: Event, ctx: Context) -> dict[str, Any]:
        find_media(ctx.session, event)
        return {}


class NothingToDo(Listener):
    name = "nothing_to_do"

    def handle(self, event: Event, ctx: Context) -> dict[str, Any]:
        raise Skip("media 9 has no owner to notify")


class Overtaken(Listener):
    """Calls out (no lock held); meanwhile another worker takes the run over."""

    name = "overtaken"

    def handle(self, event: Event, ctx: Context) -> dict[str, Any]:
        with ctx.outside_transaction():
            engine = ctx.session.get_bind()
            with engine.begin() as conn:  # what the relay plus a second claim amount to
                conn.execute(
                    update(ListenerRun)
                    .where(ListenerRun.id == ctx.run_id)
                    .values(attempts=ListenerRun.attempts + 1)
                )
        ctx.session.add(User(email="overtaken@writer.test"))
        ctx.session.flush()
        return {"wrote": True}


LISTENERS = [Writer, Flaky, SlowDown, Refused, Buggy, NeedsMedia, NothingToDo, Overtaken]


@pytest.fixture
def runner(settings: Settings, engine: Engine) -> Runner:
    return Runner(settings, engine, Registry(cls() for cls in LISTENERS))


@pytest.fixture
def run_of(runner: Runner, engine: Engine) -> Callable[..., int]:
    """Ingest BODY (or `body`) and return the id of `listener`'s run."""

    def make(listener: str, body: bytes = BODY) -> int:
        receipt = receive(engine, runner.registry, body, 60.0)
        return next(run_id for run_id, name, _ in receipt.runs if name == listener)

    return make


def load(engine: Engine, run_id: int) -> ListenerRun:
    with Session(engine) as session:
        run = session.get_one(ListenerRun, run_id)
        session.expunge(run)
        return run


def set_run(engine: Engine, run_id: int, **values: Any) -> None:
    with engine.begin() as conn:
        conn.execute(update(ListenerRun).where(ListenerRun.id == run_id).values(**values))


def users(engine: Engine) -> list[str]:
    with engine.connect() as conn:
        return sorted(conn.scalars(select(User.email)))


# --- claiming --------------------------------------------------------------------------------


def test_a_pending_run_is_claimed_with_a_lease_and_attempt_one(
    runner: Runner, run_of: Callable[..., int], engine: Engine, settings: Settings
) -> None:
    run_id = run_of("writer")
    before = utcnow()
    claim = runner.claim(run_id)
    assert claim is not None and claim.attempt == 1 and claim.listener == "writer"
    run = load(engine, run_id)
    assert run.state == "running" and run.attempts == 1
    assert run.lease_expires_at is not None
    assert run.lease_expires_at - before >= timedelta(seconds=settings.lease_seconds)


@pytest.mark.parametrize("state", ["succeeded", "failed", "skipped"])
def test_a_finished_run_is_not_claimed(
    runner: Runner, run_of: Callable[..., int], engine: Engine, state: str
) -> None:
    run_id = run_of("writer")
    set_run(engine, run_id, state=state, attempts=1)
    assert runner.execute(run_id).state is None
    run = load(engine, run_id)
    assert (run.state, run.attempts) == (state, 1)
    assert users(engine) == []


def test_a_running_run_with_a_live_lease_is_not_claimed(
    runner: Runner, run_of: Callable[..., int], engine: Engine
) -> None:
    run_id = run_of("writer")
    live = utcnow() + timedelta(minutes=1)
    set_run(engine, run_id, state="running", attempts=1, lease_expires_at=live)
    assert runner.execute(run_id).state is None
    assert load(engine, run_id).attempts == 1
    assert users(engine) == []


def test_a_running_run_whose_lease_expired_is_claimed_again(
    runner: Runner, run_of: Callable[..., int], engine: Engine
) -> None:
    run_id = run_of("writer")
    expired = utcnow() - timedelta(seconds=1)
    set_run(engine, run_id, state="running", attempts=1, lease_expires_at=expired)
    assert runner.execute(run_id).state == "succeeded"
    run = load(engine, run_id)
    assert (run.state, run.attempts) == ("succeeded", 2)


def test_an_unknown_run_id_is_not_claimed(runner: Runner) -> None:
    assert runner.execute(987654).state is None


# --- outcomes --------------------------------------------------------------------------------


def test_success_commits_the_listeners_writes_with_the_run(
    runner: Runner, run_of: Callable[..., int], engine: Engine
) -> None:
    run_id = run_of("writer")
    assert runner.execute(run_id).state == "succeeded"
    run = load(engine, run_id)
    assert run.state == "succeeded"
    assert run.last_error is None and run.lease_expires_at is None
    assert run.finished_at is not None
    assert users(engine) == ["task_run_1@writer.test"]
    with engine.connect() as conn:
        user_id = conn.scalar(select(User.id))
    assert run.result == {"user_id": user_id}


def test_a_retryable_error_leaves_the_run_retrying_due_later_with_its_error(
    runner: Runner, run_of: Callable[..., int], engine: Engine, settings: Settings
) -> None:
    run_id = run_of("flaky")
    before = utcnow()
    outcome = runner.execute(run_id)
    assert outcome.state == "retrying"
    assert outcome.retry_in is not None and 0.5 <= outcome.retry_in <= 1.0  # attempt 1, base 1
    run = load(engine, run_id)
    assert run.state == "retrying" and run.attempts == 1
    assert run.last_error == "RetryableError: Ittybit 503 on POST /jobs"
    assert run.due_at > before + timedelta(seconds=settings.redeliver_after)
    assert run.lease_expires_at is None and run.finished_at is None
    assert users(engine) == []  # the failed attempt's writes were rolled back


def test_retries_run_out_after_max_retries_and_the_run_fails(
    runner: Runner, run_of: Callable[..., int], engine: Engine
) -> None:
    run_id = run_of("flaky")
    states = [runner.execute(run_id).state for _ in range(POLICY.max_retries + 1)]
    assert states == ["retrying", "retrying", "failed"]
    run = load(engine, run_id)
    assert (run.state, run.attempts) == ("failed", 3)
    assert run.last_error is not None
    assert run.last_error.startswith("after 3 attempts: RetryableError: Ittybit 503")
    assert run.finished_at is not None
    assert runner.execute(run_id).state is None


def test_retry_after_from_the_error_overrides_the_backoff(
    runner: Runner, run_of: Callable[..., int]
) -> None:
    outcome = runner.execute(run_of("slow_down"))
    assert (outcome.state, outcome.retry_in) == ("retrying", 7.0)


def test_a_retry_after_beyond_the_backoff_cap_is_capped(
    runner: Runner, run_of: Callable[..., int]
) -> None:
    body = b'{"id": "task_slow", "status": "succeeded", "retry_after": 3600}'
    outcome = runner.execute(run_of("slow_down", body))
    assert outcome.retry_in == POLICY.backoff_cap


def test_a_permanent_error_fails_the_run_at_once_and_discards_its_writes(
    runner: Runner, run_of: Callable[..., int], engine: Engine
) -> None:
    run_id = run_of("refused")
    assert runner.execute(run_id).state == "failed"
    run = load(engine, run_id)
    assert (run.state, run.attempts) == ("failed", 1)
    assert run.last_error == "PermanentError: Ittybit 400 on POST /jobs: request_invalid"
    assert users(engine) == []


def test_an_unknown_exception_is_retried_with_its_traceback_kept(
    runner: Runner, run_of: Callable[..., int], engine: Engine
) -> None:
    run_id = run_of("buggy")
    assert runner.execute(run_id).state == "retrying"
    error = load(engine, run_id).last_error
    assert error is not None
    assert error.startswith("Traceback (most recent call last)")
    assert "in handle" in error and error.endswith("ValueError: boom in a listener")


def test_an_unknown_exception_fails_the_run_once_retries_run_out(
    runner: Runner, run_of: Callable[..., int], engine: Engine
) -> None:
    run_id = run_of("buggy")
    states = [runner.execute(run_id).state for _ in range(POLICY.max_retries + 1)]
    assert states == ["retrying", "retrying", "failed"]
    assert "ValueError: boom in a listener" in (load(engine, run_id).last_error or "")


def test_media_not_yet_known_retries_briefly_then_ends_skipped(
    runner: Runner, run_of: Callable[..., int], engine: Engine
) -> None:
    run_id = run_of("needs_media")
    states = [runner.execute(run_id).state for _ in range(6)]
    # MediaNotYetKnown narrows the listener's 6 retries to 4, then ends `skipped`.
    assert states == ["retrying"] * 4 + ["skipped", None]
    run = load(engine, run_id)
    assert (run.state, run.attempts) == ("skipped", 5)
    assert "no media for task 'task_run_1'" in (run.last_error or "")


def test_skip_ends_the_run_skipped_with_the_reason(
    runner: Runner, run_of: Callable[..., int], engine: Engine
) -> None:
    run_id = run_of("nothing_to_do")
    assert runner.execute(run_id).state == "skipped"
    run = load(engine, run_id)
    assert run.state == "skipped"
    assert run.result == {"reason": "media 9 has no owner to notify"}


def test_a_run_whose_worker_died_too_often_fails_without_running_again(
    runner: Runner, run_of: Callable[..., int], engine: Engine
) -> None:
    run_id = run_of("writer")
    expired = utcnow() - timedelta(seconds=1)
    # Every earlier attempt claimed the run and then vanished (lease expired each time).
    set_run(
        engine, run_id, state="running", attempts=POLICY.max_retries + 1, lease_expires_at=expired
    )
    outcome = runner.execute(run_id)
    assert outcome.state == "failed"
    run = load(engine, run_id)
    assert run.state == "failed"
    assert "the worker was lost" in (run.last_error or "")
    assert users(engine) == []  # handle() was not called again


def test_a_run_taken_over_meanwhile_loses_its_lease_and_its_writes(
    runner: Runner, run_of: Callable[..., int], engine: Engine
) -> None:
    run_id = run_of("overtaken")
    outcome = runner.execute(run_id)
    assert outcome.state is None and "taken over" in outcome.detail
    run = load(engine, run_id)
    assert (run.state, run.attempts) == ("running", 2)  # the new holder's claim stands
    assert run.result is None
    assert users(engine) == []  # its writes were rolled back


# --- the lease: renewed while the attempt runs ------------------------------------------


def test_a_lease_is_renewed_while_its_run_is_held_and_left_to_run_out_after(
    runner: Runner, run_of: Callable[..., int], engine: Engine
) -> None:
    keeper = LeaseKeeper(engine, lease_seconds=0.6)  # renewed every 0.2 s
    claim = runs.claim(engine, run_of("writer"), lease_seconds=0.6)
    assert claim is not None

    with keeper.kept(claim):
        first = load(engine, claim.run_id).lease_expires_at
        time.sleep(1.0)  # past the first lease
        renewed, checked = load(engine, claim.run_id).lease_expires_at, utcnow()
    time.sleep(0.5)
    after = load(engine, claim.run_id).lease_expires_at

    assert first is not None and renewed is not None and after is not None
    assert renewed > first + timedelta(seconds=0.5)
    assert renewed > checked  # never ran out while held
    assert after - renewed < timedelta(seconds=0.3)  # no renewal once the block ended


def test_a_renewal_leaves_a_run_taken_over_to_its_new_holder(
    runner: Runner, run_of: Callable[..., int], engine: Engine
) -> None:
    claim = runner.claim(run_of("writer"))
    assert claim is not None
    set_run(engine, claim.run_id, attempts=claim.attempt + 1)  # the relay gave it to another

    lost = runs.renew(engine, [claim], lease_seconds=60)

    assert lost == {claim.run_id}
    assert load(engine, claim.run_id).lease_expires_at < utcnow() + timedelta(seconds=60)


def test_a_run_taken_over_while_held_is_reported_once_and_a_finished_one_never(
    runner: Runner,
    run_of: Callable[..., int],
    engine: Engine,
    caplog: pytest.LogCaptureFixture,
) -> None:
    keeper = LeaseKeeper(engine, lease_seconds=0.3)  # a beat every 0.1 s, at least
    other = BODY.replace(b"task_run_1", b"task_run_2")
    finished, taken = runner.claim(run_of("writer")), runner.claim(run_of("writer", other))
    assert finished is not None and taken is not None
    with caplog.at_level(logging.WARNING, logger="pipeline.lease"):
        with keeper.kept(finished):
            with engine.begin() as conn:  # its outcome: a renewal may now find it done
                assert runs.record(conn, finished, RunState.SUCCEEDED)
            time.sleep(0.15)  # one beat at most before the block ends, as in the runner
        with keeper.kept(taken):
            set_run(engine, taken.run_id, attempts=taken.attempt + 1)  # given to another
            time.sleep(0.6)  # beat after beat
    reports = [r.getMessage() for r in caplog.records if "taken over" in r.getMessage()]
    assert reports == [
        f"run {taken.run_id} was taken over while it ran here: its outcome will be discarded"
    ]
