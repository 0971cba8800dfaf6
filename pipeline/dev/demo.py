"""`pipeline demo`: the whole cycle on embedded defaults, every process real.

Starts the Ittybit emulator and the Procfile's web, worker and relay over SQLite and
kombu's filesystem transport; submits a video that succeeds and one that fails, repeats a
delivery; shows each step as it happens; ends with tables of media, runs and
notifications and the live page of each media; stops everything it started (also on
Ctrl-C and SIGTERM). With `serve`, it then submits one slow video, prints its page's URL
to watch it finish live, and keeps serving until Ctrl-C.
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.live import Live

from pipeline.app.submit import submit_media
from pipeline.db import make_engine, make_sessionmaker
from pipeline.dev.demo_steps import Step, render, resend_first, story, summary
from pipeline.dev.procfile import start_process, web_env
from pipeline.dev.procs import Proc, free_port, http_answers, stop_all, wait_for
from pipeline.live.tokens import mint
from pipeline.migrate import upgrade
from pipeline.settings import ENVIRONMENT, Settings


@contextmanager
def processes() -> Iterator[list[Proc]]:
    """The demo's processes, stopped on the way out: at the end, on Ctrl-C or on SIGTERM."""
    started: list[Proc] = []
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        yield started
    finally:
        stop_all(started)
        signal.signal(signal.SIGTERM, previous)


def _interrupt(signum: int, frame: Any) -> None:
    # SIGTERM would end the demo at once, orphaning its processes; unwind like Ctrl-C.
    raise KeyboardInterrupt


DEMO_USER = "ada@clippable.app"
SLOW_JOB_SECONDS = 15.0  # --serve: time to open the page before the job finishes


def run_demo(workdir: Path, console: Console, timeout: float = 60.0, serve: bool = False) -> bool:
    """Run the demo in `workdir` (wiped first); True when every expected step happened."""
    shutil.rmtree(workdir, ignore_errors=True)
    logs = workdir / "logs"
    logs.mkdir(parents=True)
    web_port, emulator_port = free_port(), free_port()
    web_url, api_url = f"http://127.0.0.1:{web_port}", f"http://127.0.0.1:{emulator_port}"
    secret, api_key = secrets.token_hex(16), "demo-" + secrets.token_hex(8)
    env = {k: v for k, v in os.environ.items() if k not in ENVIRONMENT}
    env.update(
        PIPELINE_VAR_DIR=str(workdir),
        DATABASE_URL=f"sqlite:///{workdir / 'pipeline.db'}",
        ITTYBIT_WEBHOOK_SECRET=secret,
        LIVE_TOKEN_SECRET=secrets.token_hex(16),
        ITTYBIT_API_KEY=api_key,
        ITTYBIT_API_URL=api_url,
        PUBLIC_URL=web_url,
        RELAY_INTERVAL="1",
        REDELIVER_AFTER="5",
        WORKER_CONCURRENCY="2",
        **web_env(web_port, workers=2),
    )
    logging.getLogger("alembic").setLevel(logging.WARNING)  # its INFO lines are not the story
    upgrade(env["DATABASE_URL"])
    engine = make_engine(env["DATABASE_URL"])
    started = time.monotonic()
    with processes() as procs:
        emulator_argv = [
            "pipeline",
            "emulator",
            "--port",
            str(emulator_port),
            "--delay",
            "0.5",
            "--api-key",
            api_key,
            "--secret",
            secret,
        ]
        procs.append(Proc("emulator", emulator_argv, env, logs))
        procs += [start_process(name, env, logs) for name in ("web", "worker", "relay")]
        steps: list[Step] = []
        with Live(render(steps, started), console=console, refresh_per_second=10) as live:
            for url, proc in ((f"{web_url}/healthz", procs[1]), (f"{api_url}/jobs/-", procs[0])):
                wait_for(http_answers(url), what=f"{proc.name} to answer", timeout=20, proc=proc)
            steps.append(Step("web, worker, relay and emulator up", lambda: True))
            ok_id = submit(env, "https://clippable-app.com/projects/edit-38271.mov")
            bad_id = submit(
                env,
                "https://clippable-app.com/projects/edit-38272.mov",
                {"emulator": {"fail": "input has no video stream", "delay": 1.0}},
            )
            cycle, first = story(engine, ok_id, bad_id)
            repeated = Step(
                "a repeated delivery answered 'duplicate', nothing re-run", lambda: False
            )
            steps += [*cycle, repeated]
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and not all(s.done_at for s in steps):
                for proc in procs:
                    if not proc.alive:
                        raise RuntimeError(f"{proc.name} exited; see {proc.log_path}")
                for step in steps:
                    if step.done_at is None and step is not repeated and step.check():
                        step.done_at = time.monotonic()
                # Ittybit may deliver twice: once the first delivery landed, repeat it.
                if (
                    first.done_at
                    and not repeated.done_at
                    and resend_first(engine, web_url, secret, ok_id)
                ):
                    repeated.done_at = time.monotonic()
                live.update(render(steps, started))
                time.sleep(0.1)
            live.update(render(steps, started))
        console.print()
        console.print(summary(engine))
        finished = all(s.done_at for s in steps)
        verdict = "finished" if finished else "INCOMPLETE"
        console.print(f"demo {verdict} in {time.monotonic() - started:.1f}s; logs in {logs}")
        if serve:
            token = mint(DEMO_USER, (env["LIVE_TOKEN_SECRET"],), ttl=24 * 3600)
            for media_id in (ok_id, bad_id):
                page = f"{web_url}/media/{media_id}?token={token}"
                console.print(f"media {media_id}'s live page: {page}", soft_wrap=True)
            _serve(env, console, web_url, token, procs)
        else:
            console.print("`pipeline demo --serve` keeps it running, to watch a job live")
    return finished


def _serve(
    env: dict[str, str], console: Console, web_url: str, token: str, procs: list[Proc]
) -> None:
    """Submit a slow video, print its page, and serve until Ctrl-C (or a process dies)."""
    media_id = submit(
        env,
        "https://clippable-app.com/projects/edit-38273.mov",
        {"emulator": {"delay": SLOW_JOB_SECONDS}},
    )
    console.print(
        f"\nopen {web_url}/media/{media_id}?token={token} now: its job finishes in "
        f"{SLOW_JOB_SECONDS:g}s and the page follows without a reload. Ctrl-C stops the demo.",
        soft_wrap=True,
    )
    try:
        while all(proc.alive for proc in procs):
            time.sleep(0.5)
        console.print("a process exited; stopping")
    except KeyboardInterrupt:
        console.print("stopping")


def submit(env: dict[str, str], input_url: str, options: dict[str, Any] | None = None) -> int:
    """What `pipeline submit` does, in-process so the display starts at once."""
    settings = Settings.from_env(env)
    sessions = make_sessionmaker(make_engine(settings.database_url))
    media_id, _job = submit_media(
        settings, sessions, input_url, kind="video", email=DEMO_USER, options=options
    )
    return media_id
