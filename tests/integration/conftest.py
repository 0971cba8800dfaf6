"""Fixtures for the integration suite: whole stacks of real processes, started once per
session and backend (tests use their own task ids, so they share a stack safely)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from .procs import LIVE
from .stack import BACKENDS, REPO, Stack, start_stack

LOG_TAIL = 6000
_offsets = pytest.StashKey[dict[str, int]]()


@pytest.fixture(scope="session", params=BACKENDS)
def stack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    """The pipeline on SQLite and on PostgreSQL: Redis, emulator, gunicorn, Celery worker."""
    running = start_stack(request.param, tmp_path_factory.mktemp(f"stack-{request.param}"))
    yield running
    running.stop()


@pytest.fixture(scope="session")
def probe_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A SQLite stack whose PYTHONPATH adds `<tmp>/listeners/echo_probe.py`."""
    root = tmp_path_factory.mktemp("probe")
    (root / "listeners").mkdir()
    (root / "listeners" / "echo_probe.py").write_text(ECHO_PROBE)
    # The project root is on the path too: with an editable install, a bare `listeners/`
    # directory earlier on sys.path would otherwise shadow the project's own package.
    running = start_stack("sqlite", root / "stack", pythonpath=f"{root}:{REPO}")
    yield running
    running.stop()


ECHO_PROBE = '''
"""A listener added by dropping a module into a `listeners/` directory on PYTHONPATH."""

from pathlib import Path

from pipeline.listener import Listener, RetryPolicy

EFFECTS = Path(__file__).resolve().parent.parent / "echo_probe.effects"


class EchoProbe(Listener):
    retry = RetryPolicy(max_retries=1, backoff_base=1.0, backoff_cap=1.0)

    def wants(self, event):
        """every succeeded delivery"""
        return event.succeeded

    def handle(self, event, ctx):
        with EFFECTS.open("a") as effects:
            effects.write(f"{event.task_id} {ctx.run_id}\\n")
        return {"echoed": event.task_id}
'''


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]) -> Iterator[None]:
    """On a failure, attach what each live process logged while the test ran."""
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if call.when == "setup":
        item.stash[_offsets] = {str(p.log_path): p.log_size() for p in LIVE}
        return
    if call.when == "call" and report.failed:
        started = item.stash.get(_offsets, {})
        for proc in list(LIVE):
            text = proc.log(started.get(str(proc.log_path), 0))
            if text.strip():
                report.sections.append((f"{proc.name} log ({proc.log_path})", text[-LOG_TAIL:]))
