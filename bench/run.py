"""Benchmark our durable webhook pipeline beside the tutorial's, on loopback.

    .venv/bin/python bench/run.py            # the full run, about 9 minutes
    .venv/bin/python bench/run.py --quick    # about a minute, for development
    .venv/bin/python bench/run.py --smoke    # seconds: does every part still run?

Starts its own Redis, databases (PostgreSQL databases `pipeline_bench_<random>` on
127.0.0.1:5432 when it answers, else SQLite files in a temporary folder; `--database`
chooses; dropped afterwards), gunicorn, Celery workers and the Ittybit emulator; prints a
table and writes bench/results/<timestamp>.json. Targets are reported, never enforced.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script

from bench import console, e2e, ingest, live, load, prune, report, scale, speed
from bench.context import BACKENDS, PLANS, POOLS, TUTORIAL_POOL, Context, Setup, postgresql_answers
from bench.payloads import BODY_BYTES
from bench.procs import fsync_ms
from pipeline.dev.procs import REPO
from pipeline.dev.servers import start_redis

PARTS = ("ingest", "size", "prune", "console", "e2e", "speed", "scale", "live")


def arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="smaller and shorter (~1 minute)")
    size.add_argument("--smoke", action="store_true", help="tiny: checks the harness runs")
    parser.add_argument("--only", default=",".join(PARTS), help=f"comma-separated of {PARTS}")
    parser.add_argument(
        "--database",
        choices=BACKENDS,
        help="every contender's database [postgresql if 127.0.0.1:5432 answers, else sqlite]",
    )
    defaults = Setup()
    parser.add_argument(
        "--web-workers",
        type=_positive,
        default=defaults.web_workers,
        help="gunicorn sync workers, for every handler [%(default)s, the Procfile's]",
    )
    parser.add_argument(
        "--worker-pool",
        choices=POOLS,
        default=defaults.worker_pool,
        help="our end-to-end worker's pool; the tutorial's keeps Celery's [%(default)s]",
    )
    parser.add_argument(
        "--worker-concurrency",
        type=_positive,
        default=defaults.worker_concurrency,
        help="our end-to-end worker's processes or threads [%(default)s]",
    )
    parser.add_argument(
        "--profile", action="store_true", help="py-spy our web and worker under load"
    )
    parser.add_argument("--events", type=int, help="end-to-end burst size [plan's]")
    parser.add_argument("--window", type=float, help="end-to-end seconds per system, 0: no limit")
    parser.add_argument(
        "--python-client", action="store_true", help="the asyncio client even if wrk is there"
    )
    parser.add_argument("--keep", action="store_true", help="keep the process logs")
    return parser.parse_args(argv)


def _positive(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {value}")
    return number


def _ingest_databases(args: argparse.Namespace, setup: Setup) -> list[str]:
    """Ingest is measured on both databases (issue 13's targets differ per database), SQLite
    first, unless `--database` names one; PostgreSQL only when it answers."""
    if args.database:
        return [args.database]
    return [b for b in BACKENDS if b == "sqlite" or (b == setup.database == "postgresql")]


def _setup(args: argparse.Namespace) -> Setup:
    """The settings asked for; the database PostgreSQL when it answers, unless named."""
    database = args.database
    if database is None:
        database = "postgresql" if postgresql_answers() else "sqlite"
        why = "answers" if database == "postgresql" else "does not answer"
        _say(f"database: {database} (127.0.0.1:5432 {why}; --database to choose)")
    else:
        _say(f"database: {database}")
    setup = Setup(database, args.web_workers, args.worker_pool, args.worker_concurrency)
    pool, concurrency = TUTORIAL_POOL
    _say(
        f"web: {setup.web_workers} gunicorn sync workers per handler; end-to-end worker: ours "
        f"{setup.worker_pool} x{setup.worker_concurrency}, the tutorial's {pool} x{concurrency} "
        "(Celery's defaults: what a tutorial user runs)"
    )
    return setup


def main(argv: list[str] | None = None) -> int:
    args = arguments(argv)
    plan = PLANS["smoke" if args.smoke else "quick" if args.quick else "full"]
    overrides = {"events": args.events, "window": args.window}
    plan = dataclasses.replace(plan, **{k: v for k, v in overrides.items() if v is not None})
    parts = [p.strip() for p in args.only.split(",") if p.strip()]
    use_wrk = load.wrk_available() and not args.python_client
    if not load.wrk_available():
        _say(f"wrk not found, using the asyncio client instead ({load.INSTALL_WRK})")
    setup = _setup(args)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    results_dir = REPO / "bench" / "results"
    results_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="pipeline-bench-"))
    redis, url = start_redis(tmp)
    redis_url = url.rsplit("/", 1)[0]  # a Redis server; each part takes its own database
    ctx = Context(
        plan,
        tmp,
        redis_url,
        results_dir / stamp,
        setup,
        use_wrk=use_wrk,
        profile=args.profile,
        broker_pid=redis.pid,
    )
    results: dict[str, Any] = {
        "plan": dataclasses.asdict(plan),
        "setup": {**dataclasses.asdict(setup), "tutorial_worker": list(TUTORIAL_POOL)},
        "started": stamp,
    }
    started = time.monotonic()
    try:
        results["fsync_ms"] = fsync_ms(tmp)
        _run_parts(ctx, parts, results, _ingest_databases(args, setup))
    finally:
        redis.stop()
        ctx.close()
        if args.keep:
            _say(f"process logs kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    results["seconds"] = round(time.monotonic() - started, 1)
    results["phases"] = PHASES
    results["machine"] = report.machine()
    results["targets"] = report.targets(results)
    path = results_dir / f"{stamp}.json"
    path.write_text(json.dumps(results, indent=2) + "\n")
    print(report.render(results))
    print(f"\n{plan.name} run in {results['seconds']:.0f} s; results in {path.relative_to(REPO)}")
    return 0


def _run_parts(ctx: Context, parts: list[str], out: dict[str, Any], ingest_on: list[str]) -> None:
    handlers, sizes = "ingest" in parts, "size" in parts
    if handlers:
        out["ingest"] = {"generator": load.generator_name(ctx.use_wrk), "body_bytes": BODY_BYTES}
        out["ingest"]["ceilings"] = _timed("ceilings", lambda: ingest.ceilings(ctx))
        out["ingest"]["databases"] = {}
    # The handlers on every database of `ingest_on`; the table size on the run's own.
    for backend in ingest_on if handlers else [ctx.setup.database]:
        fill = sizes and backend == ctx.setup.database
        if not (handlers or fill):
            continue
        pick = functools.partial(ingest.contenders, ctx, handlers, fill, backend)
        chosen = _timed(f"databases ({backend})", pick)
        measure = functools.partial(ingest.side_by_side, ctx, chosen)
        measured = _timed(f"ingest side by side ({backend})", measure)
        if handlers:
            by_name = {name: measured[name] for name in ingest.HANDLERS}
            out["ingest"]["databases"][backend] = by_name
        if fill:
            out["table_size"] = {backend: _sizes(ctx, measured)}
        ctx.close()  # this backend's ingest databases, before the disk is measured again
    if "prune" in parts:
        out["prune"] = _timed("prune", lambda: prune.prune_part(ctx))
        ctx.close()  # its database
    if "console" in parts:
        out["console"] = _timed("console pages", lambda: console.console_part(ctx))
    if "e2e" in parts:
        out["e2e"] = {}
        for system in ("ours", "tutorial"):
            out["e2e"][system] = _timed(
                f"end to end ({system})", functools.partial(e2e.end_to_end, ctx, system)
            )
    if "speed" in parts:
        ctx.close()  # the end-to-end databases
        out["speed"] = _timed("end to end at full speed", lambda: speed.speed_part(ctx))
    if "scale" in parts:
        out["scale"] = _timed("scale", lambda: scale.scale_part(ctx))
    if "live" in parts:
        ctx.close()  # the end-to-end databases
        out["live"] = _timed("live updates", lambda: live.live(ctx))


def _sizes(ctx: Context, measured: dict[str, Any]) -> dict[str, Any]:
    return {"0": measured["ours"], str(ctx.plan.fill): measured[ingest.filled(ctx)]}


PHASES: list[dict[str, Any]] = []  # what _timed saw, for the JSON


def _timed(what: str, work: Callable[[], Any]) -> Any:
    """Run one part, saying how long it took and how busy the machine was meanwhile."""
    started, before = time.monotonic(), round(os.getloadavg()[0], 2)
    _say(f"{what} ... (load average {before})")
    value = work()
    seconds, after = round(time.monotonic() - started, 1), round(os.getloadavg()[0], 2)
    _say(f"{what}: {seconds:.0f} s (load average {after})")
    PHASES.append({"part": what, "seconds": seconds, "load_before": before, "load_after": after})
    return value


def _say(text: str) -> None:
    print(f"[bench] {text}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
