"""The test side of the probe listener: deliveries that steer it, and what it recorded
(each start, with the pid that ran it, and each effect committed)."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from integration.helpers import delivery
from sqlalchemy import Engine, func, select

from pipeline.dev.procs import wait_for

from .probe_listener import EFFECTS

HERE = Path(__file__).resolve().parent


def install(root: Path) -> None:
    """Put the probe (as `listeners/probe.py`) and `crashing_web.py` under `root`, and
    `root` is then what goes on the stack's PYTHONPATH."""
    (root / "listeners").mkdir(parents=True, exist_ok=True)
    shutil.copy(HERE / "probe_listener.py", root / "listeners" / "probe.py")
    shutil.copy(HERE / "crashing_web.py", root / "crashing_web.py")
    (root / "probe.fixed").mkdir(exist_ok=True)


@dataclass(frozen=True)
class Start:
    task_id: str
    run_id: int
    attempt: int
    pid: int


class Probe:
    """What the probe listener of one stack did; `root` is where `install` put it."""

    def __init__(self, root: Path, engine: Engine) -> None:
        self.root = root
        self.engine = engine

    def create_table(self) -> None:
        EFFECTS.metadata.create_all(self.engine)

    @staticmethod
    def delivery(
        task_id: str,
        *,
        status: str = "succeeded",
        shape: str = "B",
        sleep: float = 0,
        sleep_attempts: int = 1,
        crash_attempts: int = 0,
        fail: str | None = None,
        permanent: bool = False,
        metadata: dict[str, Any] | None = None,
    ) -> bytes:
        """A delivery the probe wants: it kills its own process on its first
        `crash_attempts` attempts, sleeps `sleep` s on its first `sleep_attempts`, and
        raises `fail` (a PermanentError if `permanent`) until `fix`ed."""
        controls: dict[str, Any] = {
            "sleep": sleep,
            "sleep_attempts": sleep_attempts,
            "crash_attempts": crash_attempts,
        }
        if fail is not None:
            controls.update({"raise": fail, "permanent": permanent})
        meta = {**(metadata or {}), "probe": controls}
        return delivery(shape, task_id, status=status, metadata=meta)

    def starts(self, task_id: str | None = None) -> list[Start]:
        """Every start of the probe (of `task_id`'s runs), in order."""
        path = self.root / "probe.starts"
        lines = path.read_text().splitlines() if path.exists() else []
        found = [Start(**json.loads(line)) for line in lines if line.strip()]
        return [s for s in found if task_id is None or s.task_id == task_id]

    def wait_started(self, task_id: str, attempt: int = 1, timeout: float = 30) -> Start:
        """The start of attempt `attempt` of the probe's run for `task_id`, once it began."""

        def started() -> Start | None:
            return next((s for s in self.starts(task_id) if s.attempt == attempt), None)

        return wait_for(
            started, timeout=timeout, what=f"the probe starts {task_id} attempt {attempt}"
        )

    def effects(self, task_id: str) -> list[tuple[int, int]]:
        """The effects committed for `task_id`, as (run_id, attempt)."""
        query = select(EFFECTS.c.run_id, EFFECTS.c.attempt).where(EFFECTS.c.task_id == task_id)
        with self.engine.connect() as conn:
            return [(row.run_id, row.attempt) for row in conn.execute(query)]

    def effect_counts(self) -> Counter[str]:
        """How many effects were committed, by task id (for many tasks at once)."""
        query = select(EFFECTS.c.task_id, func.count()).group_by(EFFECTS.c.task_id)
        with self.engine.connect() as conn:
            return Counter({task_id: n for task_id, n in conn.execute(query)})

    def fix(self, task_id: str) -> None:
        """From now on the probe no longer raises for `task_id` (a deployed fix)."""
        (self.root / "probe.fixed" / task_id).touch()
