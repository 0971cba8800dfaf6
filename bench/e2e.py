"""End to end: signed webhooks in until every listener has finished its real work (media
rows updated, a thumbnail job created on the emulator, the owner notified), for our web and
workers and for the tutorial's, on the same cores, one after the other."""

from __future__ import annotations

import functools
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import requests
from sqlalchemy import Engine, case, func, select

from bench import load
from bench.context import Context, Database
from bench.payloads import Delivery, deliveries, seed_media
from bench.procs import (
    HANDLERS,
    Proc,
    cpu_ms_per,
    cpu_snapshot,
    cpu_used,
    fsync_ms,
    peak_rss_mb,
    start_emulator,
    start_web,
    start_worker,
)
from bench.profile import TASK_RUNNING, profile_while
from bench.tutorial_tasks import bench_done
from pipeline.models import ListenerRun, WebhookEvent
from pipeline.signing import SIGNATURE_HEADER

LISTENERS_PER_EVENT = 3  # a finished video: UpdateMediaRecord, GenerateThumbnail, NotifyUser
IDLE_INTERVAL = 0.1  # seconds between webhooks when measuring latency on an idle pipeline
IDLE_TIMEOUT = 30.0  # seconds to wait for the idle webhooks' listeners once all are sent
BURST_CONCURRENCY = 16


@dataclass
class Done:
    """When an event's last listener finished, and how its runs ended."""

    last: float  # Unix seconds
    finished: int
    ok: int
    received: float | None = None  # ours only: webhook_events.received_at


def end_to_end(ctx: Context, system: str) -> dict[str, Any]:
    """Idle latency, then a burst of `plan.events` webhooks, through `system`'s web and worker."""
    plan = ctx.plan
    database = ctx.fresh_database()
    engine = database.engine
    quiet = deliveries(f"task_idle_{system}", plan.idle_events, ctx.secret, first_media_id=1)
    burst = deliveries(
        f"task_e2e_{system}", plan.events, ctx.secret, first_media_id=1 + plan.idle_events
    )
    seed_media(engine, quiet + burst)
    os.sync()  # what earlier parts wrote goes to disk now, not during the measurement
    disk = fsync_ms(ctx.tmp, rounds=30)
    env = ctx.env(database, ctx.fresh_broker())
    procs: dict[str, Proc] = {}
    counters = {**database.counters(), "redis_commands": ctx.broker_commands()}
    try:
        procs["emulator"], emulator_port = start_emulator(env, ctx.logs, f"emulator-{system}")
        env["ITTYBIT_API_URL"] = f"http://127.0.0.1:{emulator_port}"
        procs["web"], web_port = start_web(
            HANDLERS[system], env, ctx.logs, f"e2e-web-{system}", ctx.setup.web_workers
        )
        env["PUBLIC_URL"] = f"http://127.0.0.1:{web_port}"
        pool, concurrency = ctx.setup.worker(system)
        procs["worker"] = start_worker(system, env, ctx.logs, f"worker-{system}", pool, concurrency)
        url = f"{env['PUBLIC_URL']}/webhooks/ittybit"
        counted = functools.partial(cpu_counted, ctx, database, procs)
        result = {
            "idle": counted(lambda: idle(system, engine, url, quiet, procs["worker"])),
            "burst": counted(lambda: _burst(ctx, system, engine, url, burst, procs["worker"])),
        }
        result["peak_rss"] = {name: peak_rss_mb(proc) for name, proc in procs.items()}
        result["worker"] = {"pool": pool, "concurrency": concurrency}
        result["fsync_ms_before"] = disk
    finally:
        for proc in reversed(procs.values()):  # workers first: none calls a stopped emulator
            proc.stop()
    after = {**database.counters(), "redis_commands": ctx.broker_commands()}
    result["counts"] = _per_event(counters, after, result)
    return result


def cpu_counted(
    ctx: Context, database: Database, procs: dict[str, Proc], phase: Callable[[], dict[str, Any]]
) -> dict[str, Any]:
    """Run a phase, adding the CPU its processes used: in seconds, and per event when every
    event sent was finished (else work still queued or in flight would be counted)."""
    before = cpu_snapshot(ctx.cpu_groups(database, procs))
    result = phase()
    used = cpu_used(before, cpu_snapshot(ctx.cpu_groups(database, procs)))
    result["cpu_s"] = {name: round(seconds, 2) for name, seconds in used.items()}
    whole = result["complete"] == result["sent"]
    result["cpu_ms_per_event"] = cpu_ms_per(used, result["complete"]) if whole else None
    return result


def _per_event(
    before: dict[str, int], after: dict[str, int], result: dict[str, Any]
) -> dict[str, Any]:
    """Database commits (a connection's pre-ping is one too), rollbacks (the harness's
    reads), connections, Redis commands: over both phases, counted once every process
    stopped (a PostgreSQL backend reports its counts late, at the latest when it exits)."""
    counted = {key: after[key] - before[key] for key in after}
    phases = [result["idle"], result["burst"]]
    events = sum(phase["complete"] for phase in phases)
    whole = all(phase["complete"] == phase["sent"] for phase in phases)
    per = {key: round(n / max(events, 1), 2) for key, n in counted.items()} if whole else None
    return {"counted": counted, "events": events, "per_event": per}


