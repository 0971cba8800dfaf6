"""The process harness the demo, the tests and bench/ share: start a process in its own
session with its own log file, wait for it, stop it (and whatever it forked) by pid.
servers.py starts our own Redis and WSGI apps with it; procfile.py the Procfile's processes."""

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
from typing import TypeVar

import requests

T = TypeVar("T")
BIN = Path(sys.executable).parent  # the venv's gunicorn, celery and pipeline
REPO = Path(__file__).resolve().parents[2]  # a checkout: where the Procfile lies

# Every process started and not yet stopped, so a failing test can show their logs.
LIVE: list[Proc] = []

# Debian's Chromium, as the browser tests and bench/ start it (Playwright's Python
# package drives it; its own browser download is not used).
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def listening(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def executable(name: str) -> str:
    """The venv's copy of a console script, else the one on PATH (redis-server)."""
    candidate = BIN / name
    return str(candidate) if candidate.exists() else name


def children(pid: int) -> list[int]:
    """Direct children of `pid`, read from /proc (Linux)."""
    found: list[int] = []
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError):
                found += [int(c) for c in (task / "children").read_text().split()]
    return sorted(set(found))


def descendants(pid: int) -> list[int]:
    """Every process below `pid`: children, theirs, and so on."""
    found, todo = [], [pid]
    while todo:
        kids = children(todo.pop())
        found += kids
        todo += kids
    return found


class Proc:
    """A subprocess in its own session (so its children stop with it), logging to
    `<logs>/<name>.log` (a restart appends to the same log)."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        env: Mapping[str, str],
        logs: Path,
        cwd: Path | None = None,
    ) -> None:
        self.name, self.argv, self.env, self.logs = name, list(argv), dict(env), logs
        self.cwd = cwd or logs
        self.log_path = logs / f"{name}.log"
        self.log_start = self.log_size()
        with self.log_path.open("ab") as log:
            self.popen = subprocess.Popen(
                [executable(argv[0]), *argv[1:]],
                env=self.env,
                cwd=self.cwd,
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

    def children(self) -> list[int]:
        """Pids of the processes our child forked (a prefork pool, gunicorn's workers)."""
        return children(self.pid)

    def tree(self) -> list[int]:
        return [self.pid, *descendants(self.pid)]

    def signal_group(self, sig: signal.Signals) -> None:
        """Send `sig` to every process of the session we created (SIGSTOP freezes them all)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, sig)

    def again(self) -> Proc:
        """A new process like this one (same command, environment and log), after a stop."""
        return Proc(self.name, self.argv, self.env, self.logs, self.cwd)

    def kill(self) -> None:
        """SIGKILL the whole group at once: a crash, no warm shutdown."""
        self.signal_group(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(5)
        self.stop()

    def stop(self, grace: float = 10.0, sig: signal.Signals = signal.SIGTERM) -> None:
        """`sig` to our child (SIGTERM: a warm shutdown), SIGKILL after `grace` seconds, then
        SIGKILL to the process group we created for it, so no forked worker outlives it."""
        if self in LIVE:
            LIVE.remove(self)
        if self.popen.poll() is None:
            self.signal_group(signal.SIGCONT)  # a frozen process cannot shut down
            self.popen.send_signal(sig)
            try:
                self.popen.wait(grace)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)  # the group id is our child's pid

    def __repr__(self) -> str:
        return f"<Proc {self.name} pid={self.pid}>"


def stop_all(procs: Sequence[Proc], grace: float = 5.0) -> None:
    """SIGTERM to each (the last started first), then SIGKILL to the group of any still
    there after `grace` seconds, also when interrupted meanwhile (a second Ctrl-C)."""
    for proc in reversed(procs):
        if proc.alive:
            proc.popen.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace
    try:
        for proc in reversed(procs):
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.popen.wait(max(0.1, deadline - time.monotonic()))
    finally:  # nothing may outlive whoever started it
        for proc in procs:
            proc.kill()


def wait_for(
    check: Callable[[], T | None],
    *,
    what: str,
    timeout: float = 30.0,
    proc: Proc | None = None,
    interval: float = 0.05,
) -> T:
    """Poll `check` until it returns something truthy, and return that; TimeoutError
    naming `what` (with `proc`'s log tail), or RuntimeError at once if `proc` exits."""
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
            tail = f":\n{proc.log()[-4000:]}" if proc else f" (last: {value!r})"
            raise TimeoutError(f"timed out after {timeout:g}s waiting for {what}{tail}")
        time.sleep(interval)


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


def worker_ready(proc: Proc) -> Callable[[], bool]:
    """A check: this worker process logged ` ready.` (not an earlier one in the same log)."""
    return lambda: " ready." in proc.log(proc.log_start)
