"""What the benchmarks send and what they need stored first: signed shape B bodies (each a
different delivery), media rows for their task ids, and a million old events."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import Engine, insert, text

from pipeline.dev.samples import sample
from pipeline.dev.sender import encode
from pipeline.models import Media, User
from pipeline.signing import sign

BODY_BYTES = 600  # about what Ittybit sends for a finished video (shape B)
USERS = 100  # media are spread over this many owners


@dataclass(frozen=True)
class Delivery:
    task_id: str
    signature: str
    body: bytes


def deliveries(prefix: str, count: int, secret: str, first_media_id: int = 1) -> list[Delivery]:
    """`count` signed "video succeeded" webhooks, task ids `<prefix>_<n>`, media ids from
    `first_media_id` on; each body padded to BODY_BYTES with a signed-URL query string."""
    now_ms = int(time.time() * 1000)
    made = []
    for n in range(count):
        task_id = f"{prefix}_{n:07d}"
        payload = sample(
            "video.succeeded", "B", task_id=task_id, now_ms=now_ms, media_id=first_media_id + n
        )
        base = len(encode(payload))
        query = "?X-Amz-Expires=3600&X-Amz-Signature="
        payload["input"] += query + "f" * max(0, BODY_BYTES - base - len(query))
        body = encode(payload)
        made.append(Delivery(task_id, sign(body, secret), body))
    return made


def write_wrk_file(path: Path, batch: list[Delivery]) -> Path:
    """One `<signature> <body>` line per delivery, for bench/wrk_bodies.lua."""
    with path.open("wb") as out:
        for delivery in batch:
            out.write(delivery.signature.encode() + b" " + delivery.body + b"\n")
    return path


def seed_media(engine: Engine, batch: list[Delivery], first_media_id: int = 1) -> None:
    """Users and one media row per delivery (its task id, media id as in the body), so the
    listeners find real rows to update, thumbnail and notify about."""
    with engine.begin() as conn:
        existing = conn.execute(text("SELECT count(*) FROM users")).scalar_one()
        if not existing:
            conn.execute(
                insert(User),
                [{"id": u, "email": f"user{u}@bench.example"} for u in range(1, USERS + 1)],
            )
        conn.execute(
            insert(Media),
            [
                {
                    "id": first_media_id + n,
                    "user_id": 1 + (first_media_id + n) % USERS,
                    "task_id": d.task_id,
                    "kind": "video",
                    "input_url": "https://clippable-app.com/projects/edit-38271.mov",
                    "status": "processing",
                }
                for n, d in enumerate(batch)
            ],
        )


_FILL_SQLITE = """
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < :count)
INSERT INTO webhook_events
    (delivery_key, task_id, status, kind, raw_body, received_at, signature_valid)
SELECT 'task_' || lower(hex(randomblob(8))) || :suffix, 'task_fill_' || i, 'succeeded',
       'video', zeroblob(:size), :received_at, 1
FROM n
"""
_FILL_POSTGRESQL = """
INSERT INTO webhook_events
    (delivery_key, task_id, status, kind, raw_body, received_at, signature_valid)
SELECT 'task_' || md5(random()::text) || :suffix, 'task_fill_' || g, 'succeeded',
       'video', convert_to(repeat('x', :size), 'UTF8'), :received_at, true
FROM generate_series(1, :count) AS g
"""
# Every listener of listeners/ ran and succeeded for each event past `after`, in event order
# (as the webhook stores them: an event's runs side by side).
_FILL_RUNS = """
WITH l(name) AS (VALUES {listeners})
INSERT INTO listener_runs
    (event_id, listener, state, attempts, due_at, created_at, updated_at, finished_at)
SELECT e.id, l.name, 'succeeded', 1, e.received_at, e.received_at, e.received_at,
       e.received_at
FROM webhook_events AS e CROSS JOIN l
WHERE e.id > :after
ORDER BY e.id, l.name
"""


def fill_events(engine: Engine, count: int, received_at: datetime | None = None) -> float:
    """Store `count` old events (random delivery keys, BODY_BYTES bodies, received at
    `received_at`, a day ago unless given) in one statement; returns the seconds it took."""
    started = time.monotonic()
    when = received_at or datetime.now(UTC) - timedelta(days=1)
    sqlite = engine.dialect.name != "postgresql"
    sql = _FILL_SQLITE if sqlite else _FILL_POSTGRESQL
    # SQLite keeps UTC as naive text, as pipeline.models.UTCDateTime writes it.
    stamp = when.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f") if sqlite else when
    with engine.begin() as conn:
        conn.execute(
            text(sql),
            {"count": count, "size": BODY_BYTES, "suffix": ":succeeded", "received_at": stamp},
        )
    with engine.begin() as conn:
        conn.execute(text("ANALYZE webhook_events"))
    return time.monotonic() - started


def fill_runs(engine: Engine, listeners: Sequence[str], after: int = 0) -> float:
    """A succeeded run of each of `listeners` for every event with an id above `after`, in
    one statement, received_at for all its times; returns the seconds it took."""
    started = time.monotonic()
    names = ", ".join(f"('{name}')" for name in listeners)
    with engine.begin() as conn:
        conn.execute(text(_FILL_RUNS.format(listeners=names)), {"after": after})
    with engine.begin() as conn:
        conn.execute(text("ANALYZE listener_runs"))
    return time.monotonic() - started
