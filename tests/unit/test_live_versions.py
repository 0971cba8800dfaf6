"""Every committed ORM change of a media takes the next value of its owner's clock: the
version grows with each change, a rollback takes none, and one user's changes never move
another's clock."""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import Engine, select, update
from sqlalchemy.orm import Session

from pipeline.live.versions import OWNERLESS, stamp
from pipeline.models import Media, MediaClock, User


def clock(engine: Engine, owner: int) -> int:
    with Session(engine) as session:
        return session.scalar(select(MediaClock.version).filter_by(user_id=owner)) or 0


def version_in_db(engine: Engine, media_id: int) -> int:
    with Session(engine) as session:
        return session.scalars(select(Media.version).filter_by(id=media_id)).one()


def test_each_committed_change_gives_the_media_a_greater_version(
    engine: Engine, session: Session, make_media: Callable[..., Media]
) -> None:
    media = make_media()
    first = media.version
    assert first == clock(engine, media.user_id) >= 1

    media.status = "processing"
    session.commit()
    media.status = "ready"
    session.commit()

    assert media.version == first + 2 == version_in_db(engine, media.id)
    assert clock(engine, media.user_id) == media.version


def test_a_commit_without_a_media_change_takes_no_version(
    engine: Engine, session: Session, make_media: Callable[..., Media]
) -> None:
    media = make_media()
    before = media.version

    media.status = media.status  # set, not changed
    session.add(User(email="bystander@clippable.test"))
    session.commit()

    assert version_in_db(engine, media.id) == before == clock(engine, media.user_id)


def test_a_rolled_back_change_takes_no_version(
    engine: Engine, session: Session, make_media: Callable[..., Media]
) -> None:
    media = make_media()
    before = media.version

    media.status = "ready"
    session.flush()
    session.rollback()
    media.error = "later"
    session.commit()

    assert version_in_db(engine, media.id) == before + 1


def test_media_changed_together_share_the_commit_and_each_user_keeps_their_own_clock(
    engine: Engine, session: Session, make_media: Callable[..., Media]
) -> None:
    ada, ada_too, bob = make_media(), make_media(), make_media()
    ada_too.owner = ada.owner
    session.commit()
    bob_before = clock(engine, bob.user_id)

    ada.status = ada_too.status = "ready"
    session.commit()

    assert ada.version == ada_too.version == clock(engine, ada.user_id)
    assert clock(engine, bob.user_id) == bob_before


def test_media_without_an_owner_are_versioned_on_their_own_clock(
    engine: Engine, make_media: Callable[..., Media]
) -> None:
    media = make_media(owner=False)

    assert media.version == clock(engine, OWNERLESS) >= 1


def test_a_bulk_update_is_versioned_when_it_stamps_what_it_changed(
    engine: Engine, session: Session, make_media: Callable[..., Media]
) -> None:
    media = make_media()
    before = media.version

    session.execute(update(Media).where(Media.id == media.id).values(status="ready"))
    stamp(session, [media])
    session.commit()

    assert version_in_db(engine, media.id) == before + 1
