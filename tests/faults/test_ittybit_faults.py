"""Ittybit misbehaving while GenerateThumbnail calls it (scenario f): 5xx, 429 with
Retry-After, a call that hangs past the read timeout, a lost answer, a 400. Each is retried
as it should be, the attempts are counted in the database, and a media never gets a
second thumbnail job."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from typing import Any

import pytest
from integration.helpers import (
    FINISHED,
    delivery,
    emulator,
    finished_runs,
    get_media,
    jobs_requested,
    make_media,
    make_user,
    new_task_id,
    notifications,
    runs_for,
    send,
)
from integration.stack import Stack, start_stack

from pipeline.dev.procs import wait_for
from pipeline.models import ListenerRun

pytestmark = pytest.mark.integration

READ_TIMEOUT = 1.5  # seconds the worker waits for Ittybit's answer (10 by default)
RETRY_AFTER = 3  # above generate_thumbnail's first backoff (1-2 s), so it shows


@pytest.fixture(scope="module")
def ittybit(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A SQLite stack whose worker gives up on Ittybit after READ_TIMEOUT seconds."""
    running = start_stack(
        "sqlite",
        tmp_path_factory.mktemp("ittybit-faults"),
        env={"ITTYBIT_READ_TIMEOUT": str(READ_TIMEOUT)},
    )
    yield running
    running.stop()


@pytest.fixture(autouse=True)
def no_faults_left(ittybit: Stack) -> Iterator[None]:
    emulator(ittybit.emulator_url, "faults", "DELETE")
    yield
    emulator(ittybit.emulator_url, "faults", "DELETE")


def fail_next_job_calls(stack: Stack, **rule: Any) -> None:
    """The emulator's next `POST /jobs` calls misbehave as `rule` says."""
    emulator(stack.emulator_url, "faults", "POST", {"method": "POST", "path": "/jobs", **rule})


def deliver_video(stack: Stack) -> tuple[int, dict[str, ListenerRun]]:
    """A finished video for a new media; its media id and its runs once they all ended."""
    task_id = new_task_id()
    media_id = make_media(stack.db, task_id=task_id, user_id=make_user(stack.db))
    answer = send(stack.webhook_url, delivery("B", task_id), stack.secret)
    assert answer.status_code == 200, answer.text
    runs = wait_for(finished_runs(stack.db, task_id), timeout=60, what="the video's runs end")
    return media_id, runs


def thumbnail_calls(stack: Stack, media_id: int, count: int = 1) -> list[dict[str, Any]]:
    """Every `POST /jobs` for the media's thumbnail, once at least `count` were answered."""

    def answered() -> list[dict[str, Any]]:
        calls = jobs_requested(stack.emulator_url, media_id, "image")
        done = [call for call in calls if call["status"]]
        return calls if len(done) == len(calls) >= count else []

    return wait_for(answered, timeout=10, what=f"{count} thumbnail call(s) answered")


def thumbnail_jobs(stack: Stack, media_id: int) -> list[dict[str, Any]]:
    """The image jobs that exist at (emulated) Ittybit for this media."""
    return [
        job
        for job in emulator(stack.emulator_url, "jobs")
        if job["kind"] == "image" and (job["metadata"] or {}).get("media_id") == media_id
    ]


def assert_one_thumbnail_job(stack: Stack, media_id: int, calls: list[dict[str, Any]]) -> None:
    """One job exists, every call used one Idempotency-Key, and the media records the job."""
    [job] = thumbnail_jobs(stack, media_id)
    assert len({call["headers"].get("Idempotency-Key") for call in calls}) == 1, calls
    assert get_media(stack.db, media_id).thumbnail_task_id == job["id"]


def test_ittybit_500s_are_retried_with_backoff_until_the_job_is_created_once(
    ittybit: Stack,
) -> None:
    fail_next_job_calls(ittybit, status=500, count=2)

    media_id, runs = deliver_video(ittybit)

    thumbnail = runs["generate_thumbnail"]
    assert (thumbnail.state, thumbnail.attempts) == ("succeeded", 3), thumbnail.last_error
    calls = thumbnail_calls(ittybit, media_id)
    assert [call["status"] for call in calls] == [500, 500, 201]
    assert_one_thumbnail_job(ittybit, media_id, calls)
    assert all(run.attempts == 1 for name, run in runs.items() if name != "generate_thumbnail")