def idle(
    system: str, engine: Engine, url: str, batch: list[Delivery], worker: Proc
) -> dict[str, Any]:
    """One webhook every IDLE_INTERVAL seconds: latency with nothing queued ahead."""
    sent: dict[str, float] = {}
    for delivery in batch:
        sent[delivery.task_id] = time.time()
        requests.post(
            url,
            data=delivery.body,
            headers={"Content-Type": "application/json", SIGNATURE_HEADER: delivery.signature},
            timeout=10,
        ).raise_for_status()
        time.sleep(max(0.0, sent[delivery.task_id] + IDLE_INTERVAL - time.time()))
    return outcome(system, engine, batch, sent, worker, time.monotonic() + IDLE_TIMEOUT)


def _burst(
    ctx: Context, system: str, engine: Engine, url: str, batch: list[Delivery], worker: Proc
) -> dict[str, Any]:
    """Every webhook at once (BURST_CONCURRENCY connections), until all are done or the
    window closes; what was not sent by then is left out, what is unfinished is counted."""
    window = ctx.plan.window
    until = time.monotonic() + window if window else float("inf")

    def run() -> dict[str, Any]:
        sending = load.send_all(url, batch, BURST_CONCURRENCY, until)
        sent = [d for d in batch if d.task_id in sending.sent_at]
        result = outcome(system, engine, sent, sending.sent_at, worker, until)
        return {**result, "sending": sending.summary(), "window_s": window or None}

    if not (ctx.profile and system == "ours"):
        return run()
    profiled = profile_while(worker, ctx.artifact("worker.folded"), TASK_RUNNING, run)
    burst = profiled.pop("run_while_profiled", None) or run()  # py-spy missing: measure anyway
    return {**burst, "profile": profiled}


def outcome(
    system: str,
    engine: Engine,
    batch: list[Delivery],
    sent: dict[str, float],
    worker: Proc,
    until: float,
) -> dict[str, Any]:
    """Wait for every listener of `batch` (or `until`), then throughput and latencies."""
    expected = LISTENERS_PER_EVENT * len(batch)
    low, high = batch[0].task_id, batch[-1].task_id
    while _finished(engine, system, low, high) < expected and time.monotonic() < until:
        if not worker.alive:
            raise RuntimeError(f"{worker.name} died:\n{worker.log()[-3000:]}")
        time.sleep(0.25)
    done = _done(engine, system, low, high)
    complete = [t for t, d in done.items() if d.finished >= LISTENERS_PER_EVENT]
    first_sent = min(sent.values())
    last_done = max((done[t].last for t in complete), default=first_sent)
    result: dict[str, Any] = {
        "sent": len(batch),
        "complete": len(complete),
        "runs_ok": sum(d.ok for d in done.values()),
        "runs_expected": expected,
        "seconds": round(last_done - first_sent, 2),
        "events_per_s": round(len(complete) / max(last_done - first_sent, 1e-9), 1),
        "send_to_done_ms": _percentiles([done[t].last - sent[t] for t in complete]),
    }
    if system == "ours":
        received = [done[t].last - (done[t].received or 0.0) for t in complete]
        result["receipt_to_done_ms"] = _percentiles(received)
    return result


def _percentiles(seconds: list[float]) -> dict[str, float]:
    if not seconds:
        return {"p50": 0.0, "p99": 0.0}
    ordered = sorted(seconds)
    return {
        "p50": round(statistics.median(ordered) * 1000, 1),
        "p99": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000, 1),
    }


def _finished(engine: Engine, system: str, low: str, high: str) -> int:
    if system == "ours":
        query = (
            select(func.count())
            .select_from(ListenerRun)
            .join(WebhookEvent, ListenerRun.event_id == WebhookEvent.id)
            .where(WebhookEvent.task_id.between(low, high), ListenerRun.finished_at.is_not(None))
        )
    else:
        query = select(func.count()).where(bench_done.c.task_id.between(low, high))
    with engine.connect() as conn:
        return int(conn.execute(query).scalar_one())


def _done(engine: Engine, system: str, low: str, high: str) -> dict[str, Done]:
    with engine.connect() as conn:
        if system != "ours":
            rows = conn.execute(
                select(bench_done.c.task_id, func.max(bench_done.c.finished_at), func.count())
                .where(bench_done.c.task_id.between(low, high))
                .group_by(bench_done.c.task_id)
            ).all()
            return {task: Done(last, n, n) for task, last, n in rows}
        succeeded = func.sum(case((ListenerRun.state == "succeeded", 1), else_=0))
        rows = conn.execute(
            select(
                WebhookEvent.task_id,
                WebhookEvent.received_at,
                func.max(ListenerRun.finished_at),
                func.count(ListenerRun.finished_at),
                succeeded,
            )
            .join(ListenerRun, ListenerRun.event_id == WebhookEvent.id)
            .where(WebhookEvent.task_id.between(low, high))
            .group_by(WebhookEvent.id)
        ).all()
    return {
        task: Done(last.timestamp() if last else 0.0, n, ok or 0, received.timestamp())
        for task, received, last, n, ok in rows
    }
