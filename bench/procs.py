"""What bench/ adds to the shared harness (pipeline/dev/procs.py): every contender's web
and worker started alike (ours from the Procfile, as it ships), and the peak memory and
CPU time of their processes, read from /proc."""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Mapping
from pathlib import Path

from pipeline.dev.procfile import start_process, web_env
from pipeline.dev.procs import REPO, Proc, free_port, http_answers, wait_for

HANDLERS = {
    "ours": "pipeline.web:create_app()",
    "tutorial": "bench.tutorial_app:create_app()",
    "bare": "bench.tutorial_app:create_bare_app()",
}
WORKERS = {"ours": "pipeline.worker", "tutorial": "bench.tutorial_tasks"}


def environment(env: Mapping[str, str]) -> dict[str, str]:
    """A contender's environment: ours plus `env`, with the checkout importable (bench.*)."""
    return {**os.environ, "PYTHONPATH": str(REPO), **env}


def start_web(
    app: str, env: Mapping[str, str], logs: Path, name: str, workers: int
) -> tuple[Proc, int]:
    """A gunicorn with `workers` sync workers on a free port, once every worker answers:
    ours is the Procfile's `web`; any other app gets the same settings on its command line."""
    port = free_port()
    env = environment({**env, **web_env(port, workers)})
    if app == HANDLERS["ours"]:
        proc = start_process("web", env, logs, label=name)
    else:
        argv = [
            "gunicorn",
            "--workers",
            str(workers),
            "--worker-class",
            "sync",
            "--timeout",
            "30",
            "--graceful-timeout",
            "20",
            "--no-control-socket",
            app,
        ]
        proc = Proc(name, argv, env, logs)  # not from the checkout: no gunicorn.conf.py
    wait_for(
        http_answers(f"http://127.0.0.1:{port}/healthz"),
        what=f"{name} to answer",
        timeout=30,
        proc=proc,
    )
    # Every worker booted, so the first measured requests do not pay for an import.
    wait_for(
        lambda: len(proc.children()) >= workers, what="gunicorn workers", timeout=30, proc=proc
    )
    return proc, port


def start_worker(
    system: str, env: Mapping[str, str], logs: Path, name: str, pool: str, concurrency: int
) -> Proc:
    """`system`'s Celery worker with `pool` and `concurrency`, once it is ready: ours is the
    Procfile's `worker`, the tutorial's the same options on its own app."""
    env = environment({**env, "WORKER_CONCURRENCY": str(concurrency)})
    extra = ["--pool", pool, "-n", f"{name}@%h"]
    if system == "ours":
        proc = start_process("worker", env, logs, *extra, label=name)
    else:
        argv = celery_worker(WORKERS[system], pool, concurrency, "INFO", f"{name}@%h")
        proc = Proc(name, argv, env, logs, cwd=REPO)
    wait_for(lambda: " ready." in proc.log(), what=f"{name} ready", timeout=60, proc=proc)
    return proc


def celery_worker(app: str, pool: str, concurrency: int, loglevel: str, name: str) -> list[str]:
    """`celery worker` on `app` with the Procfile's worker options (no mingle, no gossip)."""
    return [
        "celery",
        "-A",
        app,
        "worker",
        "--pool",
        pool,
        "--concurrency",
        str(concurrency),
        "--loglevel",
        loglevel,
        "--without-mingle",
        "--without-gossip",
        "-n",
        name,
    ]


def start_emulator(env: Mapping[str, str], logs: Path, name: str) -> tuple[Proc, int]:
    """`pipeline emulator` on a free port: Ittybit's API, delivering to each job's webhook_url."""
    port = free_port()
    proc = Proc(name, ["pipeline", "emulator", "--port", str(port)], environment(env), logs)
    wait_for(
        http_answers(f"http://127.0.0.1:{port}/_emulator/jobs"),
        what="the emulator",
        timeout=30,
        proc=proc,
    )
    return proc, port


def peak_rss_mb(proc: Proc) -> dict[str, float]:
    """Peak resident memory (VmHWM) of this process and of its children, in MiB."""
    peaks = [_vm_hwm_kb(pid) for pid in proc.tree()]
    known = [kb for kb in peaks if kb is not None]
    return {
        "processes": len(known),
        "parent_mb": round((peaks[0] or 0) / 1024, 1),
        "largest_mb": round(max(known, default=0) / 1024, 1),
        "total_mb": round(sum(known) / 1024, 1),
    }


def _vm_hwm_kb(pid: int) -> int | None:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return None


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
CpuSnapshot = dict[str, dict[int, float]]  # group -> pid -> CPU seconds used so far


def cpu_snapshot(groups: Mapping[str, Iterable[int]]) -> CpuSnapshot:
    """User + system CPU seconds each live process of each group has used so far (with
    its children that exited)."""
    return {name: {pid: _cpu_seconds(pid) for pid in pids} for name, pids in groups.items()}


def cpu_used(before: CpuSnapshot, after: CpuSnapshot) -> dict[str, float]:
    """CPU seconds per group between two snapshots; a process new in `after` counts whole.
    One that exited in between is missed (its CPU went to a parent outside the group)."""
    return {
        name: sum(cpu - before.get(name, {}).get(pid, 0.0) for pid, cpu in pids.items())
        for name, pids in after.items()
    }


def cpu_ms_per(used: Mapping[str, float], count: int) -> dict[str, float]:
    """CPU milliseconds per request or event, per group and in total."""
    per = {name: round(1000 * seconds / max(count, 1), 2) for name, seconds in used.items()}
    return {"total": round(sum(per.values()), 2), **per}


def _cpu_seconds(pid: int) -> float:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    # utime, stime, cutime, cstime: fields 14-17, counted after the ")" ending the name.
    fields = stat.rsplit(")", 1)[1].split()
    return sum(int(f) for f in fields[11:15]) / CLOCK_TICKS


def fsync_ms(folder: Path, rounds: int = 100) -> dict[str, float]:
    """How long the disk takes to make a small write durable: what bounds a SQLite commit."""
    path = folder / "fsync-probe"
    times = []
    with path.open("wb") as probe:
        for _ in range(rounds):
            probe.write(b"x" * 4096)
            probe.flush()
            started = time.perf_counter()
            os.fsync(probe.fileno())
            times.append((time.perf_counter() - started) * 1000)
    path.unlink()
    times.sort()
    return {"p50": round(times[len(times) // 2], 3), "p99": round(times[-1 - len(times) // 100], 3)}
