"""One Server-Sent Events stream: whose media it carries, and how far it has got.

Each event is `event: media`, `id:` the media's version (the cursor) and `data:` the
status API's JSON. A client that reconnects sends its last `id:` back as Last-Event-ID
and first receives, from the database, every media of its user changed since.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine, Row

from pipeline.live import changes

RETRY_MS = 2000  # how long a browser waits before reconnecting a dropped stream
HEARTBEAT = b": keep-alive\n\n"


def message(row: Row[Any], cursor: int | None = None) -> bytes:
    """The event for `row`, its id the row's version unless a later `cursor` is given."""
    data = json.dumps(changes.status_json(row), separators=(",", ":"))
    return f"id: {cursor or row.version}\nevent: media\ndata: {data}\n\n".encode()


@dataclass
class Stream:
    owner: int  # the user's id
    media_id: int | None  # ?media=: only this one
    cursor: int  # the newest version sent
    expires_at: float  # the token's expiry: the stream ends then

    def start(self, conn: Connection, resumed: bool) -> bytes:
        """What the stream opens with: the reconnect delay, then either every change after
        the client's cursor (`resumed`) or its starting cursor and, for one media, that
        media's state now."""
        opening = f"retry: {RETRY_MS}\n".encode()
        if resumed:
            return opening + b"\n" + self.catch_up(conn)
        if self.media_id is not None:
            row = changes.one(conn, self.owner, self.media_id)
            if row is not None:
                self.cursor = max(self.cursor, row.version)
                return opening + b"\n" + message(row, self.cursor)
        return opening + f"id: {self.cursor}\n\n".encode()

    def catch_up(self, conn: Connection) -> bytes:
        """Every change after the cursor, oldest first; the cursor moves past them."""
        out: list[bytes] = []
        while True:
            rows = changes.after(conn, self.owner, self.cursor, self.media_id)
            out.extend(message(row) for row in rows)
            if rows:
                self.cursor = rows[-1].version
            if len(rows) < changes.BATCH:
                return b"".join(out)

    def catch_up_on(self, engine: Engine) -> bytes:
        with engine.connect() as conn:
            return self.catch_up(conn)
