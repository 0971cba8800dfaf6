"""Which jobs reconciliation asks about, and the delivery it makes of Ittybit's answer:
the key a real webhook of that job would have, marked as reconciled."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from datetime import timedelta

from sqlalchemy import Engine, update
from sqlalchemy.orm import Session

from pipeline.app.media import Role
from pipeline.dev.samples import webhook_payload
from pipeline.events import parse
from pipeline.models import Media, WebhookEvent, utcnow
from pipeline.reconcile import _as_delivery, stale_jobs
from pipeline.settings import Settings

JOB = {
    "id": "job_abc",
    "object": "job",
    "kind": "video",
    "status": "succeeded",
    "input": "https://clippable.test/a.mov",
    "options": {},
    "metadata": {"media_id": "7"},
    "webhook_url": "https://clippable.test/webhooks/ittybit",
    "output": {"url": "https://cdn.test/a.mp4", "format": "mp4", "width": 640, "height": 360},
    "error": None,
    "created_at": 1_800_000_000_000,
    "completed_at": 1_800_000_010_000,
}


def aged(engine: Engine, media: Media, seconds: float) -> None:
    with engine.begin() as conn:
        conn.execute(
            update(Media)
            .where(Media.id == media.id)
            .values(updated_at=utcnow() - timedelta(seconds=seconds))
        )


def test_only_quiet_unfinished_jobs_without_a_terminal_delivery_are_asked_about(
    engine: Engine, session: Session, make_media: Callable[..., Media], settings: Settings
) -> None:
    settings = dataclasses.replace(settings, reconcile_after=600)
    quiet = make_media(status="queued")
    recent = make_media(status="processing")
    done = make_media(status="completed")
    delivered = make_media(status="processing")
    thumbnail = make_media(status="completed", thumbnail_task_id="job_thumb")
    ancient = make_media(status="queued")
    session.add(
        WebhookEvent(
            delivery_key=f"{delivered.task_id}:failed",
            raw_body=b"{}",
            task_id=delivered.task_id,
            status="failed",
        )
    )
    session.commit()
    for media in (quiet, done, delivered, thumbnail):
        aged(engine, media, 601)
    aged(engine, recent, 10)
    aged(engine, ancient, 8 * 24 * 3600)  # past retention: its deliveries may be pruned

    asked = {(s.media_id, s.job_id, s.role) for s in stale_jobs(engine, settings)}

    assert asked == {
        (quiet.id, quiet.task_id, Role.MAIN),
        (thumbnail.id, "job_thumb", Role.THUMBNAIL),
    }


def test_the_delivery_has_the_key_of_the_webhook_it_stands_for_and_says_it_was_reconciled() -> None:
    made = parse(_as_delivery(JOB))

    for shape in ("A", "B"):
        real = parse(json.dumps(webhook_payload(JOB, shape)).encode())
        assert made.delivery_key == real.delivery_key == "job_abc:succeeded"
    assert made.output is not None and made.output.url == "https://cdn.test/a.mp4"
    assert made.metadata == {"media_id": "7"} and made.extra["reconciled"] is True
    assert "webhook_url" not in json.loads(_as_delivery(JOB))
