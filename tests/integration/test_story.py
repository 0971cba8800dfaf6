"""The whole story through real processes: a finished video becomes a completed media row,
one thumbnail job at (emulated) Ittybit, its thumbnail URL, and one notification; on
SQLite and PostgreSQL with Redis, and on PostgreSQL with RabbitMQ as the broker."""

from __future__ import annotations

import re
import secrets

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from pipeline.dev.procs import wait_for
from pipeline.models import Media, User

from .helpers import (
    OUTPUT,
    delivery,
    emulated_job,
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
from .stack import Stack

pytestmark = pytest.mark.integration


@pytest.fixture(params=["sqlite", "postgresql", "rabbitmq"])
def stack(request: pytest.FixtureRequest) -> Stack:
    """The session's stacks, and the one whose broker is RabbitMQ."""
    running: Stack = request.getfixturevalue(f"{request.param}_stack")
    return running


THUMBNAIL_OPTIONS = {"start": 2, "width": 640, "format": "webp"}
EVERY_LISTENER = {"update_media_record", "generate_thumbnail", "notify_user"}


def thumbnail_done(stack: Stack, media_id: int) -> bool:
    """The media has its thumbnail URL and the thumbnail's delivery has been handled."""
    media = get_media(stack.db, media_id)
    if not media.thumbnail_url or not media.thumbnail_task_id:
        return False
    return bool(finished_runs(stack.db, media.thumbnail_task_id)())


def assert_one_thumbnail_job(stack: Stack, media_id: int, video_url: str) -> None:
    """Exactly one image job was asked for, as the Laravel guide's follow-up, and recorded."""
    calls = jobs_requested(stack.emulator_url, media_id, "image")
    assert len(calls) == 1, calls
    call = calls[0]
    assert call["json"]["input"] == video_url
    assert call["json"]["options"] == THUMBNAIL_OPTIONS
    assert call["json"]["webhook_url"] == stack.webhook_url
    assert call["json"]["metadata"]["media_id"] == media_id
    assert call["headers"].get("Idempotency-Key")
    media = get_media(stack.db, media_id)
    job = emulated_job(stack.emulator_url, media.thumbnail_task_id or "")
    assert job["status"] == "succeeded"
    assert media.thumbnail_url == job["output"]["url"]
    thumbnail_runs = {run.listener: run.state for run in runs_for(stack.db, job["id"])}
    assert thumbnail_runs == {"update_media_record": "succeeded"}


@pytest.mark.parametrize("shape", ["A", "B", "C"])
def test_a_finished_video_completes_its_media_makes_one_thumbnail_and_notifies_once(
    stack: Stack, shape: str
) -> None:
    user_id = make_user(stack.db)
    task_id = new_task_id()
    media_id = make_media(stack.db, task_id=task_id, user_id=user_id)

    answer = send(stack.webhook_url, delivery(shape, task_id), stack.secret)

    assert answer.status_code == 200, answer.text
    assert answer.json()["status"] == "accepted"
    assert {run["listener"] for run in answer.json()["runs"]} == EVERY_LISTENER
    runs = wait_for(finished_runs(stack.db, task_id), what="the video's runs end")
    assert {name: run.state for name, run in runs.items()} == dict.fromkeys(
        EVERY_LISTENER, "succeeded"
    )
    assert all(run.attempts == 1 for run in runs.values())
    media = get_media(stack.db, media_id)
    assert media.status == "completed"
    assert (media.output_url, media.duration, media.width, media.height) == (
        OUTPUT["url"],
        OUTPUT["duration"],
        OUTPUT["width"],
        OUTPUT["height"],
    )
    assert (media.format, media.size) == (OUTPUT["format"], OUTPUT["size"])
    wait_for(lambda: thumbnail_done(stack, media_id), what="the thumbnail URL is stored")
    assert_one_thumbnail_job(stack, media_id, OUTPUT["url"])
    [note] = notifications(stack.db, media_id)
    assert note.user_id == user_id and note.kind == "media_ready"


def test_a_failed_video_marks_its_media_failed_and_starts_nothing_else(stack: Stack) -> None:
    user_id = make_user(stack.db)
    task_id = new_task_id()
    media_id = make_media(stack.db, task_id=task_id, user_id=user_id)
    reason = f"input could not be decoded ({secrets.token_hex(4)})"

    answer = send(
        stack.webhook_url, delivery("B", task_id, status="failed", error=reason), stack.secret
    )

    assert answer.status_code == 200, answer.text
    runs = wait_for(finished_runs(stack.db, task_id), what="the failure's runs end")
    assert {name: run.state for name, run in runs.items()} == {"update_media_record": "succeeded"}
    media = get_media(stack.db, media_id)
    assert (media.status, media.error) == ("failed", reason)
    assert media.output_url is None and media.thumbnail_task_id is None
    assert jobs_requested(stack.emulator_url, media_id, "image") == []
    assert notifications(stack.db, media_id) == []


def test_pipeline_submit_creates_the_media_and_its_job_and_the_delivery_completes_the_cycle(
    stack: Stack,
) -> None:
    email = f"submit-{secrets.token_hex(4)}@example.test"
    input_url = f"https://clippable.test/projects/{secrets.token_hex(4)}.mov"

    done = stack.cli("submit", input_url, "--kind", "video", "--user", email)

    assert done.returncode == 0, done.stdout + done.stderr
    found = re.fullmatch(r"media (\d+) job (\S+)", done.stdout.strip())
    assert found, done.stdout
    media_id, job_id = int(found[1]), found[2]
    [call] = jobs_requested(stack.emulator_url, media_id, "video")
    assert call["json"]["input"] == input_url
    assert call["json"]["webhook_url"] == stack.webhook_url
    with Session(stack.db) as session:
        media = session.get_one(Media, media_id)
        owner = session.scalars(select(User).where(User.email == email)).one()
        assert (media.task_id, media.kind, media.user_id) == (job_id, "video", owner.id)
    # The emulator finishes the job and delivers it to our gunicorn; the listeners do the rest.
    wait_for(lambda: thumbnail_done(stack, media_id), what="the full cycle ends")
    media = get_media(stack.db, media_id)
    video = emulated_job(stack.emulator_url, job_id)
    assert media.status == "completed"
    assert (media.output_url, media.width, media.size) == (
        video["output"]["url"],
        video["output"]["width"],
        video["output"]["size"],
    )
    assert_one_thumbnail_job(stack, media_id, video["output"]["url"])
    assert len(notifications(stack.db, media_id)) == 1
