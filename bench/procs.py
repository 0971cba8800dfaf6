"""The processes a benchmark starts: each in its own session, logging to a file, stopped by
pid; their peak memory and the CPU time they use, read from /proc."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def free_port() -> int:
    """A loopback TCP port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Proc:
    """A subprocess in a new session (its children stop with it), output to `<logs>/<name>.log`."""

    def __init__(self, name: str, argv: Sequence[str], env: Mapping[str, str], logs: Path) -> None:
        self.name = name
        self.log_path = logs / f"{name}.log"
        program = BIN / argv[0]
        with self.log_path.open("ab") as log:
            self.popen = subprocess.Popen(
                [str(program) if program.exists() else argv[0], *argv[1:]],
                env={**os.environ, "PYTHONPATH": str(REPO), **env},
                cwd=REPO,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.pid = self.popen.pid

    @property
    def alive(self) -> bool:
        return self.popen.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def peak_rss_mb(self) -> dict[str, float]:
        """Peak resident memory (VmHWM) of this process and of its children, in MiB."""
        tree = [self.pid, *_descendants(self.pid)]
        peaks = [_vm_hwm_kb(pid) for pid in tree]
        known = [kb for kb in peaks if kb is not None]
        return {
            "processes": len(known),
            "parent_mb": round((peaks[0] or 0) / 1024, 1),
            "largest_mb": round(max(known, default=0) / 1024, 1),
            "total_mb": round(sum(known) / 1024, 1),
        }

    def children(self) -> list[int]:
        return _descendants(self.pid)

    def tree(self) -> list[int]:
        return [self.pid, *_descendants(self.pid)]

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM, SIGKILL after `grace`, then SIGKILL to the session so no child outlives it."""
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(grace)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)  # the group id is our child's pid


def _descendants(pid: int) -> list[int]:
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        parents.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        kids = parents.get(todo.pop(), [])
        found.extend(kids)
        todo.extend(kids)
    return found


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


def wait_for(check: Callable[[], object], what: str, proc: Proc, timeout: float = 30.0) -> None:
    """Poll `check` until truthy; raise with the process's log tail if it dies or times out."""
    deadline = time.monotonic() + timeout
    while not check():
        if not proc.alive or time.monotonic() > deadline:
            state = "exited" if not proc.alive else f"timed out after {timeout:g}s"
            raise RuntimeError(f"{proc.name} {state} waiting for {what}:\n{proc.log()[-3000:]}")
        time.sleep(0.05)


def answers(url: str) -> Callable[[], bool]:
    """A check: something answers HTTP at `url` (any status)."""

    def check() -> bool:
        try:
            requests.get(url, timeout=2)
        except requests.RequestException:
            return False
        return True

    return check


def start_redis(logs: Path) -> tuple[Proc, str]:
    """Our own redis-server on a free port, nothing persisted; returns it and its URL."""
    port = free_port()
    proc = Proc(
        "redis",
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", str(logs)],
        {},
        logs,
    )  # fmt: skip
    wait_for(lambda: _listening(port), f"redis on port {port}", proc, 10)
    return proc, f"redis://127.0.0.1:{port}"


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def start_gunicorn(
    app: str, env: Mapping[str, str], logs: Path, name: str, workers: int
) -> tuple[Proc, int]:
    """`gunicorn APP` with `workers` sync workers on a free port (the Procfile's settings,
    minus the access log), once every worker answers."""
    port = free_port()
    proc = Proc(
        name,
        ["gunicorn", "--bind", f"127.0.0.1:{port}", "--workers", str(workers),
         "--worker-class", "sync", "--timeout", "30", "--graceful-timeout", "5",
         "--backlog", "2048", "--no-control-socket", app],
        env,
        logs,
    )  # fmt: skip
    wait_for(answers(f"http://127.0.0.1:{port}/healthz"), f"{name} to answer", proc, 30)
    # Every worker booted, so the first measured requests do not pay for an import.
    wait_for(lambda: len(proc.children()) >= workers, "gunicorn workers", proc, 30)
    return proc, port


def start_celery(
    app: str, env: Mapping[str, str], logs: Path, name: str, pool: str, concurrency: int
) -> Proc:
    """`celery -A APP worker --pool POOL --concurrency N`, once it is ready."""
    proc = Proc(
        name,
        ["celery", "-A", app, "worker", "--pool", pool, "--concurrency", str(concurrency),
         "--loglevel", "INFO", "--without-mingle", "--without-gossip", "-n", f"{name}@%h"],
        env,
        logs,
    )  # fmt: skip
    wait_for(lambda: " ready." in proc.log(), f"{name} ready", proc, 60)
    return proc


def start_emulator(env: Mapping[str, str], logs: Path, name: str) -> tuple[Proc, int]:
    """`pipeline emulator` on a free port: Ittybit's API, delivering to each job's webhook_url."""
    port = free_port()
    proc = Proc(name, ["pipeline", "emulator", "--port", str(port)], env, logs)
    wait_for(answers(f"http://127.0.0.1:{port}/_emulator/jobs"), "the emulator", proc, 30)
    return proc, port


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
