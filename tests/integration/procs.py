"""What the integration and fault suites start beyond the shared harness
(pipeline/dev/procs.py): their own PostgreSQL, the Procfile's processes on loopback, the
emulator, and `pipeline` CLI calls."""

from __future__ import annotations

import contextlib
import ipaddress
import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from pipeline.dev.procfile import start_process, web_env
from pipeline.dev.procs import REPO, Proc, executable, free_port, wait_for


class PostgresServer:
    """Our own PostgreSQL (initdb, trust auth, no fsync) on a free port, run as the
    `postgres` user, for tests that stop or freeze the database; `close()` removes it.
    `network` (an address/prefix such as 10.250.3.1/24) adds an address it listens on
    and the clients it trusts there (tests with several hosts); `fsync` as a production
    server has it (bench/scale.py)."""

    def __init__(self, logs: Path, network: str | None = None, fsync: bool = False) -> None:
        self.logs = logs
        self.fsync = fsync
        self.listen = "127.0.0.1"
        self.port = free_port()
        self.home = Path(tempfile.mkdtemp(prefix="pipeline-pg-"))
        shutil.chown(self.home, "postgres")  # the server refuses to run as root
        initdb = subprocess.run(
            [
                *AS_POSTGRES,
                "initdb",
                "-D",
                str(self.home / "data"),
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
                "-E",
                "UTF8",
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if initdb.returncode != 0:
            shutil.rmtree(self.home, ignore_errors=True)
            raise RuntimeError(f"initdb failed:\n{initdb.stdout}{initdb.stderr}")
        if network is not None:
            interface = ipaddress.ip_interface(network)
            self.listen += f",{interface.ip}"
            with (self.home / "data" / "pg_hba.conf").open("a") as hba:
                hba.write(f"host all all {interface.network} trust\n")
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
            [
                *AS_POSTGRES,
                "postgres",
                "-D",
                str(self.home / "data"),
                "-p",
                str(self.port),
                "-c",
                f"listen_addresses={self.listen}",
                "-c",
                f"unix_socket_directories={self.home}",
                "-c",
                f"fsync={'on' if self.fsync else 'off'}",
            ],
            os.environ,
            self.logs,
        )
        wait_for(self._ready, what=f"postgres on port {self.port}", timeout=30, proc=self.proc)

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
            capture_output=True,
            check=False,
        )
        return done.returncode == 0


class RabbitMQServer:
    """Our own RabbitMQ node (its own name, port, data and config; no plugins) for tests
    that stop or freeze the broker; the machine's node is never touched."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.port = free_port()
        self.node = f"pipeline-it-{self.port}@localhost"
        self.home = Path(tempfile.mkdtemp(prefix="pipeline-rabbit-"))
        (self.home / "enabled_plugins").write_text("[].\n")
        (self.home / "rabbitmq.conf").write_text(
            f"listeners.tcp.default = 127.0.0.1:{self.port}\nloopback_users = none\n"
        )
        for sub in ("mnesia", "log"):
            (self.home / sub).mkdir()
        for path in (self.home, *self.home.iterdir()):
            shutil.chown(path, "rabbitmq", "rabbitmq")  # the server drops to this user
        self.proc: Proc | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}//"

    def start(self) -> None:
        """Start (or restart, same port and data) and wait until it accepts connections."""
        env = {
            **os.environ,
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(free_port()),
            "RABBITMQ_CONFIG_FILE": str(self.home / "rabbitmq.conf"),
            "RABBITMQ_MNESIA_BASE": str(self.home / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.home / "log"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.home / "enabled_plugins"),
            "RABBITMQ_PID_FILE": str(self.home / "pid"),
        }
        self.proc = Proc("rabbitmq", ["rabbitmq-server"], env, self.logs, cwd=self.home)
        wait_for(self._ready, what=f"rabbitmq on port {self.port}", timeout=60, proc=self.proc)

    def stop(self) -> None:
        """Stop the node: its Erlang VM runs in a session of its own (the server script
        drops to the rabbitmq user with su), so it is signalled through its pid file."""
        if self.proc is None:
            return
        group = self._vm_group()
        if group is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(group, signal.SIGCONT)
                os.killpg(group, signal.SIGKILL)  # a crash: what a broker failure is
        self.proc.stop(grace=5)
        self.proc = None

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.home, ignore_errors=True)

    @contextlib.contextmanager
    def frozen(self) -> Iterator[None]:
        """The broker hung: the kernel accepts connections, nothing answers."""
        group = self._vm_group()
        assert group is not None, "the node is not running"
        os.killpg(group, signal.SIGSTOP)
        try:
            yield
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(group, signal.SIGCONT)

    def _vm_group(self) -> int | None:
        try:
            return os.getpgid(int((self.home / "pid").read_text().strip()))
        except (OSError, ValueError):
            return None

    def _ready(self) -> bool:
        done = subprocess.run(
            ["rabbitmqctl", "-n", self.node, "-q", "await_startup", "--timeout", "1"],
            capture_output=True,
            check=False,
        )
        return done.returncode == 0


AS_POSTGRES = ("setpriv", "--reuid", "postgres", "--regid", "postgres", "--init-groups")


def start_gunicorn(
    env: Mapping[str, str],
    logs: Path,
    port: int,
    name: str = "web",
    workers: int = 2,
    app: str = "",
) -> Proc:
    """The Procfile's `web` on loopback `port` with `workers` sync workers (wait for
    /healthz); `app` replaces its WSGI app (a test's variant of ours)."""
    env = {**env, **web_env(port, workers)}
    if not app:
        return start_process("web", env, logs, label=name)
    argv = ["gunicorn", "-c", "gunicorn.conf.py", app]
    return Proc(name, argv, env, logs, cwd=REPO)


def start_worker(
    env: Mapping[str, str],
    logs: Path,
    name: str = "worker",
    concurrency: int = 2,
    *more: str,
) -> Proc:
    """The Procfile's `worker`, prefork with `concurrency` children, named after `name`
    (`more`: further options for it, e.g. another pool)."""
    env = {**env, "WORKER_CONCURRENCY": str(concurrency)}
    return start_process("worker", env, logs, "-n", f"{name}@%h", *more, label=name)


def start_relay(env: Mapping[str, str], logs: Path, interval: float, name: str = "relay") -> Proc:
    """The Procfile's `relay`, a pass every `interval` seconds."""
    return start_process("relay", {**env, "RELAY_INTERVAL": f"{interval:g}"}, logs, label=name)


def start_emulator(env: Mapping[str, str], logs: Path, port: int, **options: Any) -> Proc:
    """`pipeline emulator`, Ittybit's API on loopback, delivering webhooks to job URLs."""
    argv = ["pipeline", "emulator", "--port", str(port)]
    for key, value in options.items():
        argv += [f"--{key.replace('_', '-')}", str(value)]
    return Proc("emulator", argv, env, logs)


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
