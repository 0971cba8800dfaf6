"""The tables: the app's own (users, media, notifications), the live stream's clock
(media_clock) and the pipeline's ledger (webhook_events, listener_runs). SQLAlchemy 2.0
typed models; migrations in pipeline/migrations/ (a test holds the two to each other
with `alembic check`)."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

# Integer on SQLite so the primary key is the rowid alias and autoincrements.
BigId = BigInteger().with_variant(Integer(), "sqlite")


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in Python on every backend (SQLite keeps no zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        value = value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(
        naming_convention={
            "ix": "ix_%(table_name)s_%(column_0_N_name)s",
            "ck": "ck_%(table_name)s_%(constraint_name)s",
            "uq": "uq_%(table_name)s_%(column_0_N_name)s",
            "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
            "pk": "pk_%(table_name)s",
        }
    )


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)
    name: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    media: Mapped[list[Media]] = relationship(back_populates="owner")


class Media(Base):
    __tablename__ = "media"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), index=True)
    task_id: Mapped[str | None] = mapped_column(String(255), unique=True)
    kind: Mapped[str] = mapped_column(String(32), default="video")
    input_url: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(32), default="pending")
    output_url: Mapped[str | None] = mapped_column(Text)
    duration: Mapped[float | None] = mapped_column(Float)
    width: Mapped[int | None] = mapped_column(Integer)
    height: Mapped[int | None] = mapped_column(Integer)
    format: Mapped[str | None] = mapped_column(String(32))
    size: Mapped[int | None] = mapped_column(BigInteger)
    error: Mapped[str | None] = mapped_column(Text)
    thumbnail_task_id: Mapped[str | None] = mapped_column(String(255), unique=True)
    thumbnail_url: Mapped[str | None] = mapped_column(Text)
    # The outcome last applied, so an older or less final delivery never overwrites it.
    outcome_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    outcome_terminal: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
    # Stamped at every committed change from the owner's MediaClock (pipeline/live/versions.py):
    # grows with each change, in commit order among one user's media; the stream's cursor.
    version: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")

    owner: Mapped[User | None] = relationship(back_populates="media")

    __table_args__ = (Index("ix_media_user_id_version", "user_id", "version"),)


class MediaClock(Base):
    """One counter per user (0: media without an owner): each committed change of their
    media takes the next value, inside the changing transaction, as the media's version."""

    __tablename__ = "media_clock"

    user_id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=False)
    version: Mapped[int] = mapped_column(BigInteger, default=0)


class Notification(Base):
    __tablename__ = "notifications"
    __table_args__ = (UniqueConstraint("media_id", "kind"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    media_id: Mapped[int] = mapped_column(ForeignKey("media.id"))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    kind: Mapped[str] = mapped_column(String(32))
    message: Mapped[str] = mapped_column(Text)
    emailed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class WebhookEvent(Base):
    __tablename__ = "webhook_events"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    delivery_key: Mapped[str] = mapped_column(String(520), unique=True)
    task_id: Mapped[str | None] = mapped_column(String(255), index=True)
    status: Mapped[str | None] = mapped_column(String(32))
    kind: Mapped[str | None] = mapped_column(String(64))
    topic: Mapped[str | None] = mapped_column(String(64))
    raw_body: Mapped[bytes] = mapped_column(LargeBinary)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    signature_valid: Mapped[bool] = mapped_column(Boolean, default=True)
    parse_error: Mapped[str | None] = mapped_column(Text)

    runs: Mapped[list[ListenerRun]] = relationship(back_populates="event")

    # The console's filters, newest first: by status, and by time (pipeline/console/).
    __table_args__ = (
        Index("ix_webhook_events_status_id", "status", "id"),
        Index("ix_webhook_events_received_at", "received_at"),
    )


class RunState(StrEnum):
    """Where a listener run is; pipeline/runs.py holds every move between these."""

    PENDING = "pending"  # stored, published (or about to be); waiting for a worker
    RUNNING = "running"  # claimed by a worker, under a lease
    RETRYING = "retrying"  # an attempt failed; due again after the listener's backoff
    SUCCEEDED = "succeeded"
    FAILED = "failed"  # the dead-letter list: `pipeline replay` puts it back
    SKIPPED = "skipped"  # nothing to do, with the reason as its result

    @property
    def finished(self) -> bool:
        return self in FINISHED


FINISHED = frozenset({RunState.SUCCEEDED, RunState.FAILED, RunState.SKIPPED})


class RunStateType(TypeDecorator[RunState]):
    """A run's state: text in the database (held by a CHECK), a RunState in Python."""

    impl = String(16)
    cache_ok = True

    def process_bind_param(self, value: RunState | None, dialect: Dialect) -> str | None:
        return None if value is None else RunState(value).value

    def process_result_value(self, value: str | None, dialect: Dialect) -> RunState | None:
        return None if value is None else RunState(value)


class ListenerRun(Base):
    __tablename__ = "listener_runs"
    __table_args__ = (
        UniqueConstraint("event_id", "listener"),
        Index("ix_listener_runs_state_due_at", "state", "due_at"),
        # Counts by state and listener without reading the finished bulk; dead letters
        # newest first; runs finished in the last hour (pipeline/console/queries/overview.py).
        Index("ix_listener_runs_state_listener_finished_at", "state", "listener", "finished_at"),
        CheckConstraint(
            "state IN (" + ", ".join(f"'{state}'" for state in RunState) + ")", name="state"
        ),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    event_id: Mapped[int] = mapped_column(ForeignKey("webhook_events.id"))
    listener: Mapped[str] = mapped_column(String(100))
    state: Mapped[RunState] = mapped_column(RunStateType, default=RunState.PENDING)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # When the relay should (re-)publish it if nothing has happened by then.
    due_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    event: Mapped[WebhookEvent] = relationship(back_populates="runs")


class MetricTotal(Base):
    """A counter's total, added up over every process (pipeline/metrics/tally.py): one row
    per series, `labels` its labels as sorted JSON pairs."""

    __tablename__ = "metric_totals"

    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    labels: Mapped[str] = mapped_column(String(400), primary_key=True)
    value: Mapped[float] = mapped_column(Float, default=0.0)


class WebhookMinute(Base):
    """Webhooks answered in one minute, by outcome: the console's chart (kept a day)."""

    __tablename__ = "webhook_minutes"

    minute: Mapped[datetime] = mapped_column(UTCDateTime, primary_key=True)
    outcome: Mapped[str] = mapped_column(String(32), primary_key=True)
    count: Mapped[int] = mapped_column(BigInteger, default=0)


# Every ORM change of a Media, wherever it is made, is versioned at its commit.
from pipeline.live import versions as _versions  # noqa: E402,F401
