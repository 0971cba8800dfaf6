"""What the status API and the stream say of a media, read from the database."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, Row, select

from pipeline.models import Media, MediaClock, User

# The status API's fields, and the stream's `data:` (the same JSON).
COLUMNS: tuple[Any, ...] = (
    Media.id,
    Media.status,
    Media.kind,
    Media.output_url,
    Media.thumbnail_url,
    Media.error,
    Media.duration,
    Media.width,
    Media.height,
    Media.updated_at,
    Media.version,
)
BATCH = 200  # changes read per query; a stream far behind reads several batches


def status_json(row: Row[Any]) -> dict[str, Any]:
    status = dict(row._mapping)
    status["updated_at"] = row.updated_at.isoformat() if row.updated_at else None
    return status


def user_id(conn: Connection, email: str) -> int | None:
    return conn.execute(select(User.id).where(User.email == email)).scalar_one_or_none()


def one(conn: Connection, owner: int, media_id: int) -> Row[Any] | None:
    """The media `media_id` if `owner` owns it (else None: another user's is not found)."""
    query = select(*COLUMNS).where(Media.id == media_id, Media.user_id == owner)
    return conn.execute(query).first()


def clock(conn: Connection, owner: int) -> int:
    """The owner's newest version: where a stream without a cursor starts."""
    query = select(MediaClock.version).where(MediaClock.user_id == owner)
    return conn.execute(query).scalar_one_or_none() or 0


def after(conn: Connection, owner: int, cursor: int, media_id: int | None) -> list[Row[Any]]:
    """The owner's media changed after `cursor`, oldest change first (each media once, in
    its current state: the stream carries states, not diffs)."""
    query = select(*COLUMNS).where(Media.user_id == owner, Media.version > cursor)
    if media_id is not None:
        query = query.where(Media.id == media_id)
    return list(conn.execute(query.order_by(Media.version, Media.id).limit(BATCH)))
