"""The whole cycle as a user drives it, every process real: `pipeline submit` → the emulator
→ gunicorn → a Celery worker over our own Redis → a thumbnail job → an email at a real SMTP
server on loopback. Also a failing job, a failing delivery and a mail server that is down."""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from pipeline.dev.procs import wait_for
from pipeline.models import ListenerRun

from .helpers import (
    FINISHED,
    emulated_job,
    emulator,
    events_for,
    finished_runs,
    get_media,
    jobs_requested,
    notifications,
    runs_for,
)
from .smtp import Inbox, Received
from .stack import BACKENDS, Stack, start_stack

pytestmark = pytest.mark.integration

THUMBNAIL_OPTIONS = {"start": 2, "width": 640, "format": "webp"}
VIDEO_LISTENERS = {"update_media_record", "generate_thumbnail", "notify_user"}


@dataclass
class MailStack:
    """A running pipeline whose web and worker send mail to `inbox`."""

    stack: Stack
    inbox: Inbox


@pytest.fixture(scope="module", params=BACKENDS)
def e2e(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[MailStack]:
    """Our own stack per backend (the shared one has no SMTP_URL), and its SMTP server."""
    inbox = Inbox()
    inbox.start()
    try:
        logs = tmp_path_factory.mktemp(f"e2e-{request.param}")
        stack = start_stack(request.param, logs, env={"SMTP_URL": inbox.url})
    except BaseException:
        inbox.stop()
        raise
    yield MailStack(stack, inbox)
    stack.stop()
    inbox.stop()


# --- what a test does and reads ------------------------------------------------------------


def new_email() -> str:
    return f"e2e-{secrets.token_hex(5)}@example.test"


def submit(stack: Stack, email: str, *options: str) -> tuple[int, str]:
    """`pipeline submit URL --kind video --user EMAIL [--option K=V]...`: (media id, job id)."""
    url = f"https://clippable.test/projects/{secrets.token_hex(4)}.mov"
    argv = ["submit", url, "--kind", "video", "--user", email]
    for option in options:
        argv += ["--option", option]
    done = stack.cli(*argv)
    assert done.returncode == 0, done.stdout + done.stderr
    found = re.fullmatch(r"media (\d+) job (\S+)", done.stdout.strip())
    assert found, done.stdout
    return int(found[1]), found[2]


def cycle_done(stack: Stack, media_id: int, job_id: str) -> bool:
    """The video's runs and its thumbnail's runs have all ended, the thumbnail URL stored."""
    media = get_media(stack.db, media_id)
    if not (media.thumbnail_url and media.thumbnail_task_id):
        return False
    return bool(finished_runs(stack.db, job_id)()) and bool(
        finished_runs(stack.db, media.thumbnail_task_id)()
    )


def states(runs: list[ListenerRun]) -> dict[str, str]:
    return {run.listener: run.state for run in runs}


def assert_one_email(inbox: Inbox, email: str, media_id: int, link: str) -> Received:
    [mail] = inbox.to(email)
    assert mail.message["To"] == email
    assert mail.message["Message-ID"] == f"<media_ready-{media_id}@ittybit-pipeline>"
    assert link in mail.body
    return mail


# --- the stories ---------------------------------------------------------------------------


def test_a_submitted_video_completes_makes_one_thumbnail_and_emails_its_owner_once(
    e2e: MailStack,
) -> None:
    stack, email = e2e.stack, new_email()

    media_id, job_id = submit(stack, email)

    wait_for(lambda: cycle_done(stack, media_id, job_id), what="the full cycle ends")
    assert states(runs_for(stack.db, job_id)) == dict.fromkeys(VIDEO_LISTENERS, "succeeded")
    media = get_media(stack.db, media_id)
    video = emulated_job(stack.emulator_url, job_id)
    assert (media.status, media.output_url) == ("completed", video["output"]["url"])
    [call] = jobs_requested(stack.emulator_url, media_id, "image")
    assert call["json"]["input"] == video["output"]["url"]
    assert call["json"]["options"] == THUMBNAIL_OPTIONS
    assert call["json"]["webhook_url"] == stack.webhook_url
    assert call["json"]["metadata"]["media_id"] == media_id
    assert call["headers"].get("Idempotency-Key")
    thumbnail = emulated_job(stack.emulator_url, media.thumbnail_task_id or "")
    assert media.thumbnail_url == thumbnail["output"]["url"]
    assert states(runs_for(stack.db, thumbnail["id"])) == {"update_media_record": "succeeded"}
    [note] = notifications(stack.db, media_id)
    assert note.emailed_at is not None and media.output_url in note.message
    assert_one_email(e2e.inbox, email, media_id, media.output_url)


def test_a_failing_job_fails_its_media_and_starts_no_thumbnail_notification_or_email(
    e2e: MailStack,
) -> None:
    stack, email = e2e.stack, new_email()
    reason = f"input has no video stream ({secrets.token_hex(3)})"

    media_id, job_id = submit(stack, email, f"emulator.fail={reason}")

    runs = wait_for(finished_runs(stack.db, job_id), what="the failure's runs end")
    assert {name: run.state for name, run in runs.items()} == {"update_media_record": "succeeded"}
    media = get_media(stack.db, media_id)
    assert (media.status, media.error) == ("failed", reason)
    assert media.thumbnail_task_id is None and media.output_url is None
    assert emulated_job(stack.emulator_url, job_id)["error"] == reason
    assert jobs_requested(stack.emulator_url, media_id, "image") == []
    assert notifications(stack.db, media_id) == []
    assert e2e.inbox.to(email) == []


def test_a_delivery_failing_three_times_is_retried_until_it_lands_and_completes_once(
    e2e: MailStack,
) -> None:
    stack, email = e2e.stack, new_email()

    media_id, job_id = submit(stack, email, "emulator.delivery_failures=3")

    wait_for(lambda: cycle_done(stack, media_id, job_id), what="the full cycle ends")
    attempts = emulator(stack.emulator_url, f"deliveries?job_id={job_id}")
    assert [(a["attempt"], a["status"], a["outcome"]) for a in attempts] == [
        (1, None, "retrying"),
        (2, None, "retrying"),
        (3, None, "retrying"),
        (4, 200, "delivered"),
    ]
    assert all("delivery_failures" in a["error"] for a in attempts[:3])
    [event] = events_for(stack.db, job_id)
    assert event.status == "succeeded"
    runs = runs_for(stack.db, job_id)
    assert states(runs) == dict.fromkeys(VIDEO_LISTENERS, "succeeded")
    assert all(run.attempts == 1 for run in runs)
    media = get_media(stack.db, media_id)
    assert media.status == "completed" and media.output_url
    assert len(jobs_requested(stack.emulator_url, media_id, "image")) == 1
    assert len(notifications(stack.db, media_id)) == 1
    assert_one_email(e2e.inbox, email, media_id, media.output_url)


def notify_retrying_after_the_rest(stack: Stack, job_id: str) -> ListenerRun | None:
    """notify_user's run when it is `retrying` and the video's other runs have ended."""
    runs = {run.listener: run for run in runs_for(stack.db, job_id)}
    notify = runs.get("notify_user")
    others = [run for name, run in runs.items() if name != "notify_user"]
    if notify is None or notify.state != "retrying" or len(others) != 2:
        return None
    return notify if all(run.state in FINISHED for run in others) else None


def test_with_the_mail_server_down_notify_user_retries_and_emails_once_it_is_back(
    e2e: MailStack,
) -> None:
    stack, email = e2e.stack, new_email()
    e2e.inbox.stop()
    try:
        media_id, job_id = submit(stack, email)

        notify = wait_for(
            lambda: notify_retrying_after_the_rest(stack, job_id),
            what="notify_user retrying after the other listeners ended",
        )
        assert "mail not sent" in (notify.last_error or "")
        assert "Connection refused" in (notify.last_error or "")
        others = {r.listener: r.state for r in runs_for(stack.db, job_id) if r.id != notify.id}
        assert others == {"update_media_record": "succeeded", "generate_thumbnail": "succeeded"}
        assert notifications(stack.db, media_id) == []
    finally:
        e2e.inbox.start()

    # The run's own backoff (2.5 to 5 s for the first retry) brings it back; nothing else.
    wait_for(lambda: cycle_done(stack, media_id, job_id), what="the cycle ends after the retry")
    runs = {run.listener: run for run in runs_for(stack.db, job_id)}
    assert {name: run.state for name, run in runs.items()} == dict.fromkeys(
        VIDEO_LISTENERS, "succeeded"
    )
    assert runs["notify_user"].attempts >= 2
    assert runs["update_media_record"].attempts == runs["generate_thumbnail"].attempts == 1
    [note] = notifications(stack.db, media_id)
    assert note.emailed_at is not None
    assert_one_email(e2e.inbox, email, media_id, get_media(stack.db, media_id).output_url or "?")
