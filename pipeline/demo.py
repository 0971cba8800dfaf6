"""`pipeline demo`: the whole cycle on embedded defaults, every process real.

Starts the Ittybit emulator, the web (gunicorn), a Celery worker and the relay as
subprocesses over SQLite and kombu's filesystem transport; submits a video that succeeds,
one that fails, and sends a duplicate delivery; shows each step as it happens; ends with
tables of media, runs and notifications; stops everything it started (also on Ctrl-C).
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import requests
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from sqlalchemy import Engine, func, select

from pipeline.db import make_engine, make_sessionmaker
from pipeline.migrate import upgrade
from pipeline.models import ListenerRun, Media, Notification, WebhookEvent
from pipeline.settings import Settings
from pipeline.signing import sign
from pipeline.submit import submit_media

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Step:
    """One line of the progress display: done when `check` first returns true."""

    label: str
    check: Callable[[], bool]
    done_at: float | None = None


@dataclass
class Stack:
    """The processes the demo started, stopped in reverse order."""

    logs: Path
    procs: list[tuple[str, subprocess.Popen[bytes], IO[bytes]]] = field(default_factory=list)

    def start(self, name: str, argv: list[str], env: dict[str, str]) -> None:
        log = (self.logs / f"{name}.log").open("wb")
        proc = subprocess.Popen(
            argv, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        self.procs.append((name, proc, log))

    def check_alive(self) -> None:
        for name, proc, _ in self.procs:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"{name} exited with {proc.returncode}; see {self.logs / name}.log"
                )

    def stop(self) -> None:
        """SIGTERM to each; SIGKILL to the group of any left after 5 s or a second Ctrl-C."""
        for _, proc, _ in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 5
        try:
            for _, proc, _ in reversed(self.procs):
                with suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        finally:  # also when interrupted while waiting: nothing may outlive the demo
            for _, proc, log in self.procs:
                # Each leads its own session: the group holds its forked workers too.
                with suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                log.close()


@contextmanager
def running(logs: Path) -> Iterator[Stack]:
    """The demo's processes, stopped on the way out: at the end, on Ctrl-C or on SIGTERM."""
    stack = Stack(logs)
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        yield stack
    finally:
        stack.stop()
        signal.signal(signal.SIGTERM, previous)


def _interrupt(signum: int, frame: Any) -> None:
    # SIGTERM would end the demo at once, orphaning its processes; unwind like Ctrl-C.
    raise KeyboardInterrupt


def wait_for(url: str, timeout: float, stack: Stack) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        stack.check_alive()
        try:
            if requests.get(url, timeout=1).status_code < 500:
                return
        except requests.RequestException:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer within {timeout:g}s")


def render(steps: list[Step], started: float) -> Table:
    table = Table("", "step", "at", box=None, show_header=False)
    for step in steps:
        mark = "[green]✔[/]" if step.done_at else "[yellow]…[/]"
        at = f"+{step.done_at - started:5.2f}s" if step.done_at else ""
        table.add_row(mark, step.label, at)
    return table


def summary(engine: Engine) -> Group:
    media = Table("media", "status", "task", "output", "thumbnail", "error", title="media")
    runs = Table("run", "event", "listener", "state", "attempts", title="listener runs")
    notes = Table("notification", "media", "message", title="notifications")
    with engine.connect() as conn:
        for m in conn.execute(select(Media).order_by(Media.id)):
            media.add_row(
                str(m.id),
                m.status,
                m.task_id or "",
                _short(m.output_url),
                _short(m.thumbnail_url),
                m.error or "",
            )
        for r in conn.execute(select(ListenerRun).order_by(ListenerRun.id)):
            runs.add_row(str(r.id), str(r.event_id), r.listener, r.state, str(r.attempts))
        for n in conn.execute(select(Notification).order_by(Notification.id)):
            notes.add_row(str(n.id), str(n.media_id), n.message)
    return Group(media, runs, notes)


def _short(url: str | None) -> str:
    return "" if not url else url.rsplit("/", 1)[-1]


