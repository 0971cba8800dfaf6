"""A listener for fault tests, copied into a `listeners/` directory on the stack's
PYTHONPATH as `probe.py`. It logs each start (with its pid, so a test can kill it), can be
told by the event's `metadata.probe` to sleep or raise, and writes its effect as one row in
the run's own transaction: an effect done twice is two rows."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Any

from sqlalchemy import Column, Integer, MetaData, String, Table, insert

from pipeline.errors import PermanentError
from pipeline.events import Event
from pipeline.listener import Context, Listener, RetryPolicy

ROOT = Path(__file__).resolve().parent.parent
STARTS = ROOT / "probe.starts"
FIXED = ROOT / "probe.fixed"  # holds a file per task id whose failure has been "fixed"
EFFECTS = Table(
    "probe_effects",
    MetaData(),
    Column("id", Integer, primary_key=True),
    Column("task_id", String(255), index=True),
    Column("run_id", Integer),
    Column("attempt", Integer),
)


class Probe(Listener):
    retry = RetryPolicy(max_retries=2, backoff_base=0.5, backoff_cap=1.0)

    def wants(self, event: Event) -> bool:
        """deliveries whose metadata carries a `probe` object"""
        return isinstance(event.metadata.get("probe"), dict)

    def handle(self, event: Event, ctx: Context) -> dict[str, Any]:
        controls: dict[str, Any] = event.metadata["probe"]
        start = {"task_id": event.task_id, "run_id": ctx.run_id, "attempt": ctx.attempt}
        with STARTS.open("a") as starts:
            starts.write(json.dumps({**start, "pid": os.getpid()}) + "\n")
        if ctx.attempt <= int(controls.get("crash_attempts", 0)):
            os.kill(os.getpid(), signal.SIGKILL)  # a segfault or the OOM killer, on this input
        pause = float(controls.get("sleep", 0))
        if pause and ctx.attempt <= int(controls.get("sleep_attempts", 1)):
            with ctx.outside_transaction():  # like a network call: hold no database lock
                time.sleep(pause)
        message = controls.get("raise")
        if message and not (FIXED / event.task_id).exists():
            raise (PermanentError if controls.get("permanent") else RuntimeError)(message)
        ctx.session.execute(insert(EFFECTS).values(**start))
        return {"effect": event.task_id, "attempt": ctx.attempt}
