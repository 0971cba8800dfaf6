"""End to end at full speed (issue 13), on PostgreSQL and on SQLite: ours as the Procfile
ships it against the tutorial at its best settings, every burst waited out, with a light
Ittybit stand-in (bench/ittybit_stub.py) so that the workers are what is measured.

Per backend:
1. *search*: a burst through the tutorial's web and worker for each of TUTORIAL_SEARCH's
   settings (pool, concurrency, log level), and through ours for OURS_SEARCH's, each on a
   fresh database and Redis database; the best of each side is printed with its settings.
2. *side by side*: a second round of ours as shipped and of the tutorial's best, one after
   the other; each side keeps its better round (load from elsewhere only ever lowers a
   rate). The ratio is ours as shipped over the tutorial's best.
3. *latency*, ours as shipped: receipt → last listener done one webhook every 100 ms
   (idle), then at half the rate ours reached, paced.

A burst is `plan.speed_events` finished-video webhooks over 16 connections; its events/s
is the events whose three listeners all finished over the time from the first send to the
last finish. Each listener does its real work on both sides (the media row, the thumbnail
job created on the stand-in, the notification).
"""

from __future__ import annotations

import dataclasses
import functools
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import requests
from celery import Celery

from bench import e2e, load
from bench.context import BACKENDS, Context, Database, postgresql_answers
from bench.payloads import Delivery, deliveries, seed_media
from bench.procs import HANDLERS, WORKERS, Proc, celery_worker, environment, start_web
from pipeline.dev.procfile import start_process
from pipeline.dev.procs import free_port, wait_for
from pipeline.signing import SIGNATURE_HEADER


@dataclass(frozen=True)
class Settings:
    """A Celery worker's settings; `shipped` means the Procfile's defaults, none given."""

    pool: str
    concurrency: int
    loglevel: str
    shipped: bool = False

    @property
    def label(self) -> str:
        text = f"{self.pool} x{self.concurrency}, {self.loglevel}"
        return f"{text} (as shipped)" if self.shipped else text


# The Procfile's worker: prefork, WORKER_CONCURRENCY 4, LOG_LEVEL INFO. Started with
# none of them set, so a change of default shows here.
SHIPPED = Settings("prefork", 4, "INFO", shipped=True)
OURS_SEARCH = (
    SHIPPED,
    Settings("prefork", 2, "INFO"),
    Settings("threads", 8, "INFO"),
)
TUTORIAL_SEARCH = (
    Settings("prefork", 2, "WARNING"),  # Celery's defaults on 2 cores, WARNING logging
    Settings("prefork", 4, "WARNING"),
    Settings("threads", 8, "WARNING"),
    Settings("prefork", 2, "INFO"),  # Celery's defaults as they are
)
HALF_RATE_SECONDS = {"full": 20.0, "quick": 6.0, "smoke": 2.0}
BURST_TIMEOUT = 300.0  # seconds a burst may take to finish once sent


def speed_part(ctx: Context) -> dict[str, Any]:
    """Search, side by side and latency on each backend (PostgreSQL when it answers)."""
    backends = [b for b in BACKENDS if b == "sqlite" or postgresql_answers()]
    return {backend: _backend(ctx, backend) for backend in backends}


def _backend(ctx: Context, backend: str) -> dict[str, Any]:
    smoke = ctx.plan.name == "smoke"
    ours_search = OURS_SEARCH[:1] if smoke else OURS_SEARCH
    tutorial_search = TUTORIAL_SEARCH[:1] if smoke else TUTORIAL_SEARCH
    search: dict[str, dict[str, list[dict[str, Any]]]] = {"tutorial": {}, "ours": {}}
    for settings in tutorial_search:
        search["tutorial"][settings.label] = [burst(ctx, backend, "tutorial", settings)]
    for settings in ours_search:
        search["ours"][settings.label] = [burst(ctx, backend, "ours", settings)]
    best = max(tutorial_search, key=lambda s: _rate(search["tutorial"][s.label]))
    # The second round of the two that are compared, one after the other.
    search["tutorial"][best.label].append(burst(ctx, backend, "tutorial", best))
    search["ours"][SHIPPED.label].append(burst(ctx, backend, "ours", SHIPPED))
    ours_rate = _rate(search["ours"][SHIPPED.label])
    return {
        "search": search,
        "tutorial_best": best.label,
        "ours": SHIPPED.label,
        "events_per_s": {"ours": ours_rate, "tutorial": _rate(search["tutorial"][best.label])},
        "latency": _latency(ctx, backend, rate=ours_rate / 2),
    }


