"""Retention beside the webhook: our endpoint's ingest with a table of old finished events,
without a prune and while `pipeline prune` deletes them.

One database of the run's backend gets `plan.prune_events` events received AGE_DAYS ago,
each with a succeeded run of each of our three listeners (SQL statements, as the size part
fills its table), then vacuumed, analyzed and checkpointed, as rows that old would be. Our
web (the Procfile's, no worker: as in ingest) serves it. Ingest (wrk, as ingest.py measures
it) at each concurrency, `plan.rounds` rounds of each phase, the best round kept:

- *without*: the old rows there, nothing pruning;
- *during*: `pipeline prune` (bench/prune_timed.py: the command as it ships, noting when
  each batch committed) runs as a subprocess with the web's environment (retention:
  the defaults); the load starts once it deletes, and a run counts only if its window lies
  inside the deleting (one that does not is listed apart);
- *after*: the old rows gone, nothing pruning (drift: the same web a minute later).

Then what the prune took: in all, its count, its deleting, rows/s, each batch's time
(with the load on and without), and on PostgreSQL the lock waits seen meanwhile.
"""

from __future__ import annotations

import itertools
import os
import re
import statistics
import subprocess
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, text

from bench import load
from bench.context import Context, Database
from bench.live import _machine_busy
from bench.payloads import deliveries, fill_events, fill_runs, write_wrk_file
from bench.procs import (
    HANDLERS,
    cpu_ms_per,
    cpu_snapshot,
    cpu_used,
    environment,
    peak_rss_mb,
    start_web,
)
from pipeline.dev.procs import REPO, Proc

AGE_DAYS = 10.0  # how long ago the stored events were received
RETAIN_SUCCEEDED_DAYS = 7.0  # the prune's retention (the default): every stored event goes
RETAIN_FAILED_DAYS = 30.0
BATCH = 500  # events per transaction: the command's default
LISTENERS = ("generate_thumbnail", "notify_user", "update_media_record")  # listeners/
BODIES_PER_SECOND = 3000  # above what our endpoint serves here, so none wraps
APP_NAME = "bench-prune"  # the prune's PostgreSQL backends, told from the web's
SAMPLER_NAME = "bench-sampler"
PHASES = ("without", "during", "after")
COUNT_WAIT = 5.0  # s after its start: the load begins then if no batch is in yet


def prune_part(ctx: Context) -> dict[str, Any]:
    plan = ctx.plan
    database = ctx.fresh_database()
    result: dict[str, Any] = {
        "database": ctx.setup.database,
        "events": plan.prune_events,
        "runs_per_event": len(LISTENERS),
        "age_days": AGE_DAYS,
        "retain_succeeded_days": RETAIN_SUCCEEDED_DAYS,
        "batch": BATCH,
        "web_workers": ctx.setup.web_workers,
        "seconds_per_run": plan.seconds / plan.rounds,
        "server": _server_settings(database.engine),
    }
    result["fill_s"] = _fill(database.engine, plan.prune_events)
    old = _max_id(database.engine)
    env = ctx.env(database, ctx.fresh_broker())
    web, port = start_web(HANDLERS["ours"], env, ctx.logs, "prune-web", ctx.setup.web_workers)
    url = f"http://127.0.0.1:{port}/webhooks/ittybit"
    meter = Meter(ctx, database, web, url, old)
    runs: dict[str, dict[str, Any]] = {phase: {} for phase in PHASES}
    try:
        meter.run("warm", 16, plan.warmup)
        _rounds(ctx, meter, "without", runs["without"])
        found, during = _during_prune(ctx, database, meter, env)
        result.update(found)
        for run in during:
            if run["inside_prune"]:
                _keep_best(runs["during"], str(run["concurrency"]), run)
        result["during_rounds"] = [
            {k: run[k] for k in ("concurrency", "rps", "inside_prune", "prune_step")}
            for run in during
        ]
        _rounds(ctx, meter, "after", runs["after"])
        result["left"] = _left(database.engine, old)
        result["peak_rss"] = peak_rss_mb(web)
        result["problems_in_logs"] = _log_problems(web)
    finally:
        web.stop()
    result["runs"] = runs
    return result


def _rounds(ctx: Context, meter: Meter, phase: str, into: dict[str, Any]) -> None:
    seconds = ctx.plan.seconds / ctx.plan.rounds
    for round_ in range(ctx.plan.rounds):
        for concurrency in ctx.plan.concurrencies:
            run = meter.run(f"{phase}_c{concurrency}_{round_}", concurrency, seconds)
            _keep_best(into, str(concurrency), run)


