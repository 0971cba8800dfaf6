"""Live updates (pipeline/live/): how soon a webhook's change is on the user's screen, and
what holding many idle streams costs the web and its webhook endpoint.

- *Screen*: our web (the Procfile's), worker and the emulator; Chromium opens one media
  page at a time (`/media/<id>?token=`, static/live.js on its Server-Sent Events stream)
  and notes the wall clock of each `ittybit:media` event (dispatched on `document` right
  after live.js wrote the DOM); the latency is that minus the wall clock just before the
  bench sent the media's webhook (one machine, one clock). Idle (one webhook at a time),
  then while other media get BACKGROUND_RATE webhooks a second of each kind of LOADS. Each
  sample is split: POST -> the web stored the event (`received_at`) -> the UpdateMediaRecord
  run finished (`finished_at`, taken before its commit) -> a plain SSE client beside the
  page got the update -> the page applied it.
- *Streams*: two webs like ours with no worker (as in ingest), up at once; one holds
  `plan.live_streams` idle streams of as many users, each with its own token (`?token=`),
  opened by an asyncio client that checks each answered 200 and began with `retry:`; the
  webs' resident memory, and their webhook endpoints' ingest (as ingest.py measures it),
  alternately, the best round of each kept; then whether every stream was still open.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import os
import re
import resource
import secrets
import socket
import statistics
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, func, insert, select

from bench import ingest, load
from bench.context import Context, Database
from bench.payloads import USERS, Delivery, deliveries, seed_media
from bench.procs import (
    CLOCK_TICKS,
    HANDLERS,
    Proc,
    cpu_ms_per,
    cpu_snapshot,
    cpu_used,
    peak_rss_mb,
    start_emulator,
    start_web,
    start_worker,
)
from pipeline.dev.procs import CHROMIUM, CHROMIUM_ARGS, descendants
from pipeline.dev.samples import webhook_payload
from pipeline.dev.sender import encode
from pipeline.live.tokens import mint
from pipeline.models import ListenerRun, User, WebhookEvent
from pipeline.signing import SIGNATURE_HEADER, sign

BACKGROUND_RATE = 50.0  # webhooks/s for other media while sampling under load
BACKGROUND_WARMUP = 2.0  # seconds of background load before the first sample under it
IDLE_INTERVAL = 0.1  # at least this long between two samples' webhooks (as e2e's idle)
UPDATE_TIMEOUT = 10.0  # seconds a page may wait for its media's update
WARMUP_SAMPLES = 5  # taken before the idle ones (not counted in them): one per process
TOKEN_TTL = 3600
OPEN_AT_ONCE = 50  # streams being opened at the same time
STREAM_OPEN_TIMEOUT = 20.0
UPDATE_LISTENER = "update_media_record"
# Before any of the page's scripts: note every applied update, on the page's clock.
RECORD_UPDATES = """
window.__liveUpdates = [];
document.addEventListener("ittybit:media", function (event) {
  var at = performance.timeOrigin + performance.now();
  window.__liveUpdates.push({
    at: at, skew: at - Date.now(), id: event.detail.id,
    status: event.detail.status, version: event.detail.version
  });
  console.debug("ittybit:media " + event.detail.id + " " + event.detail.status);
});
"""
STREAM_IS_OPEN = (
    "() => document.querySelector('[data-field=\"connection\"]').textContent === 'live'"
)


def live(ctx: Context) -> dict[str, Any]:
    """Both measurements, the streams first (no worker, a quiet machine), then the screen."""
    raised = _raise_open_files(ctx.plan.live_streams + 200)
    secret = secrets.token_hex(16)
    result: dict[str, Any] = {
        "open_files_limit": raised,
        "background_rate": BACKGROUND_RATE,
        "loads": {kind: what for kind, (what, _) in LOADS.items()},
        "database": ctx.setup.database,
        "web_workers": ctx.setup.web_workers,
    }
    for part, measure in (("streams", streams_and_ingest), ("screen", webhook_to_screen)):
        started = time.monotonic()
        result[part] = measure(ctx, secret)
        result[part]["part_seconds"] = round(time.monotonic() - started, 1)
    return result


def _raise_open_files(needed: int) -> int:
    """The bench holds a socket per stream: its soft open-file limit up to the hard one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if hard != resource.RLIM_INFINITY and hard < needed:
        raise RuntimeError(
            f"the open-file limit is {hard}: {needed} are needed to hold the streams "
            "(raise it with `ulimit -Hn`, as root, or in /etc/security/limits.conf)"
        )
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


