"""Keyset pages: PAGE_SIZE rows newest first, and whether rows lie beyond either end."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from sqlalchemy import Connection, Select

from pipeline.console.filters import Page

PAGE_SIZE = 50
T = TypeVar("T")


@dataclass
class Listing(Generic[T]):
    rows: list[T]
    newer: int | None  # `after` for the page of newer rows, None: this is the newest
    older: int | None  # `before` for the page of older rows, None: this is the oldest


def fetch_page(conn: Connection, query: Select[Any], key: Any, page: Page) -> list[Any]:
    """One page, newest first, of `query` ordered by `key` (a row id)."""
    if page.after is not None:
        rows = conn.execute(
            query.where(key > page.after).order_by(key.asc()).limit(PAGE_SIZE)
        ).all()
        return list(reversed(rows))
    if page.before is not None:
        query = query.where(key < page.before)
    return list(conn.execute(query.order_by(key.desc()).limit(PAGE_SIZE)).all())


def listing(conn: Connection, rows: list[T], ids: Select[Any], key: Any) -> Listing[T]:
    """The page's links: whether a row lies beyond each end (one indexed probe each)."""
    if not rows:
        return Listing(rows, None, None)
    top, bottom = rows[0].id, rows[-1].id  # type: ignore[attr-defined]
    newer = conn.execute(ids.where(key > top).limit(1)).first()
    older = conn.execute(ids.where(key < bottom).limit(1)).first()
    return Listing(rows, top if newer else None, bottom if older else None)
