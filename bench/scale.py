"""The scale table (issue 13, `--only scale`): end to end as bench/speed.py measures it
(ours as the Procfile ships it, bursts of `plan.speed_events` waited out, the light Ittybit
stand-in), on PostgreSQL:

- *one host*: the web and 1, 2 or 4 `worker` processes on loopback, the machine's
  PostgreSQL (each worker process is the Procfile's: prefork x4);
- *a network hop*: a PostgreSQL of the bench's own (fsync on, as a production server)
  with Redis and the stand-in on this machine, first with the web and one worker on
  loopback, then with the web on one host and the worker on another (network namespaces
  on a bridge: every query, message and call crosses a veth pair and the bridge).

Where the curve bends and why is for bench/README.md, from the CPU split of each row.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable
from typing import Any

import psycopg

from bench import speed
from bench.context import Context, Database, postgresql_answers
from bench.procs import Proc, environment
from bench.tutorial_tasks import bench_metadata
from pipeline.dev.procfile import procfile_command
from pipeline.dev.procs import REPO, free_port, http_answers, wait_for, worker_ready
from pipeline.dev.servers import start_redis
from pipeline.migrate import upgrade

sys.path.insert(0, str(REPO / "tests"))  # the suites' own servers and hosts, reused here
from faults.netns import Network, Unavailable
from integration.procs import PostgresServer

WORKER_COUNTS = (1, 2, 4)


def scale_part(ctx: Context) -> dict[str, Any]:
    if not postgresql_answers():
        return {"skipped": "PostgreSQL does not answer on 127.0.0.1:5432"}
    rows: dict[str, Any] = {}
    for count in WORKER_COUNTS:
        result = speed.burst(ctx, "postgresql", "ours", speed.SHIPPED, workers=count)
        rows[f"one host, {count} worker process{'es' if count > 1 else ''}"] = result
    rows.update(_across_a_hop(ctx))
    return {"rows": rows}


def _across_a_hop(ctx: Context) -> dict[str, Any]:
    try:
        network = Network(["web", "workers"])
    except Unavailable as exc:
        return {"two hosts": {"skipped": f"no network namespaces here ({exc})"}}
    with contextlib.ExitStack() as cleanup:
        cleanup.callback(network.close)
        gateway = network.gateway
        postgres = PostgresServer(ctx.logs, f"{gateway}/{network.subnet.prefixlen}", fsync=True)
        cleanup.callback(postgres.close)
        redis, redis_url = start_redis(ctx.logs, also_on=[gateway])
        cleanup.callback(redis.stop)
        broker = redis_url.replace("127.0.0.1", gateway)
        counted = ctx.broker_pid
        ctx.broker_pid = redis.pid  # this Redis's CPU is what the rows count
        cleanup.callback(setattr, ctx, "broker_pid", counted)
        rows = {}
        for label, split in (("own PostgreSQL, one host", False), ("two hosts", True)):
            database = _database(postgres, label)
            try:
                rows[f"{label}, 1 worker process"] = _hop_burst(
                    ctx, network, database, broker, split
                )
            finally:
                database.engine.dispose()
        return rows


def _database(postgres: PostgresServer, label: str) -> Database:
    name = "bench_split" if "two" in label else "bench_local"
    with contextlib.closing(_admin(postgres)) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    database = Database(f"{postgres.url}/{name}", lambda: None)
    upgrade(database.url)
    bench_metadata.create_all(database.engine)
    return database


def _admin(postgres: PostgresServer) -> psycopg.Connection[Any]:
    url = postgres.url.replace("postgresql+psycopg", "postgresql")
    return psycopg.connect(f"{url}/postgres", autocommit=True)


def _hop_burst(
    ctx: Context, network: Network, database: Database, broker: str, split: bool
) -> dict[str, Any]:
    """A burst with the web and one worker on loopback (`split` False) or on the two hosts,
    the database, Redis and the stand-in on this machine either way."""
    gateway = network.gateway
    here = gateway if split else "127.0.0.1"
    url = database.url.replace("127.0.0.1", here) if split else database.url
    env = ctx.env(database, broker if split else broker.replace(gateway, "127.0.0.1"))
    env["DATABASE_URL"] = url
    procs: dict[str, Proc] = {}
    try:
        procs["stub"], stub_port = speed.start_stub(env, ctx, "hop", host=here)
        env["ITTYBIT_API_URL"] = f"http://{here}:{stub_port}"
        web_host = network.hosts["web"] if split else None
        address = web_host.address if web_host else "127.0.0.1"
        port = free_port()
        env["PUBLIC_URL"] = f"http://{address}:{port}"
        web_env = {**env, "PORT": str(port), "WEB_CONCURRENCY": str(ctx.setup.web_workers)}
        if not split:
            web_env["GUNICORN_CMD_ARGS"] = f"--bind 127.0.0.1:{port}"
        procs["web"] = _start(ctx, "web", web_env, web_host.command if web_host else None)
        wait_for(
            http_answers(f"http://{address}:{port}/healthz"),
            what="the web",
            timeout=30,
            proc=procs["web"],
        )
        workers_host = network.hosts["workers"] if split else None
        worker_env = {k: v for k, v in env.items() if k not in ("WORKER_CONCURRENCY", "LOG_LEVEL")}
        procs["worker"] = _start(
            ctx,
            "worker",
            worker_env,
            workers_host.command if workers_host else None,
            "-n",
            f"hop-{'split' if split else 'local'}@%h",
        )
        wait_for(worker_ready(procs["worker"]), what="the worker", timeout=60, proc=procs["worker"])
        url = f"http://{address}:{port}/webhooks/ittybit"
        result = speed.timed_burst(ctx, database, procs, url, "ours")
    finally:
        for proc in reversed(procs.values()):
            proc.stop()
    speed.say(f"scale {'two hosts' if split else 'own PostgreSQL'}: {result['events_per_s']:g}/s")
    return result


def _start(
    ctx: Context,
    name: str,
    env: dict[str, str],
    inside: Callable[[list[str]], list[str]] | None,
    *extra: str,
) -> Proc:
    run_env = environment(env)
    for key in ("WORKER_CONCURRENCY", "LOG_LEVEL"):
        if key not in env:
            run_env.pop(key, None)
    argv = procfile_command(name, run_env, *extra)
    return Proc(f"scale-{name}", inside(argv) if inside else argv, run_env, ctx.logs, REPO)


def render(scale: dict[str, Any], table: Callable[[list[str], list[list[Any]]], str]) -> str:
    if "skipped" in scale:
        return f"SCALE: skipped ({scale['skipped']})"
    rows = []
    for label, row in scale["rows"].items():
        if "skipped" in row:
            rows.append([label, "-", "-", "-", row["skipped"]])
            continue
        cpu = row.get("cpu_ms_per_event") or {}
        groups: dict[str, float] = {}
        for name, ms in cpu.items():
            if name != "total":
                key = "workers" if name.startswith("worker") else name
                groups[key] = round(groups.get(key, 0.0) + ms, 2)
        split = ", ".join(f"{k} {v:g}" for k, v in groups.items())
        rows.append(
            [
                label,
                f"{row['events_per_s']:g}",
                f"{row['complete']}/{row['sent']}",
                f"{cpu.get('total', 0):g}" if cpu else "-",
                split,
            ]
        )
    return "SCALE (ours as shipped, PostgreSQL, bursts waited out; CPU ms per event)\n" + table(
        ["layout", "events/s", "done", "CPU ms/event", "by group"], rows
    )
