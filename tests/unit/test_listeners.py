"""The three listeners through the Runner on SQLite, and the Ittybit client they use."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from typing import Any

import pytest
import requests
from flask import Flask
from sqlalchemy import Engine, select, update
from sqlalchemy.orm import Session

from pipeline.app.ittybit import IttybitClient
from pipeline.dev.procs import free_port
from pipeline.errors import PermanentError, RetryableError
from pipeline.inbox import receive
from pipeline.models import ListenerRun, Media, Notification
from pipeline.registry import discover
from pipeline.runner import Outcome, Runner
from pipeline.settings import Settings

from .support import API_KEY, FakeIttybit, Reply

Deliver = Callable[..., dict[str, int]]
Execute = Callable[[dict[str, int], str], Outcome]

T1, T2, T3 = 1775212200000, 1775212260000, 1775212320000  # Unix ms, a minute apart


def video(task_id: str, status: str = "succeeded", at: int = T2, **fields: Any) -> dict[str, Any]:
    """A shape B payload for `task_id`."""
    payload: dict[str, Any] = {"id": task_id, "status": status, "kind": "video", "metadata": {}}
    payload["completed_at" if status in ("succeeded", "failed") else "created_at"] = at
    if status == "succeeded":
        payload["output"] = {
            "url": f"https://cdn.ittybit.test/{task_id}.mp4",
            "format": "mp4",
            "width": 1920,
            "height": 1080,
            "duration": 124.5,
            "size": 48230912,
        }
    if status == "failed":
        payload["error"] = "input file is not a video"
    payload.update(fields)
    return payload


@pytest.fixture
def runner(settings: Settings, engine: Engine) -> Runner:
    return Runner(settings, engine, discover())


@pytest.fixture
def deliver(runner: Runner, engine: Engine) -> Deliver:
    """Ingest a payload as the endpoint would; returns {listener: run_id} of its new runs."""

    def go(payload: dict[str, Any]) -> dict[str, int]:
        receipt = receive(engine, runner.registry, json.dumps(payload).encode(), 60.0)
        return {name: run_id for run_id, name, _ in receipt.runs}

    return go


@pytest.fixture
def execute(runner: Runner) -> Execute:
    def go(runs: dict[str, int], listener: str) -> Outcome:
        return runner.execute(runs[listener])

    return go


def fresh(session: Session, media: Media) -> Media:
    """The media as stored now; the read ends at once (on SQLite every BEGIN takes the
    write lock, so an open read would stall the runner)."""
    session.expire_all()
    media = session.get_one(Media, media.id)
    session.commit()
    return media


def notifications(session: Session) -> list[Notification]:
    found = list(session.scalars(select(Notification)))
    session.commit()
    return found


def run_row(engine: Engine, run_id: int) -> ListenerRun:
    with Session(engine) as session:
        run = session.get_one(ListenerRun, run_id)
        session.expunge(run)
        return run


# --- UpdateMediaRecord -----------------------------------------------------------------------


def test_update_finds_media_by_metadata_media_id_first(
    deliver: Deliver, execute: Execute, session: Session, make_media: Callable[..., Media]
) -> None:
    media = make_media(task_id="task_recorded")
    decoy = make_media(task_id="task_from_webhook")
    runs = deliver(video("task_from_webhook", metadata={"media_id": str(media.id)}))
    assert execute(runs, "update_media_record").state == "succeeded"
    assert fresh(session, media).status == "completed"
    assert fresh(session, decoy).status == "pending"


def test_update_falls_back_to_the_task_id(
    deliver: Deliver, execute: Execute, session: Session, make_media: Callable[..., Media]
) -> None:
    media = make_media(task_id="task_by_id")
    runs = deliver(video("task_by_id", metadata={"media_id": "99999"}))  # no such media
    assert execute(runs, "update_media_record").state == "succeeded"
    assert fresh(session, media).status == "completed"


def test_update_stores_output_and_its_metadata_on_success(
    deliver: Deliver, execute: Execute, session: Session, make_media: Callable[..., Media]
) -> None:
    media = make_media(task_id="task_ok", error="an old error")
    execute(deliver(video("task_ok")), "update_media_record")
    media = fresh(session, media)
    assert media.status == "completed"
    assert media.output_url == "https://cdn.ittybit.test/task_ok.mp4"
    assert (media.format, media.width, media.height) == ("mp4", 1920, 1080)
    assert (media.duration, media.size) == (124.5, 48230912)
    assert media.error is None
    assert media.outcome_terminal


def test_update_stores_status_and_error_on_failure(
    deliver: Deliver, execute: Execute, session: Session, make_media: Callable[..., Media]
) -> None:
    media = make_media(task_id="task_bad")
    runs = deliver(video("task_bad", status="failed"))
    assert list(runs) == ["update_media_record"]
    execute(runs, "update_media_record")
    media = fresh(session, media)
    assert (media.status, media.error) == ("failed", "input file is not a video")
    assert media.output_url is None


def test_an_older_failure_after_a_success_is_ignored(
    deliver: Deliver,
    execute: Execute,
    session: Session,
    engine: Engine,
    make_media: Callable[..., Media],
) -> None:
    media = make_media(task_id="task_order")
    execute(deliver(video("task_order", "succeeded", at=T2)), "update_media_record")
    runs = deliver(video("task_order", "failed", at=T1))
    assert execute(runs, "update_media_record").state == "succeeded"
    assert run_row(engine, runs["update_media_record"]).result == {
        "media_id": media.id,
        "ignored": "older than the outcome already applied",
    }
    media = fresh(session, media)
    assert (media.status, media.error) == ("completed", None)
    assert media.output_url == "https://cdn.ittybit.test/task_order.mp4"


def test_a_newer_outcome_replaces_an_older_one(
    deliver: Deliver, execute: Execute, session: Session, make_media: Callable[..., Media]
) -> None:
    media = make_media(task_id="task_newer")
    execute(deliver(video("task_newer", "failed", at=T1)), "update_media_record")
    execute(deliver(video("task_newer", "succeeded", at=T2)), "update_media_record")
    media = fresh(session, media)
    assert (media.status, media.error) == ("completed", None)


def test_a_processing_delivery_after_success_is_ignored_even_if_later(
    deliver: Deliver, execute: Execute, session: Session, make_media: Callable[..., Media]
) -> None:
    media = make_media(task_id="task_late")
    execute(deliver(video("task_late", "succeeded", at=T2)), "update_media_record")
    execute(deliver(video("task_late", "processing", at=T3)), "update_media_record")
    assert fresh(session, media).status == "completed"


def test_a_processing_delivery_before_success_is_applied(
    deliver: Deliver, execute: Execute, session: Session, make_media: Callable[..., Media]
) -> None:
    media = make_media(task_id="task_early")
    execute(deliver(video("task_early", "processing", at=T1)), "update_media_record")
    assert fresh(session, media).status == "processing"


def test_update_of_unknown_media_retries(deliver: Deliver, execute: Execute) -> None:
    runs = deliver(video("task_nobody_knows"))
    outcome = execute(runs, "update_media_record")
    assert outcome.state == "retrying"
    assert "no media for task 'task_nobody_knows'" in outcome.detail


def thumbnail_delivery(task_id: str, **fields: Any) -> dict[str, Any]:
    payload = video(task_id, kind="image", **fields)
    payload["output"] = {"url": f"https://cdn.ittybit.test/{task_id}.webp", "format": "webp"}
    return payload


def test_a_thumbnail_jobs_delivery_stores_thumbnail_url_by_thumbnail_task_id(
    deliver: Deliver, execute: Execute, session: Session, make_media: Callable[..., Media]
) -> None:
    media = make_media(task_id="task_main", thumbnail_task_id="job_thumb")
    execute(deliver(video("task_main")), "update_media_record")
    runs = deliver(thumbnail_delivery("job_thumb"))
    assert execute(runs, "update_media_record").state == "succeeded"
    media = fresh(session, media)
    assert media.thumbnail_url == "https://cdn.ittybit.test/job_thumb.webp"
    # the main outcome is untouched
    assert (media.status, media.format) == ("completed", "mp4")
    assert media.output_url == "https://cdn.ittybit.test/task_main.mp4"


def test_a_thumbnail_jobs_delivery_stores_thumbnail_url_by_role_metadata(
    deliver: Deliver, execute: Execute, session: Session, make_media: Callable[..., Media]
) -> None:
    media = make_media(task_id="task_main2")  # its thumbnail job id is not recorded yet
    metadata = {"media_id": media.id, "role": "thumbnail"}
    runs = deliver(thumbnail_delivery("job_unrecorded", metadata=metadata))
    assert list(runs) == ["update_media_record"]  # wants() excludes the other two
    execute(runs, "update_media_record")
    media = fresh(session, media)
    assert media.thumbnail_url == "https://cdn.ittybit.test/job_unrecorded.webp"
    assert media.status == "pending" and media.task_id == "task_main2"


def test_thumbnail_deliveries_known_only_by_task_id_are_skipped_by_the_other_listeners(
    deliver: Deliver, execute: Execute, session: Session, make_media: Callable[..., Media]
) -> None:
    make_media(task_id="task_main3", thumbnail_task_id="job_thumb3")
    payload = thumbnail_delivery("job_thumb3")
    payload["kind"] = "video"  # wants() cannot tell; handle() can
    runs = deliver(payload)
    assert execute(runs, "generate_thumbnail").state == "skipped"
    assert execute(runs, "notify_user").state == "skipped"
    assert notifications(session) == []


# --- NotifyUser -------------------------------------------------------------------------------


def test_notify_creates_one_notification_per_media_even_when_run_twice(
    deliver: Deliver,
    execute: Execute,
    session: Session,
    engine: Engine,
    make_media: Callable[..., Media],
) -> None:
    media = make_media(task_id="task_notify")
    first = deliver(video("task_notify"))
    envelope = {"id": "evt_again", "object": "event", "data": video("task_notify")}
    second = deliver(envelope)  # the same outcome, delivered in another shape
    assert execute(first, "notify_user").state == "succeeded"
    assert execute(second, "notify_user").state == "succeeded"
    # and the first run replayed by hand
    with engine.begin() as conn:
        conn.execute(
            update(ListenerRun)
            .where(ListenerRun.id == first["notify_user"])
            .values(state="pending", attempts=0)
        )
    assert execute(first, "notify_user").state == "succeeded"
    notes = notifications(session)
    assert len(notes) == 1
    assert (notes[0].media_id, notes[0].kind) == (media.id, "media_ready")
    assert notes[0].message == "Your video is ready: https://cdn.ittybit.test/task_notify.mp4"
    assert run_row(engine, second["notify_user"]).result == {
        "notification_id": notes[0].id,
        "created": False,
    }


def test_notify_skips_media_without_an_owner(
    deliver: Deliver,
    execute: Execute,
    session: Session,
    engine: Engine,
    make_media: Callable[..., Media],
) -> None:
    media = make_media(owner=False, task_id="task_orphan")
    runs = deliver(video("task_orphan"))
    assert execute(runs, "notify_user").state == "skipped"
    assert run_row(engine, runs["notify_user"]).result == {
        "reason": f"media {media.id} has no owner to notify"
    }
    assert notifications(session) == []


def test_notify_is_not_run_for_failures(deliver: Deliver) -> None:
    assert "notify_user" not in deliver(video("task_f", status="failed"))


# --- GenerateThumbnail (against the project's emulator) ---------------------------------------


@pytest.fixture
def thumbnail_runner(
    settings: Settings, engine: Engine, emulator: tuple[str, Flask]
) -> tuple[Runner, str]:
    url, _ = emulator
    return Runner(dataclasses.replace(settings, ittybit_api_url=url), engine, discover()), url


def test_runs_in_one_process_reuse_one_connection_to_ittybit(
    deliver: Deliver,
    settings: Settings,
    engine: Engine,
    make_media: Callable[..., Media],
    ittybit: FakeIttybit,
) -> None:
    runner = Runner(dataclasses.replace(settings, ittybit_api_url=ittybit.url), engine, discover())
    for n in (1, 2):
        make_media(task_id=f"task_reuse_{n}")
        runs = deliver(video(f"task_reuse_{n}"))
        assert runner.execute(runs["generate_thumbnail"]).state == "succeeded"

    assert [(r.method, r.path) for r in ittybit.requests] == [("POST", "/jobs")] * 2
    assert len({r.peer for r in ittybit.requests}) == 1, "each run opened its own connection"


def jobs_requests(url: str) -> list[dict[str, Any]]:
    log = requests.get(f"{url}/_emulator/requests", timeout=5).json()
    return [r for r in log if r["method"] == "POST" and r["path"] == "/jobs"]


def test_generate_thumbnail_sends_the_guides_options_with_an_idempotency_key(
    deliver: Deliver,
    session: Session,
    thumbnail_runner: tuple[Runner, str],
    make_media: Callable[..., Media],
) -> None:
    runner, url = thumbnail_runner
    media = make_media(task_id="task_thumb")
    runs = deliver(video("task_thumb"))
    assert runner.execute(runs["generate_thumbnail"]).state == "succeeded"
    [call] = jobs_requests(url)
    assert call["status"] == 201  # the emulator checked our Bearer key and the body
    assert call["json"] == {
        "input": "https://cdn.ittybit.test/task_thumb.mp4",
        "kind": "image",
        "options": {"start": 2, "width": 640, "format": "webp"},
        "webhook_url": "https://clippable.test/webhooks/ittybit",
        "metadata": {"media_id": media.id, "role": "thumbnail"},
    }
    assert call["headers"]["Idempotency-Key"] == f"thumbnail-media-{media.id}"
    job_id = fresh(session, media).thumbnail_task_id
    assert job_id is not None and job_id.startswith("job_")


def test_generate_thumbnail_creates_at_most_one_job_per_media(
    deliver: Deliver,
    session: Session,
    engine: Engine,
    thumbnail_runner: tuple[Runner, str],
    make_media: Callable[..., Media],
) -> None:
    runner, url = thumbnail_runner
    media = make_media(task_id="task_once")
    first = deliver(video("task_once"))
    second = deliver({"id": "evt_same", "object": "event", "data": video("task_once")})
    assert runner.execute(first["generate_thumbnail"]).state == "succeeded"
    assert runner.execute(second["generate_thumbnail"]).state == "succeeded"
    assert len(jobs_requests(url)) == 1
    job_id = fresh(session, media).thumbnail_task_id
    assert run_row(engine, second["generate_thumbnail"]).result == {
        "media_id": media.id,
        "thumbnail_task_id": job_id,
        "created": False,
    }


def test_generate_thumbnail_retried_after_a_5xx_reuses_its_key_and_gets_one_job(
    deliver: Deliver,
    session: Session,
    thumbnail_runner: tuple[Runner, str],
    make_media: Callable[..., Media],
) -> None:
    runner, url = thumbnail_runner
    media = make_media(task_id="task_lost_answer")
    # Ittybit creates the job but the answer is lost: a 502 after the fact.
    fault = {"status": 502, "count": 1, "method": "POST", "path": "/jobs", "apply": True}
    requests.post(f"{url}/_emulator/faults", json=fault, timeout=5).raise_for_status()
    runs = deliver(video("task_lost_answer"))
    assert runner.execute(runs["generate_thumbnail"]).state == "retrying"
    assert fresh(session, media).thumbnail_task_id is None
    assert runner.execute(runs["generate_thumbnail"]).state == "succeeded"
    calls = jobs_requests(url)
    assert [c["status"] for c in calls] == [502, 201]
    assert {c["headers"]["Idempotency-Key"] for c in calls} == {f"thumbnail-media-{media.id}"}
    jobs = requests.get(f"{url}/_emulator/jobs", timeout=5).json()
    assert len(jobs) == 1
    assert fresh(session, media).thumbnail_task_id == jobs[0]["id"]


def test_generate_thumbnail_wants_only_successful_videos(deliver: Deliver) -> None:
    assert "generate_thumbnail" in deliver(video("task_v"))
    assert "generate_thumbnail" not in deliver(video("task_i", kind="image"))
    assert "generate_thumbnail" not in deliver(video("task_x", status="failed"))


def test_generate_thumbnail_without_an_output_url_fails_permanently(
    deliver: Deliver, execute: Execute, make_media: Callable[..., Media]
) -> None:
    make_media(task_id="task_no_output")
    payload = video("task_no_output")
    del payload["output"]
    outcome = execute(deliver(payload), "generate_thumbnail")
    assert outcome.state == "failed"
    assert "no output URL" in outcome.detail


# --- the Ittybit client ------------------------------------------------------------------------


def client_for(url: str, read_timeout: float = 5.0) -> IttybitClient:
    return IttybitClient(url, API_KEY, connect_timeout=1.0, read_timeout=read_timeout)


def create(client: IttybitClient) -> dict[str, Any]:
    return client.create_job(input="https://cdn.test/a.mp4", kind="image", idempotency_key="k1")


def test_the_client_sends_the_bearer_key_and_returns_the_job(ittybit: FakeIttybit) -> None:
    job = create(client_for(ittybit.url))
    assert job["id"] == "job_1"
    [call] = ittybit.requests
    assert call.headers["Authorization"] == f"Bearer {API_KEY}"
    assert call.headers["Idempotency-Key"] == "k1"
    assert call.body == {"input": "https://cdn.test/a.mp4", "kind": "image"}


@pytest.mark.parametrize("status", [500, 502, 503, 504, 408])
def test_server_errors_are_retryable(ittybit: FakeIttybit, status: int) -> None:
    ittybit.script.append(Reply(status, {"kind": "server_error", "message": "try later"}))
    with pytest.raises(RetryableError, match=f"Ittybit {status} on POST /jobs") as caught:
        create(client_for(ittybit.url))
    assert caught.value.delay is None  # the listener's backoff decides


def test_429_is_retryable_after_the_delay_it_asks_for(ittybit: FakeIttybit) -> None:
    ittybit.script.append(
        Reply(429, {"kind": "rate_limited", "message": "slow down"}, {"Retry-After": "12"})
    )
    with pytest.raises(RetryableError, match="rate_limited: slow down") as caught:
        create(client_for(ittybit.url))
    assert caught.value.delay == 12.0


def test_429_with_a_past_http_date_retry_after_means_no_wait(ittybit: FakeIttybit) -> None:
    ittybit.script.append(Reply(429, {}, {"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}))
    with pytest.raises(RetryableError) as caught:
        create(client_for(ittybit.url))
    assert caught.value.delay == 0.0


def test_a_timeout_is_retryable(ittybit: FakeIttybit) -> None:
    ittybit.script.append(Reply(200, {"id": "job_slow"}, delay=1.0))
    with pytest.raises(RetryableError, match="timed out"):
        create(client_for(ittybit.url, read_timeout=0.2))


def test_a_refused_connection_is_retryable() -> None:
    with pytest.raises(RetryableError, match="unreachable"):
        create(client_for(f"http://127.0.0.1:{free_port()}"))


def test_400_is_permanent_and_keeps_ittybits_message(ittybit: FakeIttybit) -> None:
    body = {"kind": "request_invalid", "message": "'input' must be an http(s) or s3 URL"}
    ittybit.script.append(Reply(400, body))
    with pytest.raises(PermanentError) as caught:
        create(client_for(ittybit.url))
    assert caught.value.message == (
        "Ittybit 400 on POST /jobs: request_invalid: 'input' must be an http(s) or s3 URL"
    )


@pytest.mark.parametrize("status", [401, 404, 409, 422])
def test_other_client_errors_are_permanent(ittybit: FakeIttybit, status: int) -> None:
    ittybit.script.append(Reply(status, {"kind": "nope", "message": "no"}))
    with pytest.raises(PermanentError):
        create(client_for(ittybit.url))


def test_a_success_that_is_not_json_is_retryable(ittybit: FakeIttybit) -> None:
    ittybit.script.append(Reply(200, b"<html>proxy page</html>"))
    with pytest.raises(RetryableError, match="non-JSON"):
        create(client_for(ittybit.url))


def test_a_success_that_is_not_an_object_is_permanent(ittybit: FakeIttybit) -> None:
    ittybit.script.append(Reply(200, ["job_1"]))
    with pytest.raises(PermanentError, match="list"):
        create(client_for(ittybit.url))


def test_an_error_body_that_is_not_json_is_reported_as_text(ittybit: FakeIttybit) -> None:
    ittybit.script.append(Reply(503, b"upstream connect error"))
    with pytest.raises(RetryableError, match="upstream connect error"):
        create(client_for(ittybit.url))