def _rate(rounds: list[dict[str, Any]]) -> float:
    """The better round's events/s (a round with unfinished events counts what finished)."""
    return max(float(r["events_per_s"]) for r in rounds)


@dataclass
class Stack:
    """One system's web and worker and the stand-in, on a fresh database and broker."""

    ctx: Context
    backend: str
    system: str
    settings: Settings
    workers: int = 1  # worker processes, each with `settings`
    database: Database = dataclasses.field(init=False)
    procs: dict[str, Proc] = dataclasses.field(default_factory=dict)
    url: str = ""

    def __enter__(self) -> Stack:
        ctx, name = self.ctx, f"{self.system}-{self.backend}"
        self.database = ctx.fresh_database(self.backend)
        env = ctx.env(self.database, ctx.fresh_broker())
        try:
            self.procs["stub"], stub_port = start_stub(env, ctx, name)
            env["ITTYBIT_API_URL"] = f"http://127.0.0.1:{stub_port}"
            self.procs["web"], web_port = start_web(
                HANDLERS[self.system], env, ctx.logs, f"speed-web-{name}", ctx.setup.web_workers
            )
            env["PUBLIC_URL"] = f"http://127.0.0.1:{web_port}"
            for n in range(self.workers):
                key = "worker" if n == 0 else f"worker-{n + 1}"
                self.procs[key] = start_worker(self.system, self.settings, env, ctx, f"{name}-{n}")
        except BaseException:
            self.__exit__()
            raise
        self.url = f"http://127.0.0.1:{web_port}/webhooks/ittybit"
        return self

    def stop(self) -> None:
        for proc in reversed(self.procs.values()):  # the worker first: it calls the stub
            proc.stop()

    def __exit__(self, *_: object) -> None:
        self.stop()
        self.ctx.close()  # this stack's database


def start_stub(
    env: dict[str, str], ctx: Context, name: str, host: str = "127.0.0.1"
) -> tuple[Proc, int]:
    """The Ittybit stand-in on a free port of `host`."""
    port = free_port()
    argv = ["python", "-m", "bench.ittybit_stub", "--host", host, "--port", str(port)]
    proc = Proc(f"stub-{name}", argv, environment(env), ctx.logs)
    wait_for(lambda: "listening" in proc.log(), what="the Ittybit stand-in", timeout=20, proc=proc)
    return proc, port


def start_worker(
    system: str, settings: Settings, env: dict[str, str], ctx: Context, name: str
) -> Proc:
    """Ours from the Procfile: as shipped, nothing set; else WORKER_CONCURRENCY, LOG_LEVEL
    and --pool. The tutorial's: `celery worker` on its app with the same options."""
    label = f"speed-worker-{name}"
    base = {k: v for k, v in env.items() if k not in ("WORKER_CONCURRENCY", "LOG_LEVEL")}
    if system == "ours":
        run_env = environment(base)
        for key in ("WORKER_CONCURRENCY", "LOG_LEVEL"):
            run_env.pop(key, None)  # the bench's own environment does not decide either
        extra = ["-n", f"{label}@%h"]
        if not settings.shipped:
            run_env.update(
                WORKER_CONCURRENCY=str(settings.concurrency), LOG_LEVEL=settings.loglevel
            )
            extra += ["--pool", settings.pool]
        proc = start_process("worker", run_env, ctx.logs, *extra, label=label)
    else:
        argv = celery_worker(
            WORKERS[system], settings.pool, settings.concurrency, settings.loglevel, f"{label}@%h"
        )
        proc = Proc(label, argv, environment(base), ctx.logs)
    wait_for(
        functools.partial(
            _answers_ping, env["CELERY_BROKER_URL"], f"{label}@{socket.gethostname()}"
        ),
        what=f"{label} ready",
        timeout=60,
        proc=proc,
    )
    return proc


