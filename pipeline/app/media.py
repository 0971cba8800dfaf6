"""The app's media records as the listeners see them: finding the media an event is
about, and deciding whether an outcome is newer than the one already applied."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from pipeline.errors import RetryableError, Skip
from pipeline.events import Event
from pipeline.models import Media


class Role(StrEnum):
    """Which of a media's jobs an event reports. Our own thumbnail jobs are Ittybit jobs
    too, so their deliveries reach every listener: `event.role == Role.THUMBNAIL` (the
    metadata we set) tells them apart in `wants`, and `find_media` in `handle`."""

    MAIN = "main"
    THUMBNAIL = "thumbnail"


class MediaNotYetKnown(RetryableError):
    """The webhook beat the row recording the job: retry briefly, then skip."""

    def __init__(self, event: Event) -> None:
        super().__init__(
            f"no media for task {event.task_id!r} (metadata.media_id={event.media_id!r})",
            max_retries=4,
            then=Skip,
        )


def find_media(session: Session, event: Event, *, lock: bool = False) -> tuple[Media, Role]:
    """The media an event is about, and whether it reports its main job or its thumbnail.

    By `metadata.media_id` first (what we set when creating jobs), else by task id.
    `lock`: read it FOR UPDATE (PostgreSQL; SQLite's writer holds the whole file), so
    that what the listener decides from it still holds at its commit.
    """
    media = None
    if event.media_id is not None and event.media_id.isdigit():
        media = session.get(
            Media, int(event.media_id), with_for_update=lock or None, populate_existing=lock
        )
    if media is None:
        query = select(Media).where(
            or_(Media.task_id == event.task_id, Media.thumbnail_task_id == event.task_id)
        )
        if lock:  # re-read even if this session had loaded it
            query = query.with_for_update().execution_options(populate_existing=True)
        media = session.scalars(query).first()
    if media is None:
        raise MediaNotYetKnown(event)
    is_thumbnail = event.role == Role.THUMBNAIL or (
        media.thumbnail_task_id is not None and media.thumbnail_task_id == event.task_id
    )
    return media, Role.THUMBNAIL if is_thumbnail else Role.MAIN


def is_newer(event: Event, applied_at: datetime | None, applied_terminal: bool) -> bool:
    """Whether `event`'s outcome should replace the one applied at `applied_at`.

    A terminal outcome beats a non-terminal one; between equals, the later time wins.
    """
    if applied_at is None:
        return True
    if event.terminal != applied_terminal:
        return event.terminal
    happened = event.occurred_at
    return happened is not None and happened >= applied_at
