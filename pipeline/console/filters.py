"""The console's query strings, read into filters or refused with a 400 naming the field:
whatever a search box, a hand-edited URL or a scanner sends, the queries get only values
of the right type and size (and SQLAlchemy binds them; nothing is spliced into SQL)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import urlencode

from pipeline.errors import RequestRejected
from pipeline.events import FAILED, SUCCEEDED

MAX_ID = 2**63 - 1
MAX_TEXT = 200  # an error-text filter
MAX_QUERY = 520  # the longest delivery key we store
EVENT_STATUSES = (SUCCEEDED, FAILED, "cancelled", "queued", "processing", "other")


class BadFilter(RequestRejected):
    status = 400
    code = "bad_filter"


def text(args: Mapping[str, str], name: str, limit: int) -> str:
    value = args.get(name, "").strip()
    if len(value) > limit:
        raise BadFilter(f"{name} is longer than {limit} characters")
    if "\x00" in value:
        raise BadFilter(f"{name} holds a NUL character")
    return value


def row_id(args: Mapping[str, str], name: str) -> int | None:
    """A row id (a page's bound), or None when absent."""
    raw = args.get(name, "").strip()
    if not raw:
        return None
    if not raw.isdigit() or len(raw) > 19 or int(raw) > MAX_ID:
        raise BadFilter(f"{name} must be a row id (a whole number), got {raw[:40]!r}")
    return int(raw)


def moment(args: Mapping[str, str], name: str) -> datetime | None:
    """An ISO 8601 time (UTC unless it says otherwise), or None when absent."""
    raw = args.get(name, "").strip()
    if not raw:
        return None
    try:
        if len(raw) > 40:
            raise ValueError
        value = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise BadFilter(
            f"{name} must be a time like 2026-12-01T14:30 (ISO 8601), got {raw[:40]!r}"
        ) from None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def one_of(args: Mapping[str, str], name: str, allowed: Sequence[str]) -> str:
    value = args.get(name, "").strip()
    if value and value not in allowed:
        raise BadFilter(f"{name} must be one of {', '.join(allowed)}, got {value[:40]!r}")
    return value


@dataclass(frozen=True)
class Page:
    """Keyset pagination, newest first: rows below `before`, or above `after`."""

    before: int | None = None
    after: int | None = None

    @classmethod
    def read(cls, args: Mapping[str, str]) -> Page:
        return cls(row_id(args, "before"), row_id(args, "after"))


@dataclass(frozen=True)
class EventFilter:
    query: str = ""  # an Ittybit task id, a delivery (evt_) id, a media id or an event id
    status: str = ""
    since: datetime | None = None
    until: datetime | None = None

    @classmethod
    def read(cls, args: Mapping[str, str]) -> EventFilter:
        return cls(
            text(args, "q", MAX_QUERY),
            one_of(args, "status", EVENT_STATUSES),
            moment(args, "since"),
            moment(args, "until"),
        )

    def params(self) -> dict[str, str]:
        return _params(q=self.query, status=self.status, since=self.since, until=self.until)


@dataclass(frozen=True)
class DeadLetterFilter:
    listener: str = ""
    error: str = ""
    since: datetime | None = None
    until: datetime | None = None

    @classmethod
    def read(cls, args: Mapping[str, str], listeners: Sequence[str]) -> DeadLetterFilter:
        return cls(
            one_of(args, "listener", listeners),
            text(args, "error", MAX_TEXT),
            moment(args, "since"),
            moment(args, "until"),
        )

    def params(self) -> dict[str, str]:
        return _params(listener=self.listener, error=self.error, since=self.since, until=self.until)


def _params(**values: str | datetime | None) -> dict[str, str]:
    shown = {}
    for name, value in values.items():
        if isinstance(value, datetime):
            shown[name] = value.strftime("%Y-%m-%dT%H:%M:%S")
        elif value:
            shown[name] = value
    return shown


def query_string(params: Mapping[str, str | int | None]) -> str:
    kept = {k: v for k, v in params.items() if v not in (None, "")}
    return "?" + urlencode(kept) if kept else ""
