"""Ingest: requests/s and latency of our endpoint, the tutorial's and a bare one, under the
same gunicorn settings and payloads; the generator's own ceiling; and our cost per event
with an empty events table and a full one."""

from __future__ import annotations

import functools
import itertools
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import text

from bench import load
from bench.context import Context, Database
from bench.payloads import deliveries, fill_events, write_wrk_file
from bench.procs import (
    HANDLERS,
    cpu_ms_per,
    cpu_snapshot,
    cpu_used,
    environment,
    peak_rss_mb,
    start_web,
)
from bench.profile import WEB_HANDLING, profile_while
from pipeline.dev.procs import REPO, Proc, free_port, listening, wait_for

BODIES_PER_SECOND = 6000  # above what any of the three serves here, so none wraps


@contextmanager
def server(ctx: Context, label: str, app: str, database: Database) -> Iterator[tuple[Proc, str]]:
    """A gunicorn serving `app` on its own Redis database; yields it and its webhook URL."""
    env = ctx.env(database, ctx.fresh_broker())
    web, port = start_web(app, env, ctx.logs, f"web-{label}", ctx.setup.web_workers)
    try:
        yield web, f"http://127.0.0.1:{port}/webhooks/ittybit"
    finally:
        web.stop()


def measure(ctx: Context, url: str, label: str, concurrency: int, seconds: float) -> dict[str, Any]:
    """One load run with fresh deliveries (task ids `task_<label>_<n>`)."""
    batch = deliveries(f"task_{label}", int(seconds * BODIES_PER_SECOND) + 100, ctx.secret)
    bodies = write_wrk_file(ctx.tmp / f"bodies-{label}.txt", batch)
    result = load.run(url, batch, bodies, concurrency, seconds, ctx.use_wrk)
    bodies.unlink()
    return result.summary()


def stored_events(database: Database) -> int:
    with database.engine.connect() as conn:
        return int(conn.execute(text("SELECT count(*) FROM webhook_events")).scalar_one())


def ceilings(ctx: Context) -> dict[str, Any]:
    """The generator against a do-nothing server, and gunicorn with a do-nothing app."""
    port = free_port()
    argv = ["python", "-m", "bench.trivial_server", str(port)]
    trivial = Proc("trivial", argv, environment({}), ctx.logs, cwd=REPO)
    try:
        wait_for(lambda: listening(port), what="the trivial server", timeout=10, proc=trivial)
        url = f"http://127.0.0.1:{port}/webhooks/ittybit"
        generator = measure(ctx, url, "ceiling_trivial", 64, ctx.plan.seconds / 2)
    finally:
        trivial.stop()
    # The no-op app opens no database: a SQLite file is the cheapest to give it.
    noop_app = "bench.tutorial_app:noop_app"
    with server(ctx, "noop", noop_app, ctx.fresh_database("sqlite")) as (_, url):
        noop = measure(ctx, url, "ceiling_noop", 64, ctx.plan.seconds / 2)
    return {"generator_vs_trivial_server": generator, "gunicorn_noop_app": noop}


@dataclass(frozen=True)
class Contender:
    """A server measured side by side: which app, on which database."""

    label: str
    app: str
    database: Database
    stored_before: int = 0


def contenders(ctx: Context, handlers: bool, fill: bool, backend: str) -> list[Contender]:
    """Ours (empty table); ours with `plan.fill` events stored; the tutorial's; the bare one;
    each on a fresh database of `backend`."""
    chosen = [Contender("ours", HANDLERS["ours"], ctx.fresh_database(backend))]
    if fill:
        database = ctx.fresh_database(backend)
        fill_events(database.engine, ctx.plan.fill)
        chosen.append(Contender(filled(ctx), HANDLERS["ours"], database, ctx.plan.fill))
    if handlers:
        for name in ("tutorial", "bare"):
            chosen.append(Contender(name, HANDLERS[name], ctx.fresh_database(backend)))
    return chosen


def filled(ctx: Context) -> str:
    return f"ours+{ctx.plan.fill}"


def side_by_side(ctx: Context, chosen: list[Contender]) -> dict[str, Any]:
    """Every server up at once, runs interleaved (in `plan.rounds` rounds, the best kept) so
    load from elsewhere on the machine falls on all of them alike."""
    plan = ctx.plan
    seconds = plan.seconds / plan.rounds
    results: dict[str, Any] = {
        c.label: {"runs": {}, "stored_before": c.stored_before} for c in chosen
    }
    with ExitStack() as stack:
        up = {c.label: stack.enter_context(server(ctx, c.label, c.app, c.database)) for c in chosen}
        for label, (_, url) in up.items():
            measure(ctx, url, f"warm_{label}", 16, plan.warmup)
        for concurrency, round_ in itertools.product(plan.concurrencies, range(plan.rounds)):
            for contender in chosen:
                label, (web, url) = contender.label, up[contender.label]
                groups = functools.partial(ctx.cpu_groups, contender.database, {"web": web})
                before, cpu = stored_events(contender.database), cpu_snapshot(groups())
                run = measure(ctx, url, f"{label}_c{concurrency}_{round_}", concurrency, seconds)
                run["cpu_ms_per_request"] = cpu_ms_per(
                    cpu_used(cpu, cpu_snapshot(groups())), run["requests"]
                )
                run["stored"] = stored_events(contender.database) - before
                _keep_best(results[label]["runs"], str(concurrency), run)
        if ctx.profile and {"ours", "tutorial"} <= up.keys():  # once, beside the tutorial
            web, url = up["ours"]
            results["ours"]["profile"] = profile_while(
                web,
                ctx.artifact("ingest.folded"),
                WEB_HANDLING,
                lambda: measure(ctx, url, "profiled", 16, plan.seconds),
            )
        for label, (web, _) in up.items():
            results[label]["peak_rss"] = peak_rss_mb(web)
    return results


def _keep_best(runs: dict[str, Any], key: str, run: dict[str, Any]) -> None:
    """The round with the most requests/s stands for the concurrency; all rounds are listed."""
    rounds = [*runs.get(key, {}).get("rounds_rps", []), run["rps"]]
    if key not in runs or run["rps"] > runs[key]["rps"]:
        runs[key] = run
    runs[key]["rounds_rps"] = rounds
