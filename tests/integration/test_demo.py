"""`pipeline demo`, the README's first command after setup: on the embedded defaults (no
database, broker or Redis URL), every process real, and nothing left running when it ends,
whether it finishes or is interrupted."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.dev.procs import children, executable, wait_for

from .stack import pipeline_env

pytestmark = pytest.mark.integration


def demo_argv(workdir: Path) -> list[str]:
    return [executable("pipeline"), "demo", "--dir", str(workdir)]


def fresh_env() -> dict[str, str]:
    """This environment without DATABASE_URL, CELERY_BROKER_URL, REDIS_URL and the rest of ours."""
    env = pipeline_env()
    assert not {"DATABASE_URL", "CELERY_BROKER_URL", "REDIS_URL"} & set(env)
    return env


def started_by_demo(workdir: Path) -> dict[int, str]:
    """Live processes (pid: command line) of the demo run in `workdir`: itself (its
    `--dir` names it) and what it started, which inherit `PIPELINE_VAR_DIR=<workdir>`
    (forked children too) though their command lines do not name it."""
    marker = f"PIPELINE_VAR_DIR={workdir}".encode()
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:  # gone meanwhile, or not ours to read
            continue
        if marker in environ.split(b"\0") or str(workdir).encode() in cmdline:
            found[int(entry.name)] = cmdline.replace(b"\0", b" ").decode(errors="replace")
    return found


def nothing_left(workdir: Path) -> bool:
    # SIGKILL to a process group returns before its members are gone: allow a moment.
    with contextlib.suppress(TimeoutError):
        wait_for(lambda: not started_by_demo(workdir), timeout=2, what="the demo's processes end")
    return not started_by_demo(workdir)


def kill_leftovers(workdir: Path) -> None:
    """Clean up after a failing demo: the pids its run started, and only those."""
    for pid in started_by_demo(workdir):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


@pytest.fixture
def workdir(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "demo"
    yield path
    kill_leftovers(path)


def test_the_demo_shows_the_whole_cycle_exits_0_within_a_minute_and_leaves_nothing_running(
    workdir: Path,
) -> None:
    started = time.monotonic()

    done = subprocess.run(
        demo_argv(workdir),
        env=fresh_env(),
        cwd=workdir.parent,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    elapsed = time.monotonic() - started
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    assert "demo finished" in done.stdout
    assert elapsed < 60, f"the demo took {elapsed:.1f}s"
    assert nothing_left(workdir), started_by_demo(workdir)


@pytest.mark.parametrize(
    "signals",
    [["SIGINT"], ["SIGINT", "SIGINT"], ["SIGTERM"]],
    ids=["ctrl-c", "ctrl-c-twice", "sigterm"],
)
def test_an_interrupted_demo_stops_every_process_it_started_and_exits_nonzero_promptly(
    workdir: Path, signals: list[str]
) -> None:
    demo = subprocess.Popen(
        demo_argv(workdir),
        env=fresh_env(),
        cwd=workdir.parent,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        # Mid-way: every process is up and the jobs are being submitted.
        worker_log = workdir / "logs" / "worker.log"
        wait_for(
            lambda: worker_log.exists() and " ready." in worker_log.read_text(),
            timeout=60,
            what="the demo's worker is ready",
        )
        # Cheap to read, so the signal comes while the cycle still runs (about 2 s).
        assert len(children(demo.pid)) == 4  # emulator, web, worker, relay
        interrupted = time.monotonic()
        for name in signals:  # a second Ctrl-C comes while the first is still stopping things
            demo.send_signal(getattr(signal, name))
            time.sleep(0.5)

        returncode = demo.wait(timeout=30)

        elapsed = time.monotonic() - interrupted
        assert returncode != 0
        assert elapsed < 10, f"the demo took {elapsed:.1f}s to stop"
        assert nothing_left(workdir), started_by_demo(workdir)
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait()