def _answers_ping(broker: str, name: str) -> bool:
    """The worker answers a control ping (its " ready." line is INFO, absent at WARNING)."""
    app = Celery(broker=broker)
    try:
        return bool(app.control.ping(destination=[name], timeout=0.5))
    finally:
        app.close()


def burst(
    ctx: Context, backend: str, system: str, settings: Settings, workers: int = 1
) -> dict[str, Any]:
    """`plan.speed_events` webhooks at once, waited out."""
    with Stack(ctx, backend, system, settings, workers) as stack:
        result = timed_burst(ctx, stack.database, stack.procs, stack.url, system)
    result["settings"] = dataclasses.asdict(settings)
    processes = f", {workers} worker processes" if workers > 1 else ""
    say(f"{backend} {system} {settings.label}{processes}: {result['events_per_s']:g} events/s")
    return result


def timed_burst(
    ctx: Context, database: Database, procs: dict[str, Proc], url: str, system: str
) -> dict[str, Any]:
    """A burst through a started stack (`procs`, its web at `url`), then the stack stopped:
    events/s, CPU and commits per event."""
    batch = deliveries(f"task_speed_{system}", ctx.plan.speed_events, ctx.secret)
    seed_media(database.engine, batch)
    os.sync()

    def run() -> dict[str, Any]:
        sending = load.send_all(url, batch, e2e.BURST_CONCURRENCY)
        until = time.monotonic() + BURST_TIMEOUT
        result = e2e.outcome(
            system, database.engine, batch, sending.sent_at, procs["worker"], until
        )
        return {**result, "sending": sending.summary()}

    before = database.counters()
    result = e2e.cpu_counted(ctx, database, procs, run)
    for proc in reversed(procs.values()):  # a PostgreSQL backend reports its counts at exit
        proc.stop()
    result["commits_per_event"] = _commits(before, database, result)
    return result


def _commits(before: dict[str, int], database: Database, result: dict[str, Any]) -> float | None:
    """PostgreSQL commits per finished event (none counted on SQLite)."""
    if not before or not result["complete"]:
        return None
    after = database.counters()
    return round((after["commits"] - before["commits"]) / result["complete"], 2)


def _latency(ctx: Context, backend: str, rate: float) -> dict[str, Any]:
    """Ours as shipped: receipt → done when idle, then paced at `rate` webhooks/s."""
    plan = ctx.plan
    idle = deliveries("task_latency_idle", plan.idle_events, ctx.secret)
    count = max(10, int(rate * HALF_RATE_SECONDS[plan.name]))
    paced = deliveries("task_latency_half", count, ctx.secret, first_media_id=1 + len(idle))
    with Stack(ctx, backend, "ours", SHIPPED) as stack:
        engine, worker = stack.database.engine, stack.procs["worker"]
        seed_media(engine, idle + paced)
        result = {"idle": e2e.idle("ours", engine, stack.url, idle, worker)}
        sent = _paced(stack.url, paced, rate)
        until = time.monotonic() + BURST_TIMEOUT
        result["half_rate"] = {
            "rate": round(rate, 1),
            **e2e.outcome("ours", engine, paced, sent, worker, until),
        }
    return result


