"""Live updates (pipeline/live/): how soon a webhook's change is on the user's screen, and
what holding many idle streams costs the web and its webhook endpoint.

- *Screen*: our web (the Procfile's), worker and the emulator; Chromium opens one media
  page at a time (`/media/<id>?token=`, static/live.js on its Server-Sent Events stream)
  and notes the wall clock of each `ittybit:media` event (dispatched on `document` right
  after live.js wrote the DOM); the latency is that minus the wall clock just before the
  bench sent the media's webhook (one machine, one clock). Idle (one webhook at a time),
  then while other media get BACKGROUND_RATE webhooks a second. Each sample is split with
  the database's timestamps: POST -> the web stored the event (`received_at`), -> the
  UpdateMediaRecord run finished (`finished_at`, taken just before its commit), -> DOM.
- *Streams*: a fresh web (no worker: as in ingest) holds `plan.live_streams` idle streams
  of as many users, each with its own token (`?token=`), opened by an asyncio client that
  checks each answered 200 and began with `retry:`; the web's resident memory with and
  without them, and the webhook endpoint's ingest (wrk, as in ingest.py) without and with
  them, interleaved in `plan.rounds` rounds, the best round of each kept.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import re
import resource
import secrets
import socket
import statistics
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, func, insert, select

from bench import ingest, load
from bench.context import Context, Database
from bench.payloads import USERS, Delivery, deliveries, seed_media
from bench.procs import (
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
from pipeline.live.tokens import mint
from pipeline.models import ListenerRun, User, WebhookEvent
from pipeline.signing import SIGNATURE_HEADER

BACKGROUND_RATE = 50.0  # webhooks/s for other media while sampling under load
BACKGROUND_WARMUP = 2.0  # seconds of background load before the first sample under it
IDLE_INTERVAL = 0.1  # at least this long between two samples' webhooks (as e2e's idle)
UPDATE_TIMEOUT = 10.0  # seconds a page may wait for its media's update
TOKEN_TTL = 3600
OPEN_AT_ONCE = 50  # streams being opened at the same time
STREAM_OPEN_TIMEOUT = 20.0
UPDATE_LISTENER = "update_media_record"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
# Before any of the page's scripts: note every applied update, on the page's clock.
RECORD_UPDATES = """
window.__liveUpdates = [];
document.addEventListener("ittybit:media", function (event) {
  var at = performance.timeOrigin + performance.now();
  window.__liveUpdates.push({
    at: at, skew: at - Date.now(), id: event.detail.id,
    status: event.detail.status, version: event.detail.version
  });
});
"""
STREAM_IS_OPEN = "() => document.querySelector('[data-field=\"connection\"]').textContent === 'live'"
UPDATED = "(id) => window.__liveUpdates.some(u => u.id === id && u.status === 'completed')"


def live(ctx: Context) -> dict[str, Any]:
    """Both measurements, the streams first (no worker, a quiet machine), then the screen."""
    raised = _raise_open_files()
    secret = secrets.token_hex(16)
    result: dict[str, Any] = {"open_files_limit": raised, "background_rate": BACKGROUND_RATE}
    result["streams"] = streams_and_ingest(ctx, secret)
    result["screen"] = webhook_to_screen(ctx, secret)
    return result


def _raise_open_files() -> int:
    """The bench holds a socket per stream: its soft open-file limit up to the hard one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


# --- webhook -> screen -----------------------------------------------------------------


