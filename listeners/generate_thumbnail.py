"""GenerateThumbnail: one image job per finished video, never a second."""

from __future__ import annotations

from typing import Any

from pipeline import Context, Event, Listener, PermanentError, RetryPolicy, Role, Skip, find_media
from pipeline.models import Media

THUMBNAIL_OPTIONS = {"start": 2, "width": 640, "format": "webp"}


class GenerateThumbnail(Listener):
    retry = RetryPolicy(max_retries=6, backoff_base=2.0, backoff_cap=300.0)
    requires = ("ITTYBIT_API_KEY", "PUBLIC_URL")

    def wants(self, event: Event) -> bool:
        """successful video jobs, not our own thumbnail jobs"""
        return event.succeeded and event.kind == "video" and event.role != Role.THUMBNAIL

    def handle(self, event: Event, ctx: Context) -> dict[str, Any]:
        media, role = find_media(ctx.session, event)
        if role is Role.THUMBNAIL:
            raise Skip("this is a thumbnail job's own delivery")
        if media.thumbnail_task_id:
            return {
                "media_id": media.id,
                "thumbnail_task_id": media.thumbnail_task_id,
                "created": False,
            }
        if event.output is None or not event.output.url:
            raise PermanentError("the video's delivery has no output URL to take a frame from")
        media_id, video_url = media.id, event.output.url
        # Call out first, then write: no lock held across the network. The key makes a
        # repeated call (after a crash or a lost race) return the same job.
        with ctx.outside_transaction():
            job = ctx.ittybit.create_job(
                input=video_url,
                kind="image",
                options=THUMBNAIL_OPTIONS,
                webhook_url=ctx.settings.webhook_url,
                metadata={"media_id": media_id, "role": Role.THUMBNAIL.value},
                idempotency_key=f"thumbnail-media-{media_id}",
            )
        job_id = job.get("id")
        if not isinstance(job_id, str):
            raise PermanentError(f"Ittybit created a job without an id: {job!r:.200}")
        media = ctx.session.get_one(Media, media_id)
        if media.thumbnail_task_id is None:
            media.thumbnail_task_id = job_id
        return {"media_id": media_id, "thumbnail_task_id": media.thumbnail_task_id, "created": True}
