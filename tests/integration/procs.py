"""Real processes for the integration suite: redis-server, gunicorn, a Celery worker, the
Ittybit emulator and `pipeline` CLI calls, each with its own log file and stopped by pid."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import requests

BIN = Path(sys.executable).parent  # the venv running pytest holds gunicorn, celery, pipeline
T = TypeVar("T")

# Every process started and not yet stopped, so a failing test can print their logs.
LIVE: list[Proc] = []


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def executable(name: str) -> str:
    """The venv's copy of a console script, else the one on PATH (redis-server)."""
    candidate = BIN / name
    return str(candidate) if candidate.exists() else name


class Proc:
    """A subprocess in its own session (so its children stop with it), logging to a file."""

    def __init__(self, name: str, argv: Sequence[str], env: Mapping[str, str], logs: Path) -> None:
        self.name = name
        self.log_path = logs / f"{name}.log"
        with self.log_path.open("ab") as log:
            self.popen = subprocess.Popen(
                [executable(argv[0]), *argv[1:]],
                env=dict(env),
                cwd=logs,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.pid = self.popen.pid
        LIVE.append(self)

    @property
    def alive(self) -> bool:
        return self.popen.poll() is None

    def log(self, start: int = 0) -> str:
        """The log from byte offset `start`."""
        with self.log_path.open("rb") as log:
            log.seek(start)
            return log.read().decode("utf-8", "replace")

    def log_size(self) -> int:
        return self.log_path.stat().st_size if self.log_path.exists() else 0

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM to our child (a warm shutdown), SIGKILL after `grace` seconds, then
        SIGKILL to the process group we created for it, so no forked worker outlives it."""
        if self in LIVE:
            LIVE.remove(self)
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(grace)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)  # the group id is our child's pid

    def __repr__(self) -> str:
        return f"<Proc {self.name} pid={self.pid}>"


def wait_for(
    check: Callable[[], T | None], what: str, timeout: float = 30.0, proc: Proc | None = None
) -> T:
    """Poll `check` until it returns something truthy; fail naming `what` (and the log)."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if proc is not None and not proc.alive:
            raise RuntimeError(
                f"{proc.name} exited ({proc.popen.returncode}) before {what}:\n{proc.log()[-4000:]}"
            )
        if time.monotonic() > deadline:
            tail = f":\n{proc.log()[-4000:]}" if proc else ""
            raise TimeoutError(f"timed out after {timeout:g}s waiting for {what}{tail}")
        time.sleep(0.1)


def http_answers(url: str) -> Callable[[], tuple[int, str] | None]:
    """A check for wait_for: (status, body) once something answers at `url`, any status.

    Not the Response itself: a 4xx/5xx Response is falsy.
    """

    def check() -> tuple[int, str] | None:
        try:
            response = requests.get(url, timeout=5)
        except requests.RequestException:
            return None
        return response.status_code, response.text

    return check


def start_redis(logs: Path) -> tuple[Proc, str]:
    """Our own redis-server on a free port, no persistence; returns it and its URL."""
    port = free_port()
    proc = Proc(
        "redis",
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", str(logs)],
        os.environ,
        logs,
    )  # fmt: skip
    wait_for(lambda: _listening(port), f"redis on port {port}", 10, proc)
    return proc, f"redis://127.0.0.1:{port}/0"


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def start_gunicorn(env: Mapping[str, str], logs: Path, port: int, name: str = "web") -> Proc:
    """`gunicorn 'pipeline.web:create_app()'` with 2 sync workers (wait for /healthz)."""
    return Proc(
        name,
        ["gunicorn", "--bind", f"127.0.0.1:{port}", "--workers", "2", "--timeout", "30",
         "--graceful-timeout", "5", "--no-control-socket", "pipeline.web:create_app()"],
        env,
        logs,
    )  # fmt: skip


def start_worker(env: Mapping[str, str], logs: Path, name: str = "worker") -> Proc:
    """`celery -A pipeline.worker worker`, prefork with 2 children."""
    return Proc(
        name,
        ["celery", "-A", "pipeline.worker", "worker", "--pool", "prefork", "-c", "2",
         "--loglevel", "INFO", "--without-mingle", "--without-gossip", "-n", f"{name}@%h"],
        env,
        logs,
    )  # fmt: skip


def start_emulator(env: Mapping[str, str], logs: Path, port: int, **options: Any) -> Proc:
    """`pipeline emulator`, Ittybit's API on loopback, delivering webhooks to job URLs."""
    argv = ["pipeline", "emulator", "--port", str(port)]
    for key, value in options.items():
        argv += [f"--{key.replace('_', '-')}", str(value)]
    return Proc("emulator", argv, env, logs)


def worker_ready(proc: Proc) -> Callable[[], bool]:
    return lambda: " ready." in proc.log()


def run_cli(
    args: Sequence[str], env: Mapping[str, str], cwd: Path, timeout: float = 60.0
) -> subprocess.CompletedProcess[str]:
    """Run `pipeline ARGS...` to completion and return what it printed."""
    return subprocess.run(
        [executable("pipeline"), *args],
        env=dict(env),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