def _paced(url: str, batch: list[Delivery], rate: float) -> dict[str, float]:
    """Send `batch` at `rate` per second (each on its own schedule, four senders); when each
    was sent (Unix seconds)."""
    sent: dict[str, float] = {}
    start = time.monotonic() + 0.2
    lock = threading.Lock()
    cursor = iter(enumerate(batch))

    def sender() -> None:
        session = requests.Session()
        while True:
            with lock:
                taken = next(cursor, None)
            if taken is None:
                return
            index, delivery = taken
            time.sleep(max(0.0, start + index / rate - time.monotonic()))
            sent[delivery.task_id] = time.time()
            headers = {"Content-Type": "application/json", SIGNATURE_HEADER: delivery.signature}
            session.post(url, data=delivery.body, headers=headers, timeout=10).raise_for_status()

    threads = [threading.Thread(target=sender) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sent


def targets(speed: dict[str, Any], add: Callable[[str, str, bool | None], None]) -> None:
    """Issue 13's end-to-end and latency targets, per backend."""
    for backend, part in speed.items():
        rates = part["events_per_s"]
        ratio = rates["ours"] / rates["tutorial"] if rates["tutorial"] else 0.0
        add(
            f"end to end >= 2x the tutorial at its best ({backend})",
            f"{ratio:.2f}x ({rates['ours']:g} vs {rates['tutorial']:g} events/s)",
            ratio >= 2,
        )
        idle = part["latency"]["idle"]["receipt_to_done_ms"]["p50"]
        add(f"receipt-to-done p50 <= 15 ms idle ({backend})", f"{idle:g} ms", idle <= 15)
        half = part["latency"]["half_rate"]
        p99, done = half["receipt_to_done_ms"]["p99"], half["complete"] == half["sent"]
        add(
            f"receipt-to-done p99 <= 100 ms at half the maximum rate ({backend})",
            f"{p99:g} ms at {half['rate']:g}/s ({half['complete']}/{half['sent']} done)",
            p99 <= 100 and done,
        )


def render(speed: dict[str, Any], table: Callable[[list[str], list[list[Any]]], str]) -> str:
    """The search per backend, best round of each setting, and the latencies."""
    parts = []
    for backend, part in speed.items():
        rows = []
        for system, tried in part["search"].items():
            for label, rounds in tried.items():
                best = max(rounds, key=lambda r: float(r["events_per_s"]))
                cpu = best.get("cpu_ms_per_event") or {}
                rows.append(
                    [
                        system,
                        label,
                        f"{best['events_per_s']:g}",
                        " / ".join(f"{r['events_per_s']:g}" for r in rounds),
                        f"{best['complete']}/{best['sent']}",
                        f"{cpu.get('total', 0):g}" if cpu else "-",
                        f"{best['commits_per_event']:g}" if best["commits_per_event"] else "-",
                    ]
                )
        latency = part["latency"]
        idle, half = latency["idle"]["receipt_to_done_ms"], latency["half_rate"]
        parts.append(
            f"END TO END AT FULL SPEED ({backend}; "
            f"bursts waited out, Ittybit played by bench/ittybit_stub.py): ours as shipped "
            f"{part['events_per_s']['ours']:g} events/s, the tutorial at its best "
            f"({part['tutorial_best']}) {part['events_per_s']['tutorial']:g}\n"
            + table(
                [
                    "system",
                    "worker settings",
                    "events/s",
                    "rounds",
                    "done",
                    "CPU ms/event",
                    "commits/event",
                ],
                rows,
            )
            + f"\nours as shipped, receipt -> last listener done: idle p50 {idle['p50']:g} ms,"
            f" p99 {idle['p99']:g} ms; at {half['rate']:g}/s (half its rate) p50 "
            f"{half['receipt_to_done_ms']['p50']:g} ms, p99 {half['receipt_to_done_ms']['p99']:g}"
            f" ms ({half['complete']}/{half['sent']} done)"
        )
    return "\n\n".join(parts)


def say(text: str) -> None:
    print(f"[bench] {text}", flush=True)