def webhook_to_screen(ctx: Context, secret: str) -> dict[str, Any]:
    """Chromium on one media page at a time: idle, then under BACKGROUND_RATE webhooks/s."""
    samples = ctx.plan.live_samples
    deadline = max(15.0, samples * 0.4)  # per phase: an unanswered sample costs UPDATE_TIMEOUT
    background_size = int(BACKGROUND_RATE * (BACKGROUND_WARMUP + deadline + 5))
    idle = deliveries("task_live_idle", samples, ctx.secret, first_media_id=1)
    loaded = deliveries("task_live_load", samples, ctx.secret, first_media_id=1 + samples)
    background = deliveries(
        "task_live_bg", background_size, ctx.secret, first_media_id=1 + 2 * samples
    )
    database = ctx.fresh_database()
    seed_media(database.engine, idle + loaded + background)
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
        owners = {d.task_id: 1 + (1 + n) % USERS for n, d in enumerate(idle + loaded)}
        tokens = {u: mint(_email(u), (secret,), TOKEN_TTL) for u in set(owners.values())}
        with _browser() as (page, version):
            clock = _clock_offset_ms(page)
            result: dict[str, Any] = {"browser": version, "clock_offset_ms": clock}
            sampler = Sampler(page, base, database.engine, owners, tokens, deadline)
            result["idle"] = sampler.run(idle, first_media_id=1)
            webhook_url = f"{base}/webhooks/ittybit"
            with Background(webhook_url, background, BACKGROUND_RATE) as sender:
                time.sleep(BACKGROUND_WARMUP)
                result["load"] = sampler.run(loaded, first_media_id=1 + samples)
                sent = sender.sent_ids()
            result["load"]["background"] = {
                **sender.summary(),
                **_applied(database.engine, sent),
            }
        result["peak_rss"] = {name: peak_rss_mb(proc) for name, proc in procs.items()}
        result["worker"] = {"pool": pool, "concurrency": concurrency}
        result["errors_in_web_log"] = _log_problems(procs["web"])
    finally:
        for proc in reversed(procs.values()):
            proc.stop()
    return result


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


def _clock_offset_ms(page: Any) -> dict[str, float]:
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
    deadline: float  # seconds per phase: the rest of the samples are left out after it

    def run(self, batch: list[Delivery], first_media_id: int) -> dict[str, Any]:
        sent: dict[str, float] = {}
        shown: dict[str, float] = {}
        missed: list[str] = []
        statuses: Counter[int] = Counter()
        skews: list[float] = []
        until = time.monotonic() + self.deadline
        last_sent = 0.0
        for n, delivery in enumerate(batch):
            if time.monotonic() > until:
                break
            media_id = first_media_id + n
            token = self.tokens[self.owners[delivery.task_id]]
            self.page.goto(f"{self.base}/media/{media_id}?token={token}")
            self.page.wait_for_function(STREAM_IS_OPEN, timeout=10_000)
            time.sleep(max(0.0, last_sent + IDLE_INTERVAL - time.time()))
            last_sent, status = _post(self.base, delivery)
            sent[delivery.task_id] = last_sent
            statuses[status] += 1
            try:
                self.page.wait_for_function(
                    UPDATED, arg=media_id, polling=5, timeout=UPDATE_TIMEOUT * 1000
                )
            except Exception:  # playwright's TimeoutError: counted, not raised
                missed.append(delivery.task_id)
                continue
            updates = self.page.evaluate("window.__liveUpdates")
            first = next(u for u in updates if u["id"] == media_id and u["status"] == "completed")
            shown[delivery.task_id] = first["at"] / 1000
            skews.append(first["skew"])
        latencies = [shown[t] - sent[t] for t in shown]
        result = {
            "sent": len(sent),
            "updated": len(shown),
            "missed": missed[:20],
            "post_status": {str(k): v for k, v in statuses.items()},
            "post_to_dom_ms": _percentiles(latencies),
            "max_ms": round(max(latencies, default=0.0) * 1000, 1),
            "timestamp_skew_ms": round(max((abs(s) for s in skews), default=0.0), 2),
        }
        result["split_ms"] = _split(self.engine, sent, shown)
        return result


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


def _split(engine: Engine, sent: dict[str, float], shown: dict[str, float]) -> dict[str, Any]:
    """Where each updated sample's time went, from the database's timestamps: the POST
    until the web stored it, until UpdateMediaRecord finished (before its commit), until
    the page showed it (the commit, PostgreSQL's NOTIFY or SQLite's poll, the hub, the
    stream and the browser)."""
    if not shown:
        return {}
    query = (
        select(WebhookEvent.task_id, WebhookEvent.received_at, ListenerRun.finished_at)
        .join(ListenerRun, ListenerRun.event_id == WebhookEvent.id)
        .where(WebhookEvent.task_id.in_(list(shown)), ListenerRun.listener == UPDATE_LISTENER)
    )
    with engine.connect() as conn:
        rows = conn.execute(query).all()
    stored, handled, to_dom = [], [], []
    for task, received, finished in rows:
        if received is None or finished is None:
            continue
        stored.append(received.timestamp() - sent[task])
        handled.append(finished.timestamp() - received.timestamp())
        to_dom.append(shown[task] - finished.timestamp())
    return {
        "post_to_stored": _percentiles(stored),
        "stored_to_listener_done": _percentiles(handled),
        "listener_done_to_dom": _percentiles(to_dom),
    }


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