def _during_prune(
    ctx: Context, database: Database, meter: Meter, env: dict[str, str]
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Start the prune; once it deletes, the load rounds; then let it finish, or stop it
    once it has run `plan.prune_limit` s in all. What the prune took (and the lock waits
    seen meanwhile), and the load runs, each marked whether its window lay inside the
    prune's deleting."""
    timings = ctx.tmp / "prune-timings.txt"
    argv = ["python", "-m", "bench.prune_timed", str(timings), "prune", "--batch", str(BATCH)]
    prune_env = {
        **env,
        "RETAIN_SUCCEEDED_DAYS": f"{RETAIN_SUCCEEDED_DAYS:g}",
        "RETAIN_FAILED_DAYS": f"{RETAIN_FAILED_DAYS:g}",
        "PGAPPNAME": APP_NAME,
    }
    sampler = LockSampler(database.url) if database.url.startswith("postgresql") else None
    spawned = time.monotonic()
    limit = spawned + ctx.plan.prune_limit
    proc = Proc("prune", argv, environment(prune_env), ctx.logs, cwd=REPO)
    meter.prune = proc
    collected: list[dict[str, Any]] = []
    stopped = False
    left_running: dict[str, Any] = {}
    try:
        # The load begins once the first batch is in, or while the count still runs.
        load_from = spawned + COUNT_WAIT
        while not _deleting(timings) and proc.alive and time.monotonic() < load_from:
            time.sleep(0.02)
        seconds = ctx.plan.seconds / ctx.plan.rounds
        for round_ in range(ctx.plan.rounds):
            for concurrency in ctx.plan.concurrencies:
                if proc.alive:
                    label = f"during_c{concurrency}_{round_}"
                    collected.append(meter.run(label, concurrency, seconds))
        try:
            proc.popen.wait(max(0.1, limit - time.monotonic()))
        except subprocess.TimeoutExpired:
            stopped = True  # SIGTERM below: its batch in flight is rolled back
        exited = time.monotonic()
    finally:
        proc.stop()
        meter.prune = None
        if stopped:
            left_running = _end_backends(database.engine)
        locks = sampler.stop() if sampler else None
    steps = _steps(_read(timings), exited)
    summary = _summary(ctx, proc, steps, spawned, exited, collected)
    summary["stopped_at_limit"] = stopped
    if left_running:
        summary["backend_after_stop"] = left_running
    for run in collected:
        opened, closed = run["window"]
        run["inside_prune"] = spawned <= opened and closed <= exited
        began = steps["start"] or exited  # its deleting
        step = "deleting" if opened >= began else "count" if closed <= began else "count+deleting"
        run["prune_step"] = step
    found: dict[str, Any] = {"prune": summary}
    if locks is not None:
        found["pg_activity"] = locks
    return found, collected


def _end_backends(engine: Engine) -> dict[str, Any]:
    """After the prune's process was stopped: its PostgreSQL backends still running a
    statement (the server notices a gone client only when it next writes to it), how long
    that statement had run; then ended (pg_terminate_backend)."""
    if engine.dialect.name != "postgresql":
        return {}
    time.sleep(1.0)
    query = text(
        "SELECT pid, extract(epoch FROM clock_timestamp() - query_start), left(query, 60)"
        " FROM pg_stat_activity WHERE datname = current_database()"
        " AND application_name = :name AND state = 'active'"
    )
    with engine.connect() as conn:
        rows = conn.execute(query, {"name": APP_NAME}).all()
        for pid, _, _ in rows:
            conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
    if not rows:
        return {}
    return {
        "still_active_1s_after": len(rows),
        "statement_s": round(max(float(r[1] or 0) for r in rows), 1),
        "statement": rows[0][2],
    }


def _deleting(timings: Path) -> bool:
    """The prune has committed its first batch (or found nothing to delete)."""
    return re.search(r"^(batch|end) .*\n", _read(timings), re.MULTILINE) is not None


def _steps(noted: str, exited: float) -> dict[str, Any]:
    """What prune_timed noted: when the deleting began and ended (or the prune was
    stopped), and (time, events so far, runs so far) after each batch."""
    steps: dict[str, Any] = {"start": 0.0, "end": exited, "batches": []}
    for line in noted.splitlines():
        kind, *values = line.split()
        if kind == "batch" and len(values) == 3:
            steps["batches"].append((float(values[0]), int(values[1]), int(values[2])))
        elif kind in ("start", "end") and values:
            steps[kind] = float(values[0])
    return steps


def _summary(
    ctx: Context,
    proc: Proc,
    steps: dict[str, Any],
    spawned: float,
    exited: float,
    runs: list[dict[str, Any]],
) -> dict[str, Any]:
    """The prune's times, rate and batch latency; which batches committed under load."""
    batches, start = steps["batches"], steps["start"]
    output = proc.log().strip().splitlines()
    said = next((line for line in reversed(output) if line.startswith("deleted ")), "")
    last_at, events, runs_deleted = batches[-1] if batches else (start, 0, 0)
    deleting = last_at - start if batches else 0.0  # to the last batch committed
    ends = [start, *(b[0] for b in batches)]
    windows = [r["window"] for r in runs]
    loaded, idle = [], []
    for began, done in itertools.pairwise(ends):
        under = any(w[0] <= began and done <= w[1] for w in windows)
        (loaded if under else idle).append((done - began) * 1000)
    expected = ctx.plan.prune_events
    count_s = start - spawned if start else None
    projected = (
        round((count_s or 0) + deleting * expected / events, 1)
        if events and events < expected
        else None
    )
    return {
        "command": f"pipeline prune --batch {BATCH} (bench/prune_timed.py)",
        "exit_code": proc.popen.returncode,
        "said": said or "\n".join(output[-3:]),
        "limit_s": ctx.plan.prune_limit,
        "events": events,
        "runs": runs_deleted,
        "seconds": round(exited - spawned, 2),  # start of the process to its exit or stop
        "count_s": round(count_s, 2) if count_s is not None else None,  # python + count()
        "deleting_s": round(deleting, 2),
        "events_per_s": round(events / deleting) if deleting else None,
        "rows_per_s": round((events + runs_deleted) / deleting) if deleting else None,
        "projected_total_s": projected,  # all `expected` events at this rate, when stopped
        "batches": len(batches),
        "batch_ms": _percentiles([*loaded, *idle]),
        "batch_ms_under_load": _percentiles(loaded),
        "batch_ms_no_load": _percentiles(idle),
    }


def _percentiles(ms: list[float]) -> dict[str, float] | None:
    if not ms:
        return None
    ms = sorted(ms)
    return {
        "n": len(ms),
        "p50": round(statistics.median(ms), 1),
        "p99": round(ms[min(len(ms) - 1, int(len(ms) * 0.99))], 1),
        "max": round(ms[-1], 1),
    }


class Meter:
    """One load run at a time against our web (fresh deliveries, prepared before its
    window opens), with the CPU each side used and the events it stored."""

    def __init__(self, ctx: Context, database: Database, web: Proc, url: str, old: int) -> None:
        self.ctx, self.database, self.web, self.url, self.old = ctx, database, web, url, old
        self.prune: Proc | None = None

    def run(self, label: str, concurrency: int, seconds: float) -> dict[str, Any]:
        ctx = self.ctx
        count = int(seconds * BODIES_PER_SECOND) + 100
        batch = deliveries(f"task_{label}", count, ctx.secret)
        bodies = write_wrk_file(ctx.tmp / f"bodies-{label}.txt", batch)
        stored, cpu = self._stored(), cpu_snapshot(self._groups())
        opened, machine = time.monotonic(), _machine_busy()
        result = load.run(self.url, batch, bodies, concurrency, seconds, ctx.use_wrk)
        closed, busy = time.monotonic(), _machine_busy() - machine
        used = cpu_used(cpu, cpu_snapshot(self._groups()))
        bodies.unlink()
        run = result.summary()
        run["window"] = [opened, closed]
        prune_cpu = used.pop("prune", 0.0)
        run["cpu_ms_per_request"] = cpu_ms_per(used, run["requests"])
        run["prune_cpu_s"] = round(prune_cpu, 2)
        # The generator, the bench, a parallel query's workers, anyone else's processes.
        run["cpu_s_elsewhere"] = round(max(0.0, busy - sum(used.values()) - prune_cpu), 2)
        run["stored"] = self._stored() - stored
        return run

    def _stored(self) -> int:
        """Events stored since the fill (the prune takes the old ones meanwhile)."""
        with self.database.engine.connect() as conn:
            query = text("SELECT count(*) FROM webhook_events WHERE id > :old")
            return int(conn.execute(query, {"old": self.old}).scalar_one())

    def _groups(self) -> dict[str, list[int]]:
        """The web, the database's backends serving it, our Redis; the prune (its process
        and its backends) apart."""
        backends = _backends(self.database.engine)
        prune = self.prune.tree() if self.prune and self.prune.alive else []
        return {
            "web": self.web.tree(),
            "database": [pid for pid, name in backends.items() if not name.startswith("bench-")],
            "broker": [self.ctx.broker_pid] if self.ctx.broker_pid else [],
            "prune": prune + [pid for pid, name in backends.items() if name == APP_NAME],
        }


def _backends(engine: Engine) -> dict[int, str]:
    """PostgreSQL backends of this database but the asking one, with their application
    names; none on SQLite."""
    if engine.dialect.name != "postgresql":
        return {}
    query = (
        "SELECT pid, application_name FROM pg_stat_activity"
        " WHERE datname = current_database() AND pid <> pg_backend_pid()"
    )
    with engine.connect() as conn:
        return {int(pid): name or "" for pid, name in conn.execute(text(query))}


class LockSampler:
    """Every SAMPLE_EVERY s, PostgreSQL's pg_stat_activity for the database: the backends
    waiting for a lock (and how long the longest had been in its statement), and the
    parallel workers at work (whose CPU the groups miss: they come and go)."""

    SAMPLE_EVERY = 0.2

    def __init__(self, url: str) -> None:
        self.engine = create_engine(url, connect_args={"application_name": SAMPLER_NAME})
        self.samples = self.waiting = self.most = self.parallel = self.most_parallel = 0
        self.longest_ms = 0.0
        self.by: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="lock-sampler", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        query = text(
            "SELECT application_name, backend_type, wait_event_type,"
            " extract(epoch FROM clock_timestamp() - query_start)"
            " FROM pg_stat_activity WHERE datname = current_database() AND state = 'active'"
            " AND pid <> pg_backend_pid()"
        )
        with self.engine.connect() as conn:
            while not self._stop.wait(self.SAMPLE_EVERY):
                rows = conn.execute(query).all()
                conn.rollback()
                self.samples += 1
                waiting = [r for r in rows if r[2] == "Lock"]
                workers = sum(r[1] == "parallel worker" for r in rows)
                self.waiting += bool(waiting)
                self.most = max(self.most, len(waiting))
                self.parallel += bool(workers)
                self.most_parallel = max(self.most_parallel, workers)
                for name, _, _, waited in waiting:
                    who = "prune" if name == APP_NAME else "web"
                    self.by[who] = self.by.get(who, 0) + 1
                    self.longest_ms = max(self.longest_ms, float(waited or 0) * 1000)

    def stop(self) -> dict[str, Any]:
        self._stop.set()
        self._thread.join(5)
        self.engine.dispose()
        return {
            "every_s": self.SAMPLE_EVERY,
            "samples": self.samples,
            "samples_with_waiters": self.waiting,
            "most_at_once": self.most,
            "waiters_seen": self.by,
            "longest_statement_ms": round(self.longest_ms, 1),
            "samples_with_parallel_workers": self.parallel,
            "most_parallel_workers": self.most_parallel,
        }


def _fill(engine: Engine, count: int) -> dict[str, float]:
    """`count` events received AGE_DAYS ago and their succeeded runs, then settled as old
    rows are: vacuumed and analyzed (PostgreSQL), written out (a checkpoint, a sync)."""
    received = datetime.now(UTC) - timedelta(days=AGE_DAYS)
    took = {"events": fill_events(engine, count, received), "runs": fill_runs(engine, LISTENERS)}
    started = time.monotonic()
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(text("VACUUM (ANALYZE) webhook_events, listener_runs"))
            conn.execute(text("CHECKPOINT"))
        else:
            conn.execute(text("PRAGMA wal_checkpoint(TRUNCATE)"))
    os.sync()
    took["settle"] = time.monotonic() - started
    return {k: round(v, 1) for k, v in took.items()}


def _max_id(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text("SELECT coalesce(max(id), 0) FROM webhook_events")).one()[0])


