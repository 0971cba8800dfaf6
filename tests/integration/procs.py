"""Real processes for the integration suite: redis-server, PostgreSQL, gunicorn, a Celery
worker, the relay, the Ittybit emulator and `pipeline` CLI calls, each with its own log file
and stopped by pid."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import requests

BIN = Path(sys.executable).parent  # the venv running pytest holds gunicorn, celery, pipeline
T = TypeVar("T")

# Every process started and not yet stopped, so a failing test can print their logs.
LIVE: list[Proc] = []


def children(pid: int) -> list[int]:
    """Direct children of `pid`, read from /proc (Linux)."""
    found: list[int] = []
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError):
                found += [int(c) for c in (task / "children").read_text().split()]
    return sorted(set(found))


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
        self.argv = list(argv)
        self.env = dict(env)
        self.logs = logs
        self.log_path = logs / f"{name}.log"
        self.log_start = self.log_size()  # a restart appends to the same log
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

    def children(self) -> list[int]:
        """Pids of the processes our child forked (a prefork pool, gunicorn's workers)."""
        return children(self.pid)

    def signal_group(self, sig: signal.Signals) -> None:
        """Send `sig` to every process of the session we created (SIGSTOP freezes them all)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, sig)

    def again(self) -> Proc:
        """A new process like this one (same command, environment and log), after a stop."""
        return Proc(self.name, self.argv, self.env, self.logs)

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


def start_redis(logs: Path, port: int | None = None) -> tuple[Proc, str]:
    """Our own redis-server on `port` (default: a free one), no persistence, so a restart
    comes back empty; returns it and its URL."""
    port = port or free_port()
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


class PostgresServer:
    """Our own PostgreSQL (initdb, trust auth, no fsync) on a free port, run as the
    `postgres` user, for tests that stop or freeze the database; `close()` removes it."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.port = free_port()
        self.home = Path(tempfile.mkdtemp(prefix="pipeline-pg-"))
        shutil.chown(self.home, "postgres")  # the server refuses to run as root
        initdb = subprocess.run(
            [*AS_POSTGRES, "initdb", "-D", str(self.home / "data"), "-A", "trust",
             "-U", "postgres", "--no-sync", "-E", "UTF8"],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        if initdb.returncode != 0:
            shutil.rmtree(self.home, ignore_errors=True)
            raise RuntimeError(f"initdb failed:\n{initdb.stdout}{initdb.stderr}")
        self.proc: Proc | None = None
        self.start()

    @property
    def url(self) -> str:
        """The server's SQLAlchemy URL, without a database name."""
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}"

    def start(self) -> None:
        """Start (or restart, same port and data) and wait until it accepts queries."""
        self.proc = Proc(
            "postgres",
            [*AS_POSTGRES, "postgres", "-D", str(self.home / "data"), "-p", str(self.port),
             "-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={self.home}",
             "-c", "fsync=off"],
            os.environ,
            self.logs,
        )  # fmt: skip
        wait_for(self._ready, f"postgres on port {self.port}", 30, self.proc)

    def stop(self) -> None:
        """A fast shutdown (SIGINT): clients are disconnected, new ones refused."""
        if self.proc is not None:
            self.proc.stop(sig=signal.SIGINT)
            self.proc = None

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.home, ignore_errors=True)

    def signal_all(self, sig: signal.Signals) -> None:
        """`sig` to the postmaster and each backend (every backend leads its own group)."""
        assert self.proc is not None
        for pid in [self.proc.pid, *self.proc.children()]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)

    @contextlib.contextmanager
    def frozen(self) -> Iterator[None]:
        """The database hung: connections open (the kernel accepts them), nothing answers."""
        self.signal_all(signal.SIGSTOP)
        try:
            yield
        finally:
            self.signal_all(signal.SIGCONT)

    def _ready(self) -> bool:
        done = subprocess.run(
            ["pg_isready", "-h", "127.0.0.1", "-p", str(self.port), "-t", "1"],
            capture_output=True, check=False,
        )  # fmt: skip
        return done.returncode == 0


AS_POSTGRES = ("setpriv", "--reuid", "postgres", "--regid", "postgres", "--init-groups")


WEB_APP = "pipeline.web:create_app()"


def start_gunicorn(
    env: Mapping[str, str],
    logs: Path,
    port: int,
    name: str = "web",
    app: str = WEB_APP,
    workers: int = 2,
) -> Proc:
    """`gunicorn 'pipeline.web:create_app()'` (or `app`) with 2 sync workers (wait for
    /healthz)."""
    return Proc(
        name,
        ["gunicorn", "--bind", f"127.0.0.1:{port}", "--workers", str(workers), "--timeout", "30",
         "--graceful-timeout", "5", "--no-control-socket", app],
        env,
        logs,
    )  # fmt: skip


def start_worker(
    env: Mapping[str, str], logs: Path, name: str = "worker", concurrency: int = 2
) -> Proc:
    """`celery -A pipeline.worker worker`, prefork with `concurrency` children."""
    return Proc(
        name,
        ["celery", "-A", "pipeline.worker", "worker", "--pool", "prefork", "-c", str(concurrency),
         "--loglevel", "INFO", "--without-mingle", "--without-gossip", "-n", f"{name}@%h"],
        env,
        logs,
    )  # fmt: skip


def start_relay(env: Mapping[str, str], logs: Path, interval: float, name: str = "relay") -> Proc:
    """`pipeline relay --interval SECONDS`: the outbox's periodic re-publisher."""
    return Proc(name, ["pipeline", "relay", "--interval", f"{interval:g}"], env, logs)


def start_emulator(env: Mapping[str, str], logs: Path, port: int, **options: Any) -> Proc:
    """`pipeline emulator`, Ittybit's API on loopback, delivering webhooks to job URLs."""
    argv = ["pipeline", "emulator", "--port", str(port)]
    for key, value in options.items():
        argv += [f"--{key.replace('_', '-')}", str(value)]
    return Proc("emulator", argv, env, logs)


def worker_ready(proc: Proc) -> Callable[[], bool]:
    """A check: this worker process logged ` ready.` (not an earlier one in the same log)."""
    return lambda: " ready." in proc.log(proc.log_start)


def log_offsets() -> dict[str, int]:
    """Where each live process's log ends now (to show only what a test made them log)."""
    return {str(p.log_path): p.log_size() for p in LIVE}


def logs_since(offsets: Mapping[str, int], tail: int) -> list[tuple[str, str]]:
    """(title, text) for each live process's log past `offsets`, last `tail` characters."""
    sections = []
    for proc in list(LIVE):
        text = proc.log(offsets.get(str(proc.log_path), 0))
        if text.strip():
            sections.append((f"{proc.name} log ({proc.log_path})", text[-tail:]))
    return sections


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
