"""UpdateMediaRecord: a job's outcome onto its media row (or its thumbnail's URL)."""

from __future__ import annotations

from typing import Any

from pipeline import Context, Event, Listener, RetryPolicy, Role, find_media, is_newer
from pipeline.events import FAILED, SUCCEEDED

MEDIA_STATUS = {SUCCEEDED: "completed", FAILED: "failed"}


class UpdateMediaRecord(Listener):
    retry = RetryPolicy(max_retries=6, backoff_base=1.0, backoff_cap=60.0)

    def wants(self, event: Event) -> bool:
        """every delivery about a job"""
        return True

    def handle(self, event: Event, ctx: Context) -> dict[str, Any]:
        # Locked as it is read: without it two deliveries about one media at once both
        # pass is_newer on PostgreSQL and the last to commit wins, older or not.
        media, role = find_media(ctx.session, event, lock=True)
        if role is Role.THUMBNAIL:
            if not event.succeeded or event.output is None or not event.output.url:
                return {"media_id": media.id, "thumbnail": event.status}
            media.thumbnail_url = event.output.url
            return {"media_id": media.id, "thumbnail_url": media.thumbnail_url}
        if not is_newer(event, media.outcome_at, media.outcome_terminal):
            return {"media_id": media.id, "ignored": "older than the outcome already applied"}
        media.status = MEDIA_STATUS.get(event.status, event.status)
        media.outcome_at = event.occurred_at
        media.outcome_terminal = event.terminal
        if media.task_id is None:
            media.task_id = event.task_id
        if event.succeeded:
            out = event.output
            media.error = None
            if out is not None:
                media.output_url = out.url
                media.duration, media.width, media.height = out.duration, out.width, out.height
                media.format, media.size = out.format, out.size
        elif event.terminal:
            media.error = event.error or f"job {event.status} without a reason"
        return {"media_id": media.id, "status": media.status}
