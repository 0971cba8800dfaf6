"""Load generators: wrk with a script cycling through pre-signed bodies, or, without wrk,
an asyncio client. Both open a new connection per request, as gunicorn's sync workers do."""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.payloads import Delivery

WRK_SCRIPT = Path(__file__).resolve().parent / "wrk_bodies.lua"
WRK_THREADS = 1  # one core for the generator, the other for the server; see the ceiling
INSTALL_WRK = "install wrk for the load generator: apt-get install -y wrk (Debian/Ubuntu)"


@dataclass
class LoadResult:
    """One run of a generator against one server at one concurrency."""

    generator: str
    concurrency: int
    seconds: float
    requests: int
    non_2xx: int = 0
    errors: int = 0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    max_ms: float = 0.0
    wrapped: int = 0  # times the bodies ran out and were sent again
    resent: int = 0  # answers of 5xx (or no answer) sent again, as Ittybit would (send_all)
    sent_at: dict[str, float] = field(default_factory=dict, repr=False)  # task id → send time

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def summary(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("sent_at")
        return {**data, "rps": round(self.rps, 1)}


def wrk_available() -> bool:
    return shutil.which("wrk") is not None


def generator_name(use_wrk: bool) -> str:
    if not use_wrk:
        return "asyncio client (python, 1 process)"
    version = subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout
    found = re.search(r"wrk (\S+)", version)
    return f"wrk {found.group(1) if found else '?'} ({WRK_THREADS} thread)"


def run(
    url: str, batch: list[Delivery], bodies: Path, concurrency: int, seconds: float, use_wrk: bool
) -> LoadResult:
    """Load `url` for `seconds` at `concurrency`, each request the next delivery of `batch`."""
    if use_wrk:
        return run_wrk(url, bodies, concurrency, seconds)
    return asyncio.run(_drive(url, batch, concurrency, seconds=seconds))


def send_all(
    url: str, batch: list[Delivery], concurrency: int, until: float = float("inf")
) -> LoadResult:
    """Send each delivery of `batch` in order, noting when; stop at `until` (monotonic). A
    delivery answered 5xx (or not at all) is sent again after RESEND_AFTER seconds, up to
    RESEND_TIMES times, as Ittybit retries it: a burst's every event then gets stored."""
    return asyncio.run(_drive(url, batch, concurrency, seconds=None, until=until, resend=True))


def run_wrk(url: str, bodies: Path, concurrency: int, seconds: float) -> LoadResult:
    argv = [
        "wrk",
        "-t",
        str(WRK_THREADS),
        "-c",
        str(concurrency),
        "-d",
        f"{max(1, round(seconds))}s",
        "--latency",
        "--timeout",
        "10s",
        "-s",
        str(WRK_SCRIPT),
        url,
        "--",
        str(bodies),
        str(WRK_THREADS),
    ]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60)
    if out.returncode != 0:
        raise RuntimeError(f"wrk failed ({out.returncode}): {out.stderr or out.stdout}")
    return parse_wrk(out.stdout, concurrency)


def parse_wrk(text: str, concurrency: int) -> LoadResult:
    """The numbers from wrk's --latency report (and our script's `wrapped` line)."""
    done = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m)", text)
    if done is None:
        raise RuntimeError(f"unexpected wrk output:\n{text}")
    errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text
    )
    return LoadResult(
        generator="wrk",
        concurrency=concurrency,
        seconds=_seconds(float(done.group(2)), done.group(3)),
        requests=int(done.group(1)),
        non_2xx=int(_find(r"Non-2xx or 3xx responses: (\d+)", text) or 0),
        # A read error is the server closing after its answer: normal for sync workers.
        errors=sum(int(errors.group(i)) for i in (1, 3, 4)) if errors else 0,
        p50_ms=_latency_ms(text, "50"),
        p99_ms=_latency_ms(text, "99"),
        max_ms=_max_latency_ms(text),
        wrapped=int(_find(r"wrapped (\d+)", text) or 0),
    )


def _find(pattern: str, text: str) -> str | None:
    found = re.search(pattern, text)
    return found.group(1) if found else None


def _latency_ms(text: str, percent: str) -> float:
    found = re.search(rf"^\s+{percent}%\s+([\d.]+)(us|ms|s)\s*$", text, re.MULTILINE)
    return round(_seconds(float(found.group(1)), found.group(2)) * 1000, 2) if found else 0.0


def _max_latency_ms(text: str) -> float:
    """The slowest request: the third figure of wrk's `Latency avg stdev max` line."""
    found = re.search(r"^\s+Latency\s+\S+\s+\S+\s+([\d.]+)(us|ms|s)\s", text, re.MULTILINE)
    return round(_seconds(float(found.group(1)), found.group(2)) * 1000, 2) if found else 0.0


def _seconds(value: float, unit: str) -> float:
    return value * {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}[unit]


# --- the asyncio client --------------------------------------------------------------------


RESEND_TIMES, RESEND_AFTER = 5, 0.5


async def _drive(
    url: str,
    batch: list[Delivery],
    concurrency: int,
    seconds: float | None,
    until: float = float("inf"),
    resend: bool = False,
) -> LoadResult:
    """`concurrency` loops, each sending the next delivery until time (or the batch) runs out."""
    host, port, path = _split(url)
    result = LoadResult("asyncio client", concurrency, 0.0, 0)
    latencies: list[float] = []
    cursor = iter(range(1 << 62)) if seconds is not None else iter(range(len(batch)))
    started = time.monotonic()
    deadline = started + seconds if seconds is not None else until

    async def loop() -> None:
        for n in cursor:
            if time.monotonic() >= deadline:
                return
            delivery = batch[n % len(batch)]
            result.wrapped = max(result.wrapped, n // len(batch))
            result.sent_at.setdefault(delivery.task_id, time.time())
            for attempt in range(1 + (RESEND_TIMES if resend else 0)):
                if attempt:
                    result.resent += 1
                    await asyncio.sleep(RESEND_AFTER)
                begun = time.monotonic()
                try:
                    status = await _post(host, port, path, delivery)
                except OSError:
                    result.errors += 1
                    continue
                latencies.append(time.monotonic() - begun)
                result.non_2xx += not 200 <= status < 300
                if status < 500:
                    break

    await asyncio.gather(*(loop() for _ in range(concurrency)))
    result.seconds = time.monotonic() - started
    result.requests = len(latencies)
    latencies.sort()
    if latencies:
        result.p50_ms = round(latencies[len(latencies) // 2] * 1000, 2)
        result.p99_ms = round(latencies[int(len(latencies) * 0.99)] * 1000, 2)
        result.max_ms = round(latencies[-1] * 1000, 2)
    return result


def _split(url: str) -> tuple[str, int, str]:
    found = re.match(r"http://([^:/]+):(\d+)(/.*)", url)
    if found is None:
        raise ValueError(f"expected http://host:port/path, got {url!r}")
    return found.group(1), int(found.group(2)), found.group(3)


async def _post(host: str, port: int, path: str, delivery: Delivery) -> int:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n"
            f"Content-Type: application/json\r\nIttybit-Signature: {delivery.signature}\r\n"
            f"Content-Length: {len(delivery.body)}\r\n\r\n"
        )
        writer.write(head.encode() + delivery.body)
        await writer.drain()
        answer = await reader.read()  # the server closes after answering
    finally:
        writer.close()
    return int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/") else 0
