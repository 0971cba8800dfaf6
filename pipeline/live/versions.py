"""Versions: each committed change of a media takes the next value of its owner's clock.

The clock row is updated last in the changing transaction, after every media row it
touches is written (so locks are taken media first, then clocks in user order: no
deadlock), and held until the commit: among one user's media, versions are handed out in
commit order. A stream's cursor is therefore never passed by a change that commits later
with a smaller version. On PostgreSQL the same transaction NOTIFYs the web processes,
which PostgreSQL delivers at the commit and never for a rollback.

Changes made through the ORM (any Session) are versioned; a bulk UPDATE of media that
bypasses the ORM must call `stamp(session, [media])` itself.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from sqlalchemy import Connection, String, bindparam, event, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from pipeline.models import Media, MediaClock

CHANNEL = "ittybit_pipeline_media"  # NOTIFY payload: "<user key>:<version>"
_CHANGED = "pipeline.live.changed"
OWNERLESS = 0  # the clock of media without an owner (no token can watch them)


def owner_key(media: Media) -> int:
    return media.user_id if media.user_id is not None else OWNERLESS


@event.listens_for(Session, "after_flush")
def _remember(session: Session, _context: Any) -> None:
    # After a flush, new/dirty still list what was flushed.
    changed = [
        obj
        for obj in (*session.new, *session.dirty)
        if isinstance(obj, Media) and (obj in session.new or session.is_modified(obj))
    ]
    if changed:
        session.info.setdefault(_CHANGED, {}).update({id(obj): obj for obj in changed})


@event.listens_for(Session, "before_commit")
def _stamp_changed(session: Session) -> None:
    if not session.info.get(_CHANGED) and not session.new and not session.dirty:
        return
    session.flush()  # the commit's own flush comes after this hook: do it first
    changed = session.info.pop(_CHANGED, None)
    if changed:
        stamp(session, changed.values())


@event.listens_for(Session, "after_rollback")
@event.listens_for(Session, "after_soft_rollback")
def _forget(session: Session, *_: Any) -> None:
    session.info.pop(_CHANGED, None)


def stamp(session: Session, media: Iterable[Media]) -> None:
    """Give `media` (already written in this transaction) their owners' next versions."""
    conn = session.connection()
    by_owner: dict[int, list[Media]] = defaultdict(list)
    for item in media:
        by_owner[owner_key(item)].append(item)
    for owner in sorted(by_owner):
        items = by_owner[owner]
        ids = [item.id for item in items]
        if conn.dialect.name == "postgresql":
            version = _tick_stamp_notify(conn, owner, ids)
        else:
            version = tick(conn, owner)
            conn.execute(update(Media).where(Media.id.in_(ids)).values(version=version))
        for item in items:
            set_committed_value(item, "version", version)


def _upsert(dialect: str) -> Any:
    return postgresql.insert if dialect == "postgresql" else sqlite.insert


def _tick_statement(dialect: str) -> Any:
    return (
        _upsert(dialect)(MediaClock)
        .values(user_id=bindparam("owner"), version=1)
        .on_conflict_do_update(
            index_elements=[MediaClock.user_id], set_={"version": MediaClock.version + 1}
        )
        .returning(MediaClock.version)
    )


def tick(conn: Connection, owner: int) -> int:
    """The owner's clock, advanced by one (created at 1), locked until the commit."""
    return int(conn.execute(_tick_statement(conn.dialect.name), {"owner": owner}).scalar_one())


# PostgreSQL: the tick, the media's version and the NOTIFY in one round trip. Every
# data-modifying WITH runs, in order of the plan; the media rows are already locked by
# this transaction's own write, so the lock order (media, then clock) is the same.
_CLOCK = _tick_statement("postgresql").cte("clock")
_VERSIONED = (
    update(Media)
    .where(Media.id.in_(bindparam("ids", expanding=True)))
    # updated_at as the listener's write set it (its onupdate is not applied inside a WITH)
    .values(version=select(_CLOCK.c.version).scalar_subquery(), updated_at=Media.updated_at)
    .returning(Media.id)
    .cte("versioned")
)
_PAYLOAD = func.concat(bindparam("owner_key", type_=String), ":", _CLOCK.c.version)
_TICK_STAMP_NOTIFY = select(
    _CLOCK.c.version,
    func.pg_notify(CHANNEL, _PAYLOAD),
    select(func.count()).select_from(_VERSIONED).scalar_subquery(),
)


def _tick_stamp_notify(conn: Connection, owner: int, ids: list[int]) -> int:
    params = {"owner": owner, "owner_key": str(owner), "ids": ids}
    return int(conn.execute(_TICK_STAMP_NOTIFY, params).one()[0])
