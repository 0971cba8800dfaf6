"""NotifyUser: one `media_ready` notification per media, and an email if SMTP_URL is set."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from pipeline import Context, Event, Listener, RetryPolicy, Role, Skip, find_media
from pipeline.app.mail import send_mail
from pipeline.models import Notification, utcnow

KIND = "media_ready"


class NotifyUser(Listener):
    retry = RetryPolicy(max_retries=5, backoff_base=5.0, backoff_cap=600.0)

    def wants(self, event: Event) -> bool:
        """successful jobs, not our own thumbnail jobs"""
        return event.succeeded and event.role != Role.THUMBNAIL

    def handle(self, event: Event, ctx: Context) -> dict[str, Any]:
        media, role = find_media(ctx.session, event)
        if role is Role.THUMBNAIL:
            raise Skip("this is a thumbnail job's own delivery")
        if media.owner is None:
            raise Skip(f"media {media.id} has no owner to notify")
        existing = ctx.session.scalar(
            select(Notification.id).where(
                Notification.media_id == media.id, Notification.kind == KIND
            )
        )
        if existing is not None:
            return {"notification_id": existing, "created": False}
        link = media.output_url or (event.output.url if event.output else None) or "(no link)"
        message = f"Your {media.kind} is ready: {link}"
        media_id, user_id, email, kind = media.id, media.owner.id, media.owner.email, media.kind
        emailed_at = None
        if ctx.settings.smtp_url:
            with ctx.outside_transaction():
                send_mail(
                    ctx.settings.smtp_url,
                    sender=ctx.settings.mail_from,
                    to=email,
                    subject=f"Your {kind} is ready",
                    body=f"{message}\n",
                    message_id=f"<{KIND}-{media_id}@ittybit-pipeline>",
                )
            emailed_at = utcnow()
        note = Notification(
            media_id=media_id, user_id=user_id, kind=KIND, message=message, emailed_at=emailed_at
        )
        ctx.session.add(note)
        ctx.session.flush()
        return {"notification_id": note.id, "created": True, "emailed": emailed_at is not None}