# --- webhook -> screen -----------------------------------------------------------------


def webhook_to_screen(ctx: Context, secret: str) -> dict[str, Any]:
    """Chromium on one media page at a time: idle, then under BACKGROUND_RATE webhooks/s of
    each kind of LOADS."""
    # Warm-up samples first, reported apart: a worker child's first runs and a web worker's
    # first stream pay for connections and caches once.
    counts = {"warmup": WARMUP_SAMPLES, "idle": ctx.plan.live_samples}
    counts.update({kind: max(5, ctx.plan.live_samples // 2) for kind in LOADS})
    database = ctx.fresh_database()
    batches: dict[str, tuple[list[Delivery], int]] = {}  # phase -> its webhooks, first media
    first = 1
    for phase, count in counts.items():
        batches[phase] = (deliveries(f"task_live_{phase}", count, ctx.secret, first), first)
        first += count
    samples = [d for batch, _ in batches.values() for d in batch]
    owners = {d.task_id: 1 + (1 + n) % USERS for n, d in enumerate(samples)}
    background: dict[str, tuple[list[Delivery], int]] = {}
    for kind, (_, make) in LOADS.items():
        size = int(BACKGROUND_RATE * (BACKGROUND_WARMUP + _deadline(kind, counts[kind]) + 5))
        background[kind] = (make(f"task_live_bg_{kind}", size, ctx.secret, first), first)
        first += size
    for batch, first_id in (*batches.values(), *background.values()):
        seed_media(database.engine, batch, first_id)
    env = ctx.env(database, ctx.fresh_broker(), LIVE_TOKEN_SECRET=secret)
    procs: dict[str, Proc] = {}
    try:
        procs["emulator"], emulator_port = start_emulator(env, ctx.logs, "live-emulator")
        env["ITTYBIT_API_URL"] = f"http://127.0.0.1:{emulator_port}"
        procs["web"], port = start_web(
            HANDLERS["ours"], env, ctx.logs, "live-web-screen", ctx.setup.web_workers
        )
        env["PUBLIC_URL"] = base = f"http://127.0.0.1:{port}"
        pool, concurrency = ctx.setup.worker("ours")
        procs["worker"] = start_worker("ours", env, ctx.logs, "live-worker", pool, concurrency)
        tokens = {u: mint(_email(u), (secret,), TOKEN_TTL) for u in set(owners.values())}
        with _browser() as (page, version):
            result: dict[str, Any] = {"browser": version, "clock_offset_ms": _clock_offset(page)}
            sampler = Sampler(page, base, database.engine, owners, tokens)
            counted = functools.partial(_cpu_counted, ctx, database, procs)
            warmup, first_id = batches["warmup"]
            result["warmup"] = sampler.run(warmup, first_id, _deadline("idle", len(warmup)))
            idle, first_id = batches["idle"]
            result["idle"] = counted(
                lambda: sampler.run(idle, first_id, _deadline("idle", counts["idle"]))
            )
            for n, kind in enumerate(LOADS):
                batch, first_id = batches[kind]
                result[kind] = counted(
                    functools.partial(
                        _under_load,
                        sampler,
                        database.engine,
                        f"{base}/webhooks/ittybit",
                        batch,
                        first_id,
                        background[kind][0],
                        _deadline(kind, counts[kind]),
                        drain=n < len(LOADS) - 1,  # before the next phase, not after the last
                    )
                )
        result["peak_rss"] = {name: peak_rss_mb(proc) for name, proc in procs.items()}
        result["worker"] = {"pool": pool, "concurrency": concurrency}
        result["problems_in_logs"] = {name: _log_problems(proc) for name, proc in procs.items()}
    finally:
        for proc in reversed(procs.values()):
            proc.stop()
    return result


def _deadline(phase: str, samples: int) -> float:
    """Seconds a phase may take before its remaining samples are left out. A pipeline that
    cannot keep up with its load (`finished`, here) would otherwise run for minutes."""
    if phase == "finished":
        return max(4.0, min(12.0, samples / 4))
    return 5.0 + samples * 0.6


def _under_load(
    sampler: Sampler,
    engine: Engine,
    url: str,
    batch: list[Delivery],
    first_media_id: int,
    background: list[Delivery],
    deadline: float,
    drain: bool,
) -> dict[str, Any]:
    """Samples taken while other media get BACKGROUND_RATE webhooks/s; how far the worker
    had got with those when the samples ended; when `drain`, until it caught up (bounded)."""
    with Background(url, background, BACKGROUND_RATE) as sender:
        time.sleep(BACKGROUND_WARMUP)
        result = sampler.run(batch, first_media_id, deadline)
        sent = sender.sent_ids()
    summary = {**sender.summary(), **_applied(engine, sent)}
    caught_up = time.monotonic()
    while drain and _applied(engine, sent)["applied"] < len(sent):
        if time.monotonic() - caught_up > 10:
            break
        time.sleep(0.25)
    if drain:
        summary["caught_up_in_s"] = round(time.monotonic() - caught_up, 1)
        summary["applied_after_wait"] = _applied(engine, sent)["applied"]
    result["background"] = summary
    return result


def status_updates(prefix: str, count: int, secret: str, first_media_id: int) -> list[Delivery]:
    """`count` signed "video processing" webhooks (shape B): each moves its media's row
    (UpdateMediaRecord, the only listener that wants one), so each is a live change."""
    now_ms = int(time.time() * 1000)
    made = []
    for n in range(count):
        task_id = f"{prefix}_{n:07d}"
        task = {
            "id": task_id,
            "kind": "video",
            "status": "processing",
            "input": "https://clippable-app.com/projects/edit-38271.mov",
            "metadata": {"media_id": first_media_id + n},
            "created_at": now_ms - 1_000,
            "completed_at": None,
        }
        body = encode(webhook_payload(task, "B"))
        made.append(Delivery(task_id, sign(body, secret), body))
    return made


# The background loads, by the name their phase is reported under: what each is, and its
# webhooks. Their samples are the usual finished-video webhooks, like the idle ones.
LOADS = {
    "updates": (
        "'processing' status webhooks: one UpdateMediaRecord run each",
        status_updates,
    ),
    "finished": (
        "finished-video webhooks: all three listeners and a thumbnail job each",
        deliveries,
    ),
}


def _cpu_counted(
    ctx: Context, database: Database, procs: dict[str, Proc], phase: Callable[[], dict[str, Any]]
) -> dict[str, Any]:
    """Run a phase, adding the CPU seconds each process group used, the browser's (and
    Playwright's driver) and the bench's own, and how busy the whole machine was."""

    def groups() -> dict[str, list[int]]:
        found = ctx.cpu_groups(database, procs)
        ours = {pid for pids in found.values() for pid in pids}
        found["browser"] = [p for p in descendants(os.getpid()) if p not in ours]
        found["bench"] = [os.getpid()]
        return found

    before, machine, started = cpu_snapshot(groups()), _machine_busy(), time.monotonic()
    result = phase()
    used = cpu_used(before, cpu_snapshot(groups()))
    seconds = time.monotonic() - started
    busy = _machine_busy() - machine
    result["seconds"] = round(seconds, 1)
    result["cpu_s"] = {name: round(value, 2) for name, value in used.items()}
    result["cpu_s"]["machine"] = round(busy, 2)
    result["cpu_s"]["elsewhere"] = round(max(0.0, busy - sum(used.values())), 2)
    return result


def _machine_busy() -> float:
    """CPU seconds the whole machine has spent not idle (every core), from /proc/stat."""
    fields = [int(f) for f in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle, iowait
    return (sum(fields[:8]) - idle) / CLOCK_TICKS


def _email(user: int) -> str:
    return f"user{user}@bench.example"  # as seed_media names them


@contextmanager
def _browser() -> Iterator[tuple[Any, str]]:
    from playwright.sync_api import sync_playwright  # only this part needs it

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.add_init_script(RECORD_UPDATES)
            yield page, f"Chromium {browser.version}"
        finally:
            browser.close()


def _clock_offset(page: Any) -> dict[str, float]:
    """The page's wall clock minus ours, read in the middle of a round trip (best of 20)."""
    page.set_content("<p>clock</p>")
    best: tuple[float, float] | None = None
    for _ in range(20):
        before = time.time()
        theirs = page.evaluate("performance.timeOrigin + performance.now()")
        after = time.time()
        guess = (theirs - (before + after) * 500, (after - before) * 500)
        if best is None or guess[1] < best[1]:
            best = guess
    assert best is not None
    return {"offset": round(best[0], 2), "plus_minus": round(best[1], 2)}


@dataclass
class Sampler:
    """One media page after another: open it, wait for its stream, send its webhook, note
    when the page applied the update."""

    page: Any
    base: str
    engine: Engine
    owners: dict[str, int]  # task id -> user id
    tokens: dict[int, str]  # user id -> token

    def run(self, batch: list[Delivery], first_media_id: int, deadline: float) -> dict[str, Any]:
        from playwright.sync_api import TimeoutError as PageTimeout

        sent: dict[str, float] = {}
        shown: dict[str, float] = {}
        streamed: dict[str, float] = {}  # when the probe beside the page got the update
        missed: list[str] = []
        statuses: Counter[int] = Counter()
        skews: list[float] = []
        until = time.monotonic() + deadline
        last_sent = 0.0
        for n, delivery in enumerate(batch):
            if time.monotonic() > until:
                break
            media_id = first_media_id + n
            token = self.tokens[self.owners[delivery.task_id]]
            self.page.goto(f"{self.base}/media/{media_id}?token={token}")
            self.page.wait_for_function(STREAM_IS_OPEN, polling=10, timeout=10_000)
            probe = Probe(self.base, media_id, token)
            time.sleep(max(0.0, last_sent + IDLE_INTERVAL - time.time()))
            # The page says so on its console: nothing polls it meanwhile.
            updated = f"ittybit:media {media_id} completed"
            try:
                with self.page.expect_console_message(
                    lambda m, updated=updated: m.text == updated, timeout=UPDATE_TIMEOUT * 1000
                ):
                    last_sent, status = _post(self.base, delivery)
                    sent[delivery.task_id] = last_sent
                    statuses[status] += 1
            except PageTimeout:  # counted, not raised
                missed.append(delivery.task_id)
                probe.close()
                continue
            if (at := probe.arrived(timeout=1.0)) is not None:
                streamed[delivery.task_id] = at
            updates = self.page.evaluate("window.__liveUpdates")
            first = next(u for u in updates if u["id"] == media_id and u["status"] == "completed")
            shown[delivery.task_id] = first["at"] / 1000
            skews.append(first["skew"])
        latencies = [shown[t] - sent[t] for t in shown]
        result = {
            "asked": len(batch),
            "sent": len(sent),
            "updated": len(shown),
            "missed": missed[:20],
            "post_status": {str(k): v for k, v in statuses.items()},
            "post_to_dom_ms": _percentiles(latencies),
            "max_ms": round(max(latencies, default=0.0) * 1000, 1),
            "timestamp_skew_ms": round(max((abs(s) for s in skews), default=0.0), 2),
        }
        result["split_ms"] = _split(self.engine, sent, shown, streamed)
        return result


class Probe:
    """A plain SSE client on the sample's media beside the page (the same token and
    ?media=): when the update's bytes reached a client that does nothing else, which
    splits the web's part of the delay from the browser's."""

    MARK = b'"status":"completed"'

    def __init__(self, base: str, media_id: int, token: str) -> None:
        host, port, _ = load._split(f"{base}/")
        self.sock = socket.create_connection((host, port), timeout=UPDATE_TIMEOUT)
        request = (
            f"GET /api/stream?media={media_id}&token={token} HTTP/1.1\r\n"
            f"Host: {host}:{port}\r\nAccept: text/event-stream\r\n\r\n"
        )
        self.sock.sendall(request.encode())
        self.buffer = b""
        while b"retry:" not in self.buffer:  # the stream is open (and its opening read)
            chunk = self.sock.recv(65536)
            if not chunk:
                break
            self.buffer += chunk
        self.at: float | None = None
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        with contextlib.suppress(OSError):
            while self.MARK not in self.buffer:
                chunk = self.sock.recv(65536)
                if not chunk:
                    return
                self.buffer += chunk
            self.at = time.time()

    def arrived(self, timeout: float) -> float | None:
        self.thread.join(timeout)
        self.close()
        return self.at

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()


def _post(base: str, delivery: Delivery) -> tuple[float, int]:
    """The delivery POSTed on a new connection; the wall clock just before it was sent."""
    host, port, path = load._split(f"{base}/webhooks/ittybit")
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n"
        f"Content-Type: application/json\r\n{SIGNATURE_HEADER}: {delivery.signature}\r\n"
        f"Content-Length: {len(delivery.body)}\r\n\r\n"
    ).encode()
    sent = time.time()
    with socket.create_connection((host, port), timeout=10) as sock:
        sock.sendall(head + delivery.body)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    status = int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/") else 0
    return sent, status


def _split(
    engine: Engine, sent: dict[str, float], shown: dict[str, float], streamed: dict[str, float]
) -> dict[str, Any]:
    """Where each updated sample's time went, from the database's timestamps and the probe:
    the POST until the web stored it, until UpdateMediaRecord finished (taken before its
    commit), until a plain SSE client beside the page got it (the commit, PostgreSQL's
    NOTIFY or SQLite's poll, the hub's read and write), until the page applied it (the
    browser's EventSource, JSON and live.js)."""
    if not shown:
        return {}
    query = (
        select(WebhookEvent.task_id, WebhookEvent.received_at, ListenerRun.finished_at)
        .join(ListenerRun, ListenerRun.event_id == WebhookEvent.id)
        .where(WebhookEvent.task_id.in_(list(shown)), ListenerRun.listener == UPDATE_LISTENER)
    )
    with engine.connect() as conn:
        rows = conn.execute(query).all()
    parts: dict[str, list[float]] = {
        "post_to_stored": [],
        "stored_to_listener_done": [],
        "listener_done_to_dom": [],
        "listener_done_to_sse": [],
        "sse_to_dom": [],
    }
    samples: list[dict[str, Any]] = []  # in the order sent: ms after each one's POST
    order = {task: n for n, task in enumerate(sent)}
    for task, received, finished in sorted(rows, key=lambda row: order[row[0]]):
        if received is None or finished is None:
            continue
        parts["post_to_stored"].append(received.timestamp() - sent[task])
        parts["stored_to_listener_done"].append(finished.timestamp() - received.timestamp())
        parts["listener_done_to_dom"].append(shown[task] - finished.timestamp())
        if task in streamed:
            parts["listener_done_to_sse"].append(streamed[task] - finished.timestamp())
            parts["sse_to_dom"].append(shown[task] - streamed[task])
        at = {"stored": received.timestamp(), "listener_done": finished.timestamp()}
        at.update({"sse": streamed.get(task), "dom": shown[task]})
        samples.append(
            {"n": order[task], "task_id": task}
            | {k: round((v - sent[task]) * 1000, 1) for k, v in at.items() if v is not None}
        )
    split: dict[str, Any] = {name: _percentiles(values) for name, values in parts.items()}
    split["samples"] = samples
    return split


def _applied(engine: Engine, task_ids: list[str]) -> dict[str, int]:
    """Of the background webhooks sent, how many had their media updated by now."""
    if not task_ids:
        return {"applied": 0}
    low, high = min(task_ids), max(task_ids)
    query = (
        select(func.count())
        .select_from(ListenerRun)
        .join(WebhookEvent, ListenerRun.event_id == WebhookEvent.id)
        .where(
            WebhookEvent.task_id.between(low, high),
            ListenerRun.listener == UPDATE_LISTENER,
            ListenerRun.finished_at.is_not(None),
        )
    )
    with engine.connect() as conn:
        return {"applied": int(conn.execute(query).scalar_one())}


class Background:
    """`rate` webhooks a second from a thread until the block ends, each on its own
    connection and sent on schedule whether or not the earlier ones were answered."""

    def __init__(self, url: str, batch: list[Delivery], rate: float) -> None:
        self.host, self.port, self.path = load._split(url)
        self.batch, self.rate = batch, rate
        self._stop = threading.Event()
        self._sent: list[str] = []
        self._latencies: list[float] = []
        self._statuses: Counter[int] = Counter()
        self._errors = 0
        self._seconds = 0.0
        self._thread = threading.Thread(target=lambda: asyncio.run(self._pace()), daemon=True)

    def __enter__(self) -> Background:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(30)

    def sent_ids(self) -> list[str]:
        return list(self._sent)

    def summary(self) -> dict[str, Any]:
        ordered = sorted(self._latencies)
        return {
            "sent": len(self._sent),
            "seconds": round(self._seconds, 1),
            "rate": round(len(self._sent) / self._seconds, 1) if self._seconds else 0.0,
            "ran_out": len(self._sent) == len(self.batch),
            "non_2xx": sum(n for s, n in self._statuses.items() if not 200 <= s < 300),
            "errors": self._errors,
            "p50_ms": round(ordered[len(ordered) // 2] * 1000, 1) if ordered else 0.0,
            "p99_ms": round(ordered[int(len(ordered) * 0.99)] * 1000, 1) if ordered else 0.0,
        }

    async def _pace(self) -> None:
        started = time.monotonic()
        running: set[asyncio.Task[None]] = set()
        for n, delivery in enumerate(self.batch):
            if self._stop.is_set():
                break
            await asyncio.sleep(max(0.0, started + n / self.rate - time.monotonic()))
            task = asyncio.create_task(self._one(delivery))
            running.add(task)
            task.add_done_callback(running.discard)
        self._seconds = time.monotonic() - started
        await asyncio.gather(*running)

    async def _one(self, delivery: Delivery) -> None:
        self._sent.append(delivery.task_id)
        begun = time.monotonic()
        try:
            status = await load._post(self.host, self.port, self.path, delivery)
        except OSError:
            self._errors += 1
            return
        self._latencies.append(time.monotonic() - begun)
        self._statuses[status] += 1


# --- idle streams and the webhook endpoint -------------------------------------------


STREAM_ROUNDS = 2  # at least: the runs with and without streams alternate, best kept


def streams_and_ingest(ctx: Context, secret: str) -> dict[str, Any]:
    """Two identical webs with no worker, up at once: one holds `plan.live_streams` idle
    streams, the other none; their memory, and their webhook endpoints' ingest measured
    alternately (as ingest.py measures its contenders side by side)."""
    plan, count = ctx.plan, ctx.plan.live_streams
    rounds = max(STREAM_ROUNDS, plan.rounds)
    seconds = plan.live_ingest_seconds
    tokens = [mint(f"viewer{n}@bench.example", (secret,), TOKEN_TTL) for n in range(count)]
    result: dict[str, Any] = {"streams": count, "runs": {"without": {}, "with": {}}}
    webs: dict[str, tuple[Proc, int, Database]] = {}
    holder: StreamHolder | None = None
    try:
        for label in ("without", "with"):
            database = ctx.fresh_database()
            _seed_viewers(database.engine, count)
            env = ctx.env(database, ctx.fresh_broker(), LIVE_TOKEN_SECRET=secret)
            web, port = start_web(
                HANDLERS["ours"], env, ctx.logs, f"live-web-{label}", ctx.setup.web_workers
            )
            webs[label] = (web, port, database)
        for label, (_, port, _) in webs.items():
            ingest.measure(ctx, _webhooks(port), f"live_warm_{label}", 16, plan.warmup)
        web, port, _ = webs["with"]
        result["rss_mb_before"] = {label: _rss_mb(w) for label, (w, _, _) in webs.items()}
        holder = StreamHolder("127.0.0.1", port)
        before = _sockets_per_worker(web)
        result["opened"] = holder.open(tokens)
        held_since = time.monotonic()
        result["opened"]["web_sockets"] = {"before": before, "with": _sockets_per_worker(web)}
        result["rss_mb_opened"] = {label: _rss_mb(w) for label, (w, _, _) in webs.items()}
        for round_, concurrency in itertools.product(range(rounds), plan.concurrencies):
            order = ("without", "with") if round_ % 2 == 0 else ("with", "without")
            for label in order:
                web, port, database = webs[label]
                name = f"{label}streams_c{concurrency}_{round_}"
                run = _ingest_run(ctx, database, web, _webhooks(port), name, concurrency, seconds)
                _keep_best(result["runs"][label], str(concurrency), run)
        held = holder.check()
        held["seconds"] = round(time.monotonic() - held_since, 1)
        result["held"] = held
        result["rss_mb_after"] = {label: _rss_mb(w) for label, (w, _, _) in webs.items()}
        web = webs["with"][0]
        holder.close_all()
        held["closed_in_s"] = _wait_for_hubs_to_drop(
            web, result["opened"]["web_sockets"]["with"], held["held"]
        )
        result["peak_rss"] = {label: peak_rss_mb(w) for label, (w, _, _) in webs.items()}
        result["problems_in_logs"] = {label: _log_problems(w) for label, (w, _, _) in webs.items()}
    finally:
        if holder is not None:
            holder.stop()
        for web, _, _ in webs.values():
            web.stop()
    return result


def _webhooks(port: int) -> str:
    return f"http://127.0.0.1:{port}/webhooks/ittybit"


def _seed_viewers(engine: Engine, count: int) -> None:
    with engine.begin() as conn:
        conn.execute(
            insert(User),
            [{"id": n + 1, "email": f"viewer{n}@bench.example"} for n in range(count)],
        )


def _ingest_run(
    ctx: Context,
    database: Database,
    web: Proc,
    url: str,
    label: str,
    concurrency: int,
    seconds: float,
) -> dict[str, Any]:
    """One load run (as ingest.py's), with the CPU per request of the web, database, Redis."""
    groups = functools.partial(ctx.cpu_groups, database, {"web": web})
    before, cpu = ingest.stored_events(database), cpu_snapshot(groups())
    machine = _machine_busy()
    run = ingest.measure(ctx, url, label, concurrency, seconds)
    busy = _machine_busy() - machine
    used = cpu_used(cpu, cpu_snapshot(groups()))
    run["cpu_ms_per_request"] = cpu_ms_per(used, run["requests"])
    # What else ran meanwhile: the generator, the bench (holding the streams), anyone's.
    run["cpu_s_elsewhere"] = round(max(0.0, busy - sum(used.values())), 2)
    run["stored"] = ingest.stored_events(database) - before
    return run


def _keep_best(runs: dict[str, Any], key: str, run: dict[str, Any]) -> None:
    rounds = [*runs.get(key, {}).get("rounds_rps", []), run["rps"]]
    if key not in runs or run["rps"] > runs[key]["rps"]:
        runs[key] = run
    runs[key]["rounds_rps"] = rounds


def _rss_mb(proc: Proc) -> dict[str, float]:
    """Resident memory now (VmRSS) of the gunicorn master and its workers, in MiB."""
    sizes = [kb for kb in (_status_kb(pid, "VmRSS") for pid in proc.tree()) if kb is not None]
    return {"processes": len(sizes), "total_mb": round(sum(sizes) / 1024, 1)}


def _status_kb(pid: int, key: str) -> int | None:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    found = re.search(rf"^{key}:\s+(\d+)", status, re.MULTILINE)
    return int(found.group(1)) if found else None


def _sockets_per_worker(web: Proc) -> dict[str, int]:
    """Open sockets of each gunicorn worker (the held streams, plus a few of its own)."""
    counts = {}
    for pid in web.children():
        with contextlib.suppress(OSError):
            fds = Path(f"/proc/{pid}/fd")
            counts[str(pid)] = sum(1 for fd in fds.iterdir() if _readlink(fd).startswith("socket:"))
    return counts


def _readlink(path: Path) -> str:
    try:
        return os.readlink(path)
    except OSError:
        return ""


def _wait_for_hubs_to_drop(
    web: Proc, with_streams: dict[str, int], streams: int, timeout: float = 10
) -> float:
    """After the client closed its streams, until the workers have closed theirs too (their
    sockets fewer by as many, give or take a few); the seconds that took, or -1 past
    `timeout` (the hubs kept sockets of streams whose client had left)."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if sum(_sockets_per_worker(web).values()) <= sum(with_streams.values()) - streams + 8:
            return round(time.monotonic() - started, 2)
        time.sleep(0.1)
    return -1.0


def _log_problems(proc: Proc) -> list[str]:
    """Lines of the process's log that say something went wrong (the first few)."""
    markers = ("Traceback", "ERROR", "WARNING", "CRITICAL", "Exception")
    lines = proc.log(proc.log_start).splitlines()
    return [line for line in lines if any(m in line for m in markers)][:10]


@dataclass
class Held:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    received: int = 0
    heartbeats: int = 0
    ended: float | None = None  # when the server closed it (monotonic)
    task: asyncio.Task[None] | None = None


@dataclass
class StreamHolder:
    """Idle SSE streams, held by an asyncio loop in a thread of the bench."""

    host: str
    port: int
    held: list[Held] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()

    def _call(self, coro: Any, timeout: float = 120) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def open(self, tokens: list[str]) -> dict[str, Any]:
        """One stream per token; how many answered 200 and began with `retry:`."""
        return self._call(self._open_all(tokens))

    def check(self) -> dict[str, Any]:
        """How many of the held streams the server ended meanwhile."""
        ended = [h for h in self.held if h.ended is not None]
        return {
            "held": len(self.held),
            "ended_by_server": len(ended),
            "heartbeats": sum(h.heartbeats for h in self.held),
        }

    def close_all(self) -> None:
        self._call(self._close_all())

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.close_all()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    async def _open_all(self, tokens: list[str]) -> dict[str, Any]:
        gate = asyncio.Semaphore(OPEN_AT_ONCE)
        statuses: Counter[str] = Counter()
        problems: list[str] = []
        started = time.monotonic()
        open_ms: list[float] = []

        async def one(token: str) -> None:
            async with gate:
                begun = time.monotonic()
                try:
                    outcome = await asyncio.wait_for(self._open(token), STREAM_OPEN_TIMEOUT)
                except (OSError, TimeoutError, asyncio.IncompleteReadError) as exc:
                    outcome = type(exc).__name__
                statuses[outcome] += 1
                if outcome == "ok":
                    open_ms.append(time.monotonic() - begun)
                elif len(problems) < 5:
                    problems.append(outcome)

        await asyncio.gather(*(one(t) for t in tokens))
        return {
            "asked": len(tokens),
            "ok": statuses["ok"],
            "outcomes": dict(statuses),
            "problems": problems,
            "seconds": round(time.monotonic() - started, 2),
            "at_once": OPEN_AT_ONCE,
            "open_ms": _percentiles(open_ms),
        }

    async def _open(self, token: str) -> str:
        reader, writer = await asyncio.open_connection(self.host, self.port)
        request = (
            f"GET /api/stream?token={token} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
            "Accept: text/event-stream\r\nCache-Control: no-cache\r\n\r\n"
        )
        writer.write(request.encode())
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        status = head.split(b" ", 2)[1].decode() if head.startswith(b"HTTP/") else "?"
        if status != "200":
            writer.close()
            return f"HTTP {status}"
        body = b""
        while b"retry:" not in body:
            chunk = await reader.read(4096)
            if not chunk:
                writer.close()
                return "200 without retry:"
            body += chunk
        held = Held(reader, writer, received=len(body))
        held.task = asyncio.create_task(self._hold(held))
        self.held.append(held)
        return "ok"

    async def _hold(self, held: Held) -> None:
        while chunk := await held.reader.read(65536):
            held.received += len(chunk)
            held.heartbeats += chunk.count(b": keep-alive")
        held.ended = time.monotonic()

    async def _close_all(self) -> None:
        for held in self.held:
            if held.task is not None:
                held.task.cancel()
            held.writer.close()
        self.held.clear()


# --- shared ------------------------------------------------------------------------------


def _percentiles(seconds: list[float]) -> dict[str, float]:
    """p50 and p99 in ms, as e2e.py computes them."""
    if not seconds:
        return {"p50": 0.0, "p99": 0.0}
    ordered = sorted(seconds)
    return {
        "p50": round(statistics.median(ordered) * 1000, 1),
        "p99": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000, 1),
    }