def run_demo(workdir: Path, console: Console, timeout: float = 60.0) -> bool:
    """Run the demo in `workdir` (wiped first); True when every expected step happened."""
    shutil.rmtree(workdir, ignore_errors=True)
    (workdir / "logs").mkdir(parents=True)
    web_port, emulator_port = free_port(), free_port()
    web_url, api_url = f"http://127.0.0.1:{web_port}", f"http://127.0.0.1:{emulator_port}"
    secret, api_key = secrets.token_hex(16), "demo-" + secrets.token_hex(8)
    env = {
        **os.environ,
        "PIPELINE_VAR_DIR": str(workdir),
        "DATABASE_URL": f"sqlite:///{workdir / 'pipeline.db'}",
        "ITTYBIT_WEBHOOK_SECRET": secret,
        "ITTYBIT_API_KEY": api_key,
        "ITTYBIT_API_URL": api_url,
        "PUBLIC_URL": web_url,
        "RELAY_INTERVAL": "1",
        "REDELIVER_AFTER": "5",
    }
    for name in ("CELERY_BROKER_URL", "REDIS_URL", "SMTP_URL"):
        env.pop(name, None)
    upgrade(env["DATABASE_URL"])
    engine = make_engine(env["DATABASE_URL"])
    started = time.monotonic()
    with running(workdir / "logs") as stack:
        for name, argv in processes(web_port, emulator_port, api_key, secret).items():
            stack.start(name, argv, env)
        steps: list[Step] = []
        with Live(render(steps, started), console=console, refresh_per_second=10) as live:
            wait_for(f"{web_url}/healthz", 20, stack)
            wait_for(f"{api_url}/jobs/none", 20, stack)
            steps.append(Step("web, worker, relay and emulator up", lambda: True))
            ok_id = submit(env, "https://clippable-app.com/projects/edit-38271.mov")
            bad_id = submit(
                env,
                "https://clippable-app.com/projects/edit-38272.mov",
                {"emulator": {"fail": "input has no video stream", "delay": 1.0}},
            )
            steps += story(engine, ok_id, bad_id)
            dup = Step("a repeated delivery answered 'duplicate', nothing re-run", lambda: False)
            steps.append(dup)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and not all(s.done_at for s in steps):
                stack.check_alive()
                for step in steps:
                    if step.done_at is None and step is not dup and step.check():
                        step.done_at = time.monotonic()
                # Ittybit may deliver twice: once the first delivery landed, repeat it.
                if (
                    dup.done_at is None
                    and steps[2].done_at
                    and resend_first(engine, web_url, secret, ok_id)
                ):
                    dup.done_at = time.monotonic()
                live.update(render(steps, started))
                time.sleep(0.1)
            live.update(render(steps, started))
    console.print()
    console.print(summary(engine))
    finished = all(s.done_at for s in steps)
    verdict = "finished" if finished else "INCOMPLETE"
    elapsed = time.monotonic() - started
    console.print(f"demo {verdict} in {elapsed:.1f}s; logs in {workdir / 'logs'}")
    return finished


def processes(web_port: int, emulator_port: int, api_key: str, secret: str) -> dict[str, list[str]]:
    """The command line of each process the demo runs, as the Procfile would."""
    pipeline, port = str(BIN / "pipeline"), str(emulator_port)
    return {
        "emulator": [pipeline, "emulator", "--port", port, "--api-key", api_key, "--secret", secret,
                     "--delay", "0.5"],
        "web": [str(BIN / "gunicorn"), "-b", f"127.0.0.1:{web_port}", "-w", "2",
                "pipeline.web:create_app()"],
        "worker": [str(BIN / "celery"), "-A", "pipeline.worker", "worker", "-c", "2",
                   "--loglevel", "INFO", "--without-mingle", "--without-gossip"],
        "relay": [pipeline, "relay"],
    }  # fmt: skip


def submit(env: dict[str, str], input_url: str, options: dict[str, Any] | None = None) -> int:
    """What `pipeline submit` does, in-process so the display starts at once."""
    settings = Settings.from_env(env)
    sessions = make_sessionmaker(make_engine(settings.database_url))
    media_id, _job = submit_media(
        settings, sessions, input_url, kind="video", email="ada@clippable.app", options=options
    )
    return media_id


def story(engine: Engine, ok_id: int, bad_id: int) -> list[Step]:
    def media(media_id: int) -> Any:
        with engine.connect() as conn:
            return conn.execute(select(Media).where(Media.id == media_id)).one()

    def count(model: Any, *where: Any) -> int:
        with engine.connect() as conn:
            return int(
                conn.execute(select(func.count()).select_from(model).where(*where)).scalar_one()
            )

    return [
        Step(
            f"media {ok_id}: job submitted to Ittybit (emulator)",
            lambda: media(ok_id).task_id is not None,
        ),
        Step(
            f"media {ok_id}: webhook 'succeeded' → media completed with output",
            lambda: media(ok_id).status == "completed",
        ),
        Step(
            f"media {ok_id}: one thumbnail job created",
            lambda: media(ok_id).thumbnail_task_id is not None,
        ),
        Step(
            f"media {ok_id}: thumbnail webhook → thumbnail_url stored",
            lambda: media(ok_id).thumbnail_url is not None,
        ),
        Step(
            f"media {ok_id}: user notified once",
            lambda: count(Notification, Notification.media_id == ok_id) == 1,
        ),
        Step(
            f"media {bad_id}: webhook 'failed' → media failed with the error",
            lambda: media(bad_id).status == "failed",
        ),
        Step(
            "every listener run finished",
            lambda: (
                count(ListenerRun, ListenerRun.state.in_(("pending", "running", "retrying"))) == 0
                and count(WebhookEvent) >= 3
            ),
        ),
    ]


def resend_first(engine: Engine, web_url: str, secret: str, media_id: int) -> bool:
    """Send the stored body of the media's first delivery again, as Ittybit's retry would."""
    with engine.connect() as conn:
        task_id = conn.execute(select(Media.task_id).where(Media.id == media_id)).scalar()
        body = conn.execute(
            select(WebhookEvent.raw_body)
            .where(WebhookEvent.task_id == task_id)
            .order_by(WebhookEvent.id)
        ).scalar()
    if body is None:
        return False
    answer = requests.post(
        f"{web_url}/webhooks/ittybit",
        data=body,
        headers={"Ittybit-Signature": sign(body, secret)},
        timeout=5,
    )
    return answer.status_code == 200 and answer.json().get("status") == "duplicate"