def streams_and_ingest(ctx: Context, secret: str) -> dict[str, Any]:
    """`plan.live_streams` idle streams on a web with no worker: its memory and its ingest
    with them and without."""
    plan, count = ctx.plan, ctx.plan.live_streams
    database = ctx.fresh_database()
    _seed_viewers(database.engine, count)
    tokens = [mint(f"viewer{n}@bench.example", (secret,), TOKEN_TTL) for n in range(count)]
    env = ctx.env(database, ctx.fresh_broker(), LIVE_TOKEN_SECRET=secret)
    web, port = start_web(HANDLERS["ours"], env, ctx.logs, "live-web-streams", ctx.setup.web_workers)
    url = f"http://127.0.0.1:{port}/webhooks/ittybit"
    result: dict[str, Any] = {"streams": count, "runs": {"without": {}, "with": {}}}
    holder = StreamHolder("127.0.0.1", port)
    try:
        ingest.measure(ctx, url, "live_warm", 16, plan.warmup)
        result["rss_mb_without"] = _rss_mb(web)
        baseline = _sockets_per_worker(web)
        seconds = plan.seconds / plan.rounds
        for round_ in range(plan.rounds):
            for concurrency in plan.concurrencies:
                label = f"nostreams_c{concurrency}_{round_}"
                run = _ingest_run(ctx, database, web, url, label, concurrency, seconds)
                _keep_best(result["runs"]["without"], str(concurrency), run)
            result.setdefault("opened", []).append(holder.open(tokens))
            held_since = time.monotonic()
            if round_ == 0:
                result["rss_mb_with"] = _rss_mb(web)
                result["sockets_per_worker"] = _sockets_per_worker(web)
            for concurrency in plan.concurrencies:
                label = f"streams_c{concurrency}_{round_}"
                run = _ingest_run(ctx, database, web, url, label, concurrency, seconds)
                _keep_best(result["runs"]["with"], str(concurrency), run)
            held = holder.check()
            held["seconds"] = round(time.monotonic() - held_since, 1)
            result.setdefault("held", []).append(held)
            if round_ == 0:
                result["rss_mb_after_ingest_with"] = _rss_mb(web)
            holder.close_all()
            result.setdefault("closed_in_s", []).append(_wait_for_hubs_to_drop(web, baseline))
        result["peak_rss"] = peak_rss_mb(web)
        result["errors_in_web_log"] = _log_problems(web)
    finally:
        holder.stop()
        web.stop()
    return result


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
    run = ingest.measure(ctx, url, label, concurrency, seconds)
    run["cpu_ms_per_request"] = cpu_ms_per(cpu_used(cpu, cpu_snapshot(groups())), run["requests"])
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
            counts[str(pid)] = sum(
                1 for fd in fds.iterdir() if _readlink(fd).startswith("socket:")
            )
    return counts


def _readlink(path: Path) -> str:
    try:
        return os.readlink(path)
    except OSError:
        return ""


def _wait_for_hubs_to_drop(web: Proc, baseline: dict[str, int], timeout: float = 10) -> float:
    """After the client closed its streams, until the workers have closed theirs too (their
    sockets back to what they were before); the seconds that took, or -1 past `timeout`."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if sum(_sockets_per_worker(web).values()) <= sum(baseline.values()) + 10:
            return round(time.monotonic() - started, 2)
        time.sleep(0.1)
    return -1.0


def _log_problems(proc: Proc) -> list[str]:
    """Lines of the process's log that say something went wrong (the first few)."""
    markers = ("Traceback", "ERROR", "WARNING", "CRITICAL", "Exception")
    lines = [line for line in proc.log(proc.log_start).splitlines() if any(m in line for m in markers)]
    return lines[:10]


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
