"""Submitting media: a row for it, then its Ittybit job delivering to our webhook."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from pipeline.app.ittybit import IttybitClient
from pipeline.errors import PipelineError
from pipeline.models import Media, User
from pipeline.settings import Settings


def submit_media(
    settings: Settings,
    sessions: sessionmaker[Session],
    input_url: str,
    *,
    kind: str,
    email: str,
    options: dict[str, Any] | None = None,
) -> tuple[int, str]:
    """Create the user (if new) and the media row, then the job; returns (media id, job id).

    The row is committed before the call, so the job's `metadata.media_id` always names a
    row even when the webhook beats the write of the job id.
    """
    webhook_url = settings.webhook_url
    client = IttybitClient.from_settings(settings)
    with sessions.begin() as session:
        user = session.scalar(select(User).where(User.email == email)) or User(email=email)
        media = Media(owner=user, kind=kind, input_url=input_url, status="submitting")
        session.add(media)
        session.flush()
        media_id = media.id
    try:
        job = client.create_job(
            input=input_url,
            kind=kind,
            options=options,
            webhook_url=webhook_url,
            metadata={"media_id": media_id},
            idempotency_key=f"submit-media-{media_id}",
        )
    except PipelineError as exc:
        with sessions.begin() as session:
            failed = session.get_one(Media, media_id)
            failed.status, failed.error = "failed", f"submit failed: {exc.message}"
        raise
    job_id = str(job["id"])
    with sessions.begin() as session:
        media = session.get_one(Media, media_id)
        media.task_id = job_id
        if media.status == "submitting":  # the webhook may already have landed
            media.status = "queued"
    return media_id, job_id
