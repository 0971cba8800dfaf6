"""The operator console's pages (pipeline/console/) over a big ledger: how long each takes
to come back over HTTP with `plan.console_events` events stored, on SQLite and on
PostgreSQL (when 127.0.0.1:5432 answers; else it says it skipped it).

Per backend, a fresh database gets a week of traffic (bench/payloads.py `fill_ledger`, one
SQL statement per table: a recursive CTE on SQLite, `generate_series` on PostgreSQL): the
events spread evenly over the last 7 days, ids in time order, task ids `task_<n>`, shape B
bodies of ~600 bytes, 2% of them failed jobs; a run of each of our three listeners per
event, 1% failed for good with an error text (the dead letters), the newest 100 events'
runs pending or retrying, the rest succeeded 0.2-2 s after receipt; one media per 10
events (its job and its thumbnail job among them) and the last hour's per-minute webhook
counts (the overview's chart). Then settled as prune.py settles its fill (ANALYZE, and
`VACUUM (ANALYZE)` and a checkpoint on PostgreSQL).

Our web (the Procfile's, `--web-workers`, no worker) serves it with CONSOLE_BASIC_AUTH set;
`requests` with HTTP Basic auth GETs each page of PAGES, one request at a time: first
every page once per web worker (each worker has its templates compiled and its connections
open), then per page WARMUP requests and REQUESTS timed ones (the client's wall time,
connect to last byte). Every answer must be 200, else the part fails with the status and
the start of the body. p50, p95 (nearest rank) and max per page; the target is p95 below
TARGET_MS, reported, never enforced.
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import requests
from sqlalchemy import Engine, text

from bench.context import BACKENDS, Context, postgresql_answers
from bench.payloads import FAILED_EVERY, PER_MEDIA, Ledger, fill_ledger, fill_webhook_minutes
from bench.procs import HANDLERS, peak_rss_mb, start_web
from bench.prune import LISTENERS, _log_problems

USER, PASSWORD = "bench", "bench-console-password"
WARMUP = 2  # requests per page before the timed ones
REQUESTS = 20  # timed requests per page
TARGET_MS = 300.0  # p95 below this
TIMEOUT = 60.0  # s per request: a slow page is measured, not cut off
ERROR_WORD = "Timeout"  # in one of LEDGER_ERRORS (in any case): the dead letters' filter


@dataclass(frozen=True)
class Page:
    """One console URL to time; `expect`: text its answer should hold (noted, not
    enforced: a page that finds nothing would be measured cheap)."""

    name: str
    path: str
    params: dict[str, str] = field(default_factory=dict)
    expect: str | None = None

    def url(self, base: str) -> str:
        prepared = requests.Request("GET", base + self.path, params=self.params).prepare()
        return str(prepared.url)


def console_part(ctx: Context) -> dict[str, Any]:
    events = ctx.plan.console_events
    result: dict[str, Any] = {
        "events": events,
        "runs": events * len(LISTENERS),
        "media": events // PER_MEDIA,
        "days": 7,
        "web_workers": ctx.setup.web_workers,
        "warmup": WARMUP,
        "requests": REQUESTS,
        "target_ms": TARGET_MS,
        "backends": {},
    }
    for backend in BACKENDS:
        if backend == "postgresql" and not postgresql_answers():
            result["backends"][backend] = {"skipped": "127.0.0.1:5432 does not answer"}
            continue
        try:
            result["backends"][backend] = _backend(ctx, backend, events)
        finally:
            ctx.close()  # its database, before the next one fills the disk
    return result


def _backend(ctx: Context, backend: str, events: int) -> dict[str, Any]:
    database = ctx.fresh_database(backend)
    now = datetime.now(UTC)
    ledger = Ledger.week(events, now)
    fill = fill_ledger(database.engine, ledger, LISTENERS)
    fill["minutes"] = _minutes_filled(database.engine, now, events)
    fill["settle"] = _settle(database.engine)
    found: dict[str, Any] = {
        "fill_s": {k: round(v, 1) for k, v in fill.items()},
        "rows": _rows(database.engine),
    }
    env = ctx.env(database, ctx.fresh_broker(), CONSOLE_BASIC_AUTH=f"{USER}:{PASSWORD}")
    name = f"console-web-{backend}"
    web, port = start_web(HANDLERS["ours"], env, ctx.logs, name, ctx.setup.web_workers)
    base = f"http://127.0.0.1:{port}"
    try:
        pages = _pages(database.engine, ledger, now)
        with requests.Session() as session:
            session.auth = (USER, PASSWORD)
            for _ in range(ctx.setup.web_workers):
                for page in pages:
                    _get(session, base, page)
            found["pages"] = {page.name: _time_page(session, base, page) for page in pages}
        found["peak_rss"] = peak_rss_mb(web)
        found["problems_in_logs"] = _log_problems(web)
    finally:
        web.stop()
    return found


def _minutes_filled(engine: Engine, now: datetime, events: int) -> float:
    started = time.monotonic()
    fill_webhook_minutes(engine, now, per_minute=max(1, events // (7 * 24 * 60)))
    return time.monotonic() - started


def _settle(engine: Engine) -> float:
    """As prune.py settles its fill: statistics fresh, the pages written out."""
    started = time.monotonic()
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(text("VACUUM (ANALYZE) webhook_events, listener_runs, media"))
            conn.execute(text("CHECKPOINT"))
        else:
            conn.execute(text("ANALYZE"))
            conn.execute(text("PRAGMA wal_checkpoint(TRUNCATE)"))
    return time.monotonic() - started


def _rows(engine: Engine) -> dict[str, int]:
    """What the fill stored, to check it against the plan."""
    queries = {
        "events": "SELECT count(*) FROM webhook_events",
        "runs": "SELECT count(*) FROM listener_runs",
        "dead_letters": "SELECT count(*) FROM listener_runs WHERE state = 'failed'",
        "unfinished_runs": "SELECT count(*) FROM listener_runs"
        " WHERE state IN ('pending', 'retrying')",
        "media": "SELECT count(*) FROM media",
    }
    with engine.connect() as conn:
        return {key: int(conn.execute(text(query)).scalar_one()) for key, query in queries.items()}


def _pages(engine: Engine, ledger: Ledger, now: datetime) -> list[Page]:
    """PAGES for this ledger: ids, task ids and times picked in its middle, each page
    expected to link the event it should list first (or show the text it should find)."""
    n = ledger.count
    middle, searched, keyed, shown = n // 2, n // 3, 2 * n // 3, n // 4
    media = max(1, ledger.media // 2)
    with engine.connect() as conn:
        key = conn.execute(
            text("SELECT delivery_key FROM webhook_events WHERE id = :id"), {"id": keyed}
        ).scalar_one()
    since, until = (_iso(now - timedelta(days=days)) for days in (3, 2))
    before_until = ledger.last_before(datetime.fromisoformat(until).replace(tzinfo=UTC))
    notify = {"listener": "notify_user"}
    return [
        Page("overview", "/console/"),
        Page("events (newest)", "/console/events", expect=_link(n)),
        Page(
            "events?before=<middle>",
            "/console/events",
            {"before": str(middle)},
            expect=_link(middle - 1),
        ),
        Page(
            "events?q=<task id>",
            "/console/events",
            {"q": f"task_{searched}"},
            expect=_link(searched),
        ),
        Page("events?q=<delivery key>", "/console/events", {"q": key}, expect=_link(keyed)),
        Page(
            "events?status=failed",
            "/console/events",
            {"status": "failed"},
            expect=_link(n - n % FAILED_EVERY),
        ),
        Page(
            "events?since=-3d&until=-2d",
            "/console/events",
            {"since": since, "until": until},
            expect=_link(before_until),
        ),
        Page("events/<id>", f"/console/events/{shown}", expect=f"task_{shown}"),
        Page("dead-letters", "/console/dead-letters", expect="SMTPRecipientsRefused"),
        Page(
            f"dead-letters?listener=notify_user&error={ERROR_WORD}",
            "/console/dead-letters",
            {**notify, "error": ERROR_WORD},
            expect=ERROR_WORD,
        ),
        Page("dead-letters/replay?listener=notify_user", "/console/dead-letters/replay", notify),
        Page("media/<id>", f"/console/media/{media}", expect=_link(media * PER_MEDIA)),
    ]


def _link(event_id: int) -> str:
    """How a listing links an event (its detail page)."""
    return f'href="/console/events/{event_id}"'


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S")  # UTC: the console reads it so


def _get(session: requests.Session, base: str, page: Page) -> tuple[float, requests.Response]:
    """One GET of `page`: the ms it took, and its answer (a 200, else the part fails)."""
    started = time.perf_counter()
    response = session.get(base + page.path, params=page.params, timeout=TIMEOUT)
    ms = (time.perf_counter() - started) * 1000
    if response.status_code != 200:
        raise RuntimeError(
            f"console page {page.name}: GET {response.url} answered {response.status_code}: "
            f"{response.text[:300]!r}"
        )
    return ms, response


def _time_page(session: requests.Session, base: str, page: Page) -> dict[str, Any]:
    for _ in range(WARMUP):
        _get(session, base, page)
    times: list[float] = []
    seen, size = True, 0
    for _ in range(REQUESTS):
        ms, response = _get(session, base, page)
        times.append(ms)
        seen = seen and (page.expect is None or page.expect in response.text)
        size = len(response.content)
    times.sort()
    p95 = times[min(len(times) - 1, math.ceil(len(times) * 0.95) - 1)]
    return {
        "url": page.url(base).removeprefix(base),
        "p50_ms": round(statistics.median(times), 1),
        "p95_ms": round(p95, 1),
        "max_ms": round(times[-1], 1),
        "met": p95 < TARGET_MS,
        "bytes": size,
        "expected_seen": seen if page.expect is not None else None,
    }