def test_a_429_is_retried_after_the_seconds_its_retry_after_names(ittybit: Stack) -> None:
    fail_next_job_calls(ittybit, status=429, count=1, retry_after=RETRY_AFTER)

    media_id, runs = deliver_video(ittybit)

    thumbnail = runs["generate_thumbnail"]
    assert (thumbnail.state, thumbnail.attempts) == ("succeeded", 2), thumbnail.last_error
    calls = thumbnail_calls(ittybit, media_id)
    assert [call["status"] for call in calls] == [429, 201]
    waited = (calls[1]["at"] - calls[0]["at"]) / 1000
    # The listener's own backoff after a first failure is 1-2 s: only Retry-After gives 3.
    assert RETRY_AFTER - 0.1 <= waited < RETRY_AFTER + 3, f"retried after {waited:.2f}s"
    assert_one_thumbnail_job(ittybit, media_id, calls)


def test_a_call_hanging_past_the_read_timeout_is_retried_and_makes_one_job(
    ittybit: Stack,
) -> None:
    # The emulator carries the hung call out once the worker gave up: a job, its answer lost.
    fail_next_job_calls(ittybit, hang=READ_TIMEOUT + 1.5, count=1)

    media_id, runs = deliver_video(ittybit)

    thumbnail = runs["generate_thumbnail"]
    assert (thumbnail.state, thumbnail.attempts) == ("succeeded", 2), thumbnail.last_error
    calls = thumbnail_calls(ittybit, media_id, count=2)  # the hung one ends too
    assert [bool(call["fault"]) for call in calls] == [True, False]
    assert_one_thumbnail_job(ittybit, media_id, calls)


def test_a_lost_answer_is_retried_with_the_same_key_and_gets_the_job_already_made(
    ittybit: Stack,
) -> None:
    # "apply": Ittybit creates the job, then the 502 replaces its answer on the way back.
    fail_next_job_calls(ittybit, status=502, count=1, apply=True)

    media_id, runs = deliver_video(ittybit)

    thumbnail = runs["generate_thumbnail"]
    assert (thumbnail.state, thumbnail.attempts) == ("succeeded", 2), thumbnail.last_error
    calls = thumbnail_calls(ittybit, media_id)
    assert [call["status"] for call in calls] == [502, 201]
    assert_one_thumbnail_job(ittybit, media_id, calls)
    assert thumbnail.result == {
        "media_id": media_id,
        "thumbnail_task_id": thumbnail_jobs(ittybit, media_id)[0]["id"],
        "created": True,
    }


def test_a_400_fails_the_run_at_once_keeping_ittybits_message_and_makes_no_job(
    ittybit: Stack,
) -> None:
    message = f"options.start is past the end of the video ({secrets.token_hex(4)})"
    fail_next_job_calls(ittybit, status=400, count=1, message=message)

    media_id, runs = deliver_video(ittybit)

    thumbnail = runs["generate_thumbnail"]
    assert (thumbnail.state, thumbnail.attempts) == ("failed", 1)
    assert "400" in (thumbnail.last_error or "") and message in (thumbnail.last_error or "")
    assert [call["status"] for call in thumbnail_calls(ittybit, media_id)] == [400]
    assert thumbnail_jobs(ittybit, media_id) == []
    assert get_media(ittybit.db, media_id).thumbnail_task_id is None
    assert {name: run.state for name, run in runs.items() if name != "generate_thumbnail"} == {
        "update_media_record": "succeeded",
        "notify_user": "succeeded",
    }


def test_two_deliveries_of_one_video_while_ittybit_is_slow_start_one_thumbnail_job(
    ittybit: Stack,
) -> None:
    task_id = new_task_id()
    media_id = make_media(ittybit.db, task_id=task_id, user_id=make_user(ittybit.db))
    # The first call is slow (within the read timeout): the second event's run calls too
    # before the first has recorded its job. Only the Idempotency-Key keeps them one job.
    fail_next_job_calls(ittybit, hang=READ_TIMEOUT * 0.8, count=1)

    # Two delivery keys (task + status, an evt_ id): two events, two thumbnail runs.
    answers = [send(ittybit.webhook_url, delivery(s, task_id), ittybit.secret) for s in "BC"]

    assert [answer.status_code for answer in answers] == [200, 200]

    def both_events_ended() -> list[ListenerRun]:
        runs = runs_for(ittybit.db, task_id)
        return runs if len(runs) == 6 and all(r.state in FINISHED for r in runs) else []

    runs = wait_for(both_events_ended, timeout=60, what="both events' runs end")
    assert {run.state for run in runs} == {"succeeded"}, [r.last_error for r in runs]
    assert len(thumbnail_calls(ittybit, media_id, count=2)) == 2
    [job] = thumbnail_jobs(ittybit, media_id)
    assert get_media(ittybit.db, media_id).thumbnail_task_id == job["id"]
    assert len(notifications(ittybit.db, media_id)) == 1
