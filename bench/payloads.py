"""What the benchmarks send and what they need stored first: signed shape B bodies (each a
different delivery), media rows for their task ids, a million old events, and a week of
traffic with its runs, media and chart as the console reads it."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, insert, text

from pipeline.dev.samples import sample
from pipeline.dev.sender import encode
from pipeline.models import Media, User, WebhookMinute
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
        seed_users(conn)
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


# --- a week of traffic, as the console reads it ---------------------------------------------


@dataclass(frozen=True)
class Ledger:
    """A week of webhooks as `fill_ledger` stores them: event n (ids 1..count, in time
    order) received at `start_us + n * step_us` (µs since the epoch), task `task_<n>`,
    delivery key `task_<n>:<status>` (shape B's), its job failed for every FAILED_EVERY-th;
    one media per PER_MEDIA events (media m: job `task_<m * PER_MEDIA>`, thumbnail job the
    next task); a run of each listener per event, the newest INFLIGHT events' still pending
    or retrying, else one in FAILED_RUN_IN failed (LEDGER_ERRORS), the rest succeeded."""

    count: int
    start_us: int
    step_us: int

    @classmethod
    def week(cls, count: int, now: datetime, days: float = 7.0) -> Ledger:
        """`count` events over the `days` up to `now`, the newest at `now`."""
        span_us = int(days * 86_400 * 1_000_000)
        end_us = int(now.timestamp() * 1_000_000)
        step_us = max(1, span_us // max(count, 1))
        return cls(count, end_us - count * step_us, step_us)

    @property
    def media(self) -> int:
        return self.count // PER_MEDIA

    def last_before(self, moment: datetime) -> int:
        """The id of the newest event received before `moment` (0: none)."""
        micros = int(moment.timestamp() * 1_000_000) - self.start_us
        return max(0, min(self.count, (micros - 1) // self.step_us))


FAILED_EVERY = 50  # events whose Ittybit job failed (2%)
PER_MEDIA = 10
INFLIGHT = 100  # newest events whose runs are still pending or retrying
FAILED_RUN_IN = 100  # runs failed for good (dead letters): 1%
LEDGER_ERRORS = (
    "ConnectionError: POST https://api.ittybit.com/tasks: connection refused (6 attempts)",
    "Timeout: https://api.ittybit.com did not answer within 10.0 s (6 attempts)",
    "SMTPRecipientsRefused: {'user@bench.example': (550, b'mailbox unavailable')}",
)


def _stamp(sqlite: bool, micros: str) -> str:
    """SQL for the UTC time `micros` µs after the epoch (an integer SQL expression), as
    pipeline.models.UTCDateTime stores it (naive text on SQLite)."""
    if sqlite:
        return (
            f"(strftime('%Y-%m-%d %H:%M:%S', ({micros}) / 1000000, 'unixepoch')"
            f" || printf('.%06d', ({micros}) % 1000000))"
        )
    return f"to_timestamp(({micros})::float8 / 1000000)"


def _series(sqlite: bool) -> str:
    """A CTE `n(i)`: 1 to :count."""
    if sqlite:
        return "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < :count)"
    return "WITH n(i) AS (SELECT generate_series(1, :count)::bigint)"  # i * :step: no int4


def _ledger_bodies() -> dict[str, str]:
    """The shape B bodies of a succeeded and a failed video job, `TASKID` and `"MEDIAID"`
    for the SQL to fill in, padded to about BODY_BYTES like `deliveries`'."""
    now_ms = int(time.time() * 1000)
    bodies = {}
    for status in ("succeeded", "failed"):
        payload = sample(
            f"video.{status}", "B", task_id="TASKID", now_ms=now_ms, media_id="MEDIAID"
        )
        query = "?X-Amz-Expires=3600&X-Amz-Signature="
        pad = max(0, BODY_BYTES - len(encode(payload)) - len(query))
        payload["input"] += query + "f" * pad
        bodies[f"{status}_body"] = encode(payload).decode()
    return bodies


_LEDGER_EVENTS = """
{series}
INSERT INTO webhook_events
    (id, delivery_key, task_id, status, kind, raw_body, received_at, signature_valid)
SELECT i, 'task_' || i || ':' || status, 'task_' || i, status, 'video',
       {blob}(replace(replace(CASE status WHEN 'failed' THEN :failed_body
                                          ELSE :succeeded_body END,
                              'TASKID', 'task_' || i),
                      '"MEDIAID"', CAST(i / :per_media AS TEXT)){utf8}),
       {received}, {true}
FROM (SELECT i, CASE WHEN i % :failed_every = 0 THEN 'failed' ELSE 'succeeded' END AS status
      FROM n) AS e
"""
_LEDGER_RUNS = """
WITH l(name, idx) AS (VALUES {listeners})
INSERT INTO listener_runs
    (event_id, listener, state, attempts, last_error, due_at, created_at, updated_at,
     finished_at)
SELECT id, name, state,
       CASE state WHEN 'pending' THEN 0 WHEN 'retrying' THEN 2 WHEN 'failed' THEN 6 ELSE 1 END,
       CASE WHEN state IN ('failed', 'retrying') THEN
           CASE id % 3 WHEN 0 THEN :error0 WHEN 1 THEN :error1 ELSE :error2 END END,
       CASE state WHEN 'retrying' THEN {due} ELSE {received} END,
       {received},
       CASE WHEN state IN ('succeeded', 'failed') THEN {finished} ELSE {received} END,
       CASE WHEN state IN ('succeeded', 'failed') THEN {finished} END
FROM (SELECT e.id, l.name, l.idx,
             CASE WHEN e.id > :inflight_after THEN
                      CASE WHEN (e.id + l.idx) % 4 = 0 THEN 'retrying' ELSE 'pending' END
                  WHEN (3 * e.id + l.idx) % :failed_run_in = 7 THEN 'failed'
                  ELSE 'succeeded' END AS state
      FROM webhook_events AS e CROSS JOIN l) AS r
ORDER BY id, name
"""
_LEDGER_MEDIA = """
{series}
INSERT INTO media
    (id, user_id, task_id, thumbnail_task_id, kind, input_url, status, output_url,
     thumbnail_url, outcome_at, outcome_terminal, created_at, updated_at)
SELECT i, 1 + i % :users, 'task_' || (i * :per_media), 'task_' || (i * :per_media + 1),
       'video', 'https://clippable-app.com/projects/edit-38271.mov',
       CASE WHEN (i * :per_media) % :failed_every = 0 THEN 'failed' ELSE 'completed' END,
       'https://cdn.ittybit.com/clippable/task_' || (i * :per_media) || '.mp4',
       'https://cdn.ittybit.com/clippable/task_' || (i * :per_media + 1) || '.jpg',
       {done}, {true}, {created}, {done}
FROM n
"""


def fill_ledger(engine: Engine, ledger: Ledger, listeners: Sequence[str]) -> dict[str, float]:
    """`ledger`'s events, their runs, its users and media, each kind in one statement;
    the seconds each took (an ANALYZE of its table included)."""
    sqlite = engine.dialect.name != "postgresql"
    times = {
        "received": _stamp(sqlite, ":start + i * :step"),
        "true": "1" if sqlite else "true",
        "series": _series(sqlite),
        "blob": "CAST" if sqlite else "convert_to",
        "utf8": " AS BLOB" if sqlite else ", 'UTF8'",
    }
    where = {"start": ledger.start_us, "step": ledger.step_us, "count": ledger.count}
    shared = {"per_media": PER_MEDIA, "failed_every": FAILED_EVERY}
    took: dict[str, float] = {}
    started = time.monotonic()
    events = _LEDGER_EVENTS.format(
        **{k: times[k] for k in ("series", "received", "true", "blob", "utf8")}
    )
    with engine.begin() as conn:
        conn.execute(text(events), {**where, **shared, **_ledger_bodies()})
    took["events"] = _analyzed(engine, "webhook_events", started)

    started = time.monotonic()
    received = ":start + id * :step"
    runs = _LEDGER_RUNS.format(
        listeners=", ".join(f"('{name}', {n})" for n, name in enumerate(listeners)),
        received=_stamp(sqlite, received),
        due=_stamp(sqlite, f"{received} + 60000000"),
        # done 0.2-2 s after receipt; failed for good after its retries, 5 minutes on
        finished=_stamp(
            sqlite,
            f"{received} + CASE state WHEN 'failed' THEN 300000000"
            " ELSE 1000 * (200 + (id * 37 + idx * 101) % 1800) END",
        ),
    )
    errors = {f"error{n}": error for n, error in enumerate(LEDGER_ERRORS)}
    params = {**where, **errors, "inflight_after": ledger.count - INFLIGHT}
    with engine.begin() as conn:
        conn.execute(text(runs), {**params, "failed_run_in": FAILED_RUN_IN})
    took["runs"] = _analyzed(engine, "listener_runs", started)

    started = time.monotonic()
    job = ":start + i * :per_media * :step"
    media = _LEDGER_MEDIA.format(
        series=times["series"],
        true=times["true"],
        created=_stamp(sqlite, f"{job} - 60000000"),
        done=_stamp(sqlite, f"{job} + 2000000"),
    )
    with engine.begin() as conn:
        seed_users(conn)
        conn.execute(text(media), {**where, **shared, "count": ledger.media, "users": USERS})
    took["media"] = _analyzed(engine, "media", started)
    if not sqlite:  # ids given explicitly: the sequences move past them
        with engine.begin() as conn:
            for table in ("webhook_events", "media"):
                conn.execute(
                    text(
                        f"SELECT setval(pg_get_serial_sequence('{table}', 'id'),"
                        f" (SELECT coalesce(max(id), 1) FROM {table}))"
                    )
                )
    return took


def _analyzed(engine: Engine, table: str, started: float) -> float:
    with engine.begin() as conn:
        conn.execute(text(f"ANALYZE {table}"))
    return time.monotonic() - started


def seed_users(conn: Connection) -> None:
    """USERS owners for the media, once."""
    if not conn.execute(text("SELECT count(*) FROM users")).scalar_one():
        conn.execute(
            insert(User),
            [{"id": u, "email": f"user{u}@bench.example"} for u in range(1, USERS + 1)],
        )


def fill_webhook_minutes(engine: Engine, now: datetime, per_minute: int) -> int:
    """The console's chart: the last hour's webhooks by outcome, about `per_minute`
    accepted a minute with a few duplicates and refused signatures; the rows written."""
    last = now.replace(second=0, microsecond=0)
    rows: list[dict[str, Any]] = []
    for ago in range(60):
        minute = last - timedelta(minutes=ago)
        counts = {"accepted": per_minute + ago % 7, "duplicate": 1 + ago % 3}
        if ago % 10 == 0:
            counts["rejected_signature"] = 1
        rows.extend({"minute": minute, "outcome": k, "count": n} for k, n in counts.items())
    with engine.begin() as conn:
        conn.execute(insert(WebhookMinute), rows)
    return len(rows)