def _left(engine: Engine, old: int) -> dict[str, int]:
    """What is there after the prune: old events and runs (none expected), and the events
    stored meanwhile with their runs (all expected: each is recent, its runs pending)."""
    queries = {
        "old_events": "SELECT count(*) FROM webhook_events WHERE id <= :old",
        "old_runs": "SELECT count(*) FROM listener_runs WHERE event_id <= :old",
        "new_events": "SELECT count(*) FROM webhook_events WHERE id > :old",
        "new_runs": "SELECT count(*) FROM listener_runs WHERE event_id > :old",
    }
    with engine.connect() as conn:
        return {
            key: int(conn.execute(text(query), {"old": old}).scalar_one())
            for key, query in queries.items()
        }


def _server_settings(engine: Engine) -> dict[str, str]:
    if engine.dialect.name != "postgresql":
        return {}
    with engine.connect() as conn:
        return {
            name: str(conn.execute(text(f"SHOW {name}")).scalar_one())
            for name in ("autovacuum", "shared_buffers", "max_wal_size", "synchronous_commit")
        }


def _keep_best(runs: dict[str, Any], key: str, run: dict[str, Any]) -> None:
    """The round with the most requests/s stands for the concurrency; all rounds listed."""
    rounds = [*runs.get(key, {}).get("rounds_rps", []), run["rps"]]
    if key not in runs or run["rps"] > runs[key]["rps"]:
        runs[key] = run
    runs[key]["rounds_rps"] = rounds


def _log_problems(proc: Proc) -> list[str]:
    markers = ("Traceback", "ERROR", "WARNING", "CRITICAL", "Exception")
    lines = proc.log(proc.log_start).splitlines()
    return [line for line in lines if any(m in line for m in markers)][:10]


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""
