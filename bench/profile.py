"""Where the time goes: py-spy sampling our web's (or worker's) processes under load (wall
time: --idle keeps samples waiting on a lock, a disk or a socket), reduced to the frames
with the most own time and our own functions with the most total time."""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipeline.dev.procs import BIN, Proc

TOP = 10
# The frame a process is in while it works on something, not waiting for work.
WEB_HANDLING = "SyncWorker.handle ("  # gunicorn's sync worker, from accept to close
TASK_RUNNING = "run_listener (pipeline/tasks.py)"  # one of our Celery tasks


def py_spy() -> str | None:
    local = BIN / "py-spy"
    return str(local) if local.exists() else shutil.which("py-spy")


def profile_while(
    proc: Proc, out: Path, busy: str, work: Callable[[], dict[str, Any]]
) -> dict[str, Any]:
    """Sample `proc` and its children while `work()` loads it; stacks go to `out`, the
    summary counts the samples with a frame containing `busy`."""
    program = py_spy()
    if program is None:
        return {"skipped": "py-spy is not installed: .venv/bin/pip install py-spy"}
    argv = [
        program,
        "record",
        "--pid",
        str(proc.pid),
        "--subprocesses",
        "--rate",
        "200",
        "--nonblocking",
        "--idle",
        "--format",
        "raw",
        "--output",
        str(out),
    ]
    spy = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    time.sleep(1.0)  # let it attach to every worker before the load starts
    run = work()
    spy.send_signal(signal.SIGINT)  # py-spy writes its output on Ctrl-C
    _, err = spy.communicate(timeout=60)
    if not out.exists():
        return {"skipped": f"py-spy wrote nothing: {err.decode(errors='replace')[-500:]}"}
    stacks = busy_only(read_stacks(out), busy)
    return {
        "stacks_file": str(out),
        "run_while_profiled": run,
        "samples": sum(stacks.values()),
        "own_time": top_own(stacks),
        "ours_total_time": top_total(stacks, ("(pipeline/", "(listeners/")),
    }


def read_stacks(path: Path) -> Counter[tuple[str, ...]]:
    """Collapsed stacks (`outer;...;inner count`), line numbers dropped from frames."""
    stacks: Counter[tuple[str, ...]] = Counter()
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            # --subprocesses prefixes each stack with its processes (master, then worker).
            frames = [f for f in stack.split(";") if not f.startswith("process ")]
            stacks[tuple(_frame(f) for f in frames)] += int(count)
    return stacks


def _frame(frame: str) -> str:
    # "send_task (celery/app/base.py:801)" -> "send_task (celery/app/base.py)"
    frame = re.sub(r":\d+\)$", ")", frame.strip())
    return re.sub(r"\(/.*?/site-packages/", "(", frame)


def busy_only(stacks: Counter[tuple[str, ...]], busy: str) -> Counter[tuple[str, ...]]:
    """The samples taken while a process worked: not a parent, not a child waiting for the
    next connection or task (time spent elsewhere, not by the code measured)."""
    working = Counter({frames: n for frames, n in stacks.items() if any(busy in f for f in frames)})
    return working or stacks


def top_own(stacks: Counter[tuple[str, ...]]) -> list[dict[str, Any]]:
    """The frames at the top of the most samples: where the CPU actually is."""
    own: Counter[str] = Counter()
    for frames, count in stacks.items():
        if frames:
            own[frames[-1]] += count
    return _ranked(own, sum(stacks.values()))


def top_total(stacks: Counter[tuple[str, ...]], markers: tuple[str, ...]) -> list[dict[str, Any]]:
    """Our functions by the share of samples they are anywhere in (themselves + callees)."""
    total: Counter[str] = Counter()
    for frames, count in stacks.items():
        for frame in set(frames):
            if any(marker in frame for marker in markers):
                total[frame] += count
    return _ranked(total, sum(stacks.values()))


def _ranked(counts: Counter[str], samples: int) -> list[dict[str, Any]]:
    return [
        {"frame": frame, "samples": n, "percent": round(100 * n / max(samples, 1), 1)}
        for frame, n in counts.most_common(TOP)
    ]
